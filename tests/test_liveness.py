"""Liveness and recovery against a real Redis: the protocol's pieces, one at a time.

The deadlines' arithmetic, the lease's state machine on a fake clock, the transport's one-trip
delivery, and the sweeps (``celery_ecs.recovery``) on sets of messages a "worker" took with the
app's own transport and left unacknowledged. Real workers dying and pausing are in
``tests/test_worker_reliability.py``.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.worker import state as worker_state
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Consumer, Queue
from kombu.utils.json import loads

from app.celery_app import app, settings
from celery_ecs.consumer import RestoreLostDeliveries
from celery_ecs.liveness import (
    EPOCH_KEY,
    REGISTRY_KEY,
    BoundedResolver,
    Deadlines,
    Lease,
    LeaseRefresher,
    LivenessStep,
    UnackedSet,
    WorkerKeys,
    pool_unacked,
    unacked_count,
)
from celery_ecs.recovery import Recovery, stamp, take_turn
from celery_ecs.settings import DEFAULT_LIVENESS_TIMEOUT
from celery_ecs.transport import FETCH, wake_key
from testkit.redis_server import RedisServer, free_port, start_redis
from tests.support import send_task
from tests.test_transport import fill_past_maxmemory

QUEUE = "default"
#: A visibility timeout no test here waits for.
LONG_VISIBILITY = 3600


# --- deadlines and the lease, on a fake clock ---------------------------------------------------


@given(st.floats(min_value=settings.liveness_timeout / 5, max_value=600))
def test_the_worker_stops_its_tasks_before_its_key_can_expire(timeout: float) -> None:
    deadlines = Deadlines(timeout)
    assert deadlines.tick < deadlines.lost_after < deadlines.kill_after
    # The kill lands at most a tick (sleep) and a refresh's timeout (a tick) after kill_after.
    assert deadlines.latest_kill < timeout


def test_a_crashed_workers_tasks_are_back_within_15_seconds_by_default() -> None:
    # Issue 21: the default lease expires and the next sweep finds it within 15 s of the death
    # (the restore itself adds milliseconds: bench.liveness_timeouts measures it).
    assert settings.liveness_timeout == DEFAULT_LIVENESS_TIMEOUT == 10
    deadlines = Deadlines(settings.liveness_timeout)
    assert deadlines.recovery_bound == pytest.approx(10 + 10 / 3)
    assert deadlines.recovery_bound < 15


@pytest.mark.parametrize(
    ("timeout", "sweep_interval"),
    [(3, 1.0), (6, 2.0), (8, 8 / 3), (10, 10 / 3), (15, 5.0), (16, 5.0), (60, 5.0)],
)
def test_the_sweep_interval_is_a_third_of_the_liveness_timeout_at_most_5_s(
    timeout: int, sweep_interval: float
) -> None:
    # As documented (docs/explanation/liveness.md): a gone worker's messages wait at most a third
    # of the lease past its expiry, and the visibility timeout's last resort at most 5 s.
    deadlines = Deadlines(timeout)
    assert deadlines.sweep_interval == pytest.approx(sweep_interval)
    assert deadlines.recovery_bound == pytest.approx(timeout + sweep_interval)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Refreshes:
    """What each refresh answers, and when it is asked."""

    def __init__(self, clock: FakeClock, answer: bool | None = True) -> None:
        self.clock = clock
        self.answer = answer
        self.calls: list[float] = []

    def __call__(self) -> bool | None:
        self.calls.append(self.clock.now)
        return self.answer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lease(clock: FakeClock, redis_client: redis.Redis) -> Lease:
    lease = Lease(WorkerKeys("default", "w/1"), Deadlines(15), clock=clock)
    lease.acquire(redis_client)
    return lease


def test_acquiring_sets_the_key_with_its_time_to_live_and_registers(
    lease: Lease, redis_client: redis.Redis
) -> None:
    assert 14_000 < redis_client.pttl(lease.keys.lease) <= 15_000
    assert redis_client.smembers(REGISTRY_KEY) == {lease.keys.member}


def tick(lease: Lease, refresh: Refreshes) -> bool:
    """One round of the worker's three parties, each a tick apart on the fake clock: the
    refresher, the event loop's check, the watchdog's (which returns whether it kills)."""
    lease.refresh(refresh)
    lease.check("event loop")
    return lease.must_kill()


def test_failed_refreshes_lose_the_liveness_at_half_the_timeout_and_kill_at_three_quarters(
    lease: Lease, clock: FakeClock
) -> None:
    failing = Refreshes(clock, answer=None)
    kills = []
    for _ in range(20):  # 20 x 1 s
        clock.now += 1
        kills.append(tick(lease, failing))
        if clock.now - 1000 < 7.5:
            assert lease.lost() is None
    assert lease.lost() is not None
    assert "no successful refresh" in str(lease.lost())
    assert kills.index(True) + 1 == 12  # the first tick at or past 11.25 s
    assert kills.count(True) == 1  # once per loss
    # Once lost (at 8 s), the key is left to expire: no more refreshes.
    assert max(failing.calls) == 1000 + 8


def test_a_refresh_that_succeeds_late_keeps_the_liveness(lease: Lease, clock: FakeClock) -> None:
    # A pause past half the timeout but short of it: the key is still there, so no one could
    # have taken anything, and nothing is cancelled.
    clock.now += 12
    assert tick(lease, Refreshes(clock, answer=True)) is False
    assert lease.lost() is None


def test_a_refresh_that_finds_the_key_gone_loses_the_liveness_and_kills_at_once(
    lease: Lease, clock: FakeClock
) -> None:
    clock.now += 1
    assert tick(lease, Refreshes(clock, answer=False)) is True
    assert "expired" in str(lease.lost())


def test_acquiring_again_resets_the_loss(
    lease: Lease, clock: FakeClock, redis_client: redis.Redis
) -> None:
    clock.now += 1
    tick(lease, Refreshes(clock, answer=False))
    lease.acquire(redis_client)
    assert lease.lost() is None
    clock.now += 1
    assert tick(lease, Refreshes(clock, answer=True)) is False


def test_nothing_happens_before_the_first_acquire(clock: FakeClock) -> None:
    lease = Lease(WorkerKeys("default", "w/1"), Deadlines(15), clock=clock)
    refreshes = Refreshes(clock, answer=None)
    clock.now += 100
    assert tick(lease, refreshes) is False
    assert refreshes.calls == []
    assert lease.lost() is None


def test_a_stuck_refresher_holds_back_neither_the_loss_nor_the_kill(
    lease: Lease, clock: FakeClock
) -> None:
    # The refresher blocks inside its refresh (a frozen socket read, a lookup that hangs); the
    # event loop and the watchdog decide from the clock, at once, while it is still blocked.
    entered, release = threading.Event(), threading.Event()

    def frozen() -> bool:
        entered.set()
        release.wait(30)
        return True

    refresher = threading.Thread(target=lease.refresh, args=(frozen,))
    refresher.start()
    try:
        assert entered.wait(10)
        kills = []
        for second in range(1, 13):
            clock.now += 1
            assert (lease.check("event loop") is None) == (second < 7.5), second
            kills.append(lease.must_kill())
        assert kills.index(True) + 1 == 12  # the first check at or past 11.25 s
        assert refresher.is_alive()  # all of that while the refresh was still blocked
    finally:
        release.set()
        refresher.join(10)
    # Its late success changes nothing: the loss was decided, and stands until a new lease.
    assert lease.lost() is not None


@pytest.mark.parametrize("checked_before", [True, False], ids=["checked", "just leased"])
def test_a_checker_that_was_paused_itself_leaves_the_refresher_three_ticks(
    lease: Lease, clock: FakeClock, checked_before: bool
) -> None:
    # The whole process frozen for 8 s (under L = 15 s): the key is still there. The event
    # loop and the watchdog, resumed, do not decide before the refresher, resumed too, could
    # refresh: it may first have to time out the call the pause interrupted. Also when the
    # pause came before their first check of the lease.
    if checked_before:
        lease.check("event loop")
        lease.must_kill()
    clock.now += 8
    assert lease.check("event loop") is None
    assert lease.must_kill() is False
    clock.now += 1
    assert lease.check("event loop") is None
    lease.refresh(Refreshes(clock, answer=True))
    clock.now += 1
    assert lease.check("event loop") is None
    assert lease.lost() is None


def test_a_paused_checkers_grace_ends_after_three_ticks_and_never_past_three_quarters(
    clock: FakeClock, redis_client: redis.Redis
) -> None:
    for pause, decided_at in [(8.0, 8.0 + 3), (10.0, 11.25)]:
        lease = Lease(WorkerKeys("default", "w/1"), Deadlines(15), clock=clock)
        lease.acquire(redis_client)
        start = clock.now
        lease.check("event loop")
        clock.now += pause
        while lease.check("event loop") is None:  # the refresher never succeeds
            clock.now += 0.25
        assert clock.now - start == pytest.approx(decided_at, abs=0.25)


def test_a_lease_taken_meanwhile_ignores_the_older_leases_refresh(
    lease: Lease, clock: FakeClock, redis_client: redis.Redis
) -> None:
    def answer_after_a_new_lease() -> bool:
        lease.acquire(redis_client)  # the consumer, while this refresh was in flight
        return False  # what the older lease's refresh found: its key gone

    assert lease.refresh(answer_after_a_new_lease) is None
    assert lease.lost() is None


def test_every_lease_reads_the_brokers_epoch_which_is_set_once(
    redis_client: redis.Redis,
) -> None:
    workers = [Lease(WorkerKeys("default", f"w/{n}"), Deadlines(15)) for n in range(8)]
    start = threading.Barrier(len(workers))

    def acquire(lease: Lease) -> None:
        client = redis.Redis(port=port_of(redis_client))  # a connection of its own
        start.wait()
        lease.acquire(client)

    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(acquire, workers))

    [epoch] = {lease.epoch for lease in workers}  # all at once, one epoch
    assert epoch and redis_client.get(EPOCH_KEY) == epoch
    assert redis_client.ttl(EPOCH_KEY) == -1  # never expires
    workers[0].acquire(redis_client)
    assert workers[0].epoch == epoch  # the broker kept its data: the same epoch
    redis_client.flushall()  # a broker back without its data
    workers[0].acquire(redis_client)
    assert workers[0].epoch not in (None, epoch)


def port_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs["port"])


# --- sets of unacknowledged messages, as workers leave them -------------------------------------


@contextmanager
def worker_channel(url: str, keys: WorkerKeys) -> Iterator[Any]:
    """A channel of the app's transport that keeps its messages in ``keys``'s set."""
    with app.connection_for_read(url, transport_options=keys.transport_options()) as connection:
        yield connection.channel()


def hold(url: str, keys: WorkerKeys, count: int, queue: str = QUEUE) -> list[str]:
    """Take ``count`` messages off ``queue`` as ``keys``'s worker, then die holding them."""
    with worker_channel(url, keys) as channel:
        tags = [channel.basic_get(queue).delivery_tag for _ in range(count)]
        channel.qos._delivered.clear()  # dead: nothing is restored when the channel closes
        channel.close()
    return tags


def publish_noops(url: str, count: int, **options: Any) -> list[str]:
    return [send_task(url, "app.tasks.noop", queue=QUEUE, **options) for _ in range(count)]


def queued_task_ids(client: redis.Redis, key: str = QUEUE) -> list[str]:
    """Task ids in the order a consumer takes them (BRPOP: from the right)."""
    return [loads(raw)["headers"]["id"] for raw in reversed(client.lrange(key, 0, -1))]


def held_task_ids(client: redis.Redis, unacked: UnackedSet) -> set[str]:
    return {loads(raw)[0]["headers"]["id"] for raw in client.hvals(unacked.hash)}


def recovery(worker: str, visibility_timeout: float = LONG_VISIBILITY,
             pool: str = "default") -> Recovery:  # fmt: skip
    return Recovery(app, Lease(WorkerKeys(pool, worker), Deadlines(15)), visibility_timeout)


@contextmanager
def sweeper_channel(url: str) -> Iterator[Any]:
    with app.connection_for_read(url) as connection:
        channel = connection.channel()
        yield channel
        channel.close()


def test_a_gone_workers_messages_go_back_ahead_of_newer_ones_oldest_stamp_first(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Taken a sweep apart, the first two have stamps of their own; the last two were taken
    # after the last sweep: unstamped, they go behind the stamped ones, in no particular order.
    gone = WorkerKeys("default", "gone/1")
    Lease(gone, Deadlines(15)).acquire(redis_client)
    held = publish_noops(redis_url, 4)
    sweeper = recovery("sweeper/1")
    with sweeper_channel(redis_url) as channel:
        for _ in range(2):
            hold(redis_url, gone, 1)
            sweeper.sweep(channel)  # alive: it stamps the message, restores nothing
        hold(redis_url, gone, 2)
        newer = publish_noops(redis_url, 2)
        assert redis_client.zcard(gone.unacked.index) == 2
        assert redis_client.smembers(REGISTRY_KEY) == {gone.member}
        redis_client.delete(gone.lease)  # the worker is gone

        sweeper.sweep(channel)

    queued = queued_task_ids(redis_client)
    assert queued[:2] == held[:2]  # the oldest stamp first in line
    assert sorted(queued[2:4]) == sorted(held[2:4])
    assert queued[4:] == newer
    assert redis_client.hlen(gone.unacked.hash) == 0
    assert not redis_client.exists(gone.unacked.index)
    assert redis_client.smembers(REGISTRY_KEY) == set()  # forgotten


def test_a_consumer_finds_a_gone_workers_messages_back_though_another_holds_the_claim(
    redis_url: str, redis_client: redis.Redis
) -> None:
    gone = WorkerKeys("default", "gone/1")
    held = publish_noops(redis_url, 3)
    hold(redis_url, gone, 3)
    newer = publish_noops(redis_url, 2)
    # Another sweeper (in a replacement: its own sweep thread, started first) claimed the gone
    # worker and has not restored anything yet.
    redis_client.set(f"liveness-claim:{gone.member}", "sweeper/1", px=15_000)

    with sweeper_channel(redis_url) as channel:
        recovery("replacement/1").sweep(channel)  # a periodic sweep leaves it to the claimant
        assert queued_task_ids(redis_client) == newer
        recovery("replacement/1").sweep(channel, before_consuming=True)

    # Before it takes anything; no sweep stamped them, so among themselves in no set order.
    queued = queued_task_ids(redis_client)
    assert sorted(queued[:3]) == sorted(held) and queued[3:] == newer
    assert redis_client.hlen(gone.unacked.hash) == 0


def test_a_restored_message_keeps_its_priority_list(
    redis_url: str, redis_client: redis.Redis
) -> None:
    gone = WorkerKeys("default", "gone/1")
    [urgent] = publish_noops(redis_url, 1, priority=9)
    hold(redis_url, gone, 1)

    with sweeper_channel(redis_url) as channel:
        recovery("sweeper/1").sweep(channel)

    lists = [key for key in redis_client.keys(f"{QUEUE}*") if redis_client.type(key) == "list"]
    assert len(lists) == 1 and lists[0] != QUEUE  # kombu's priority list, not the plain queue
    assert queued_task_ids(redis_client, lists[0]) == [urgent]


def test_a_live_workers_messages_stay_until_the_visibility_timeout(
    redis_url: str, redis_client: redis.Redis
) -> None:
    alive = WorkerKeys("default", "alive/1")
    publish_noops(redis_url, 2)
    lease = Lease(alive, Deadlines(15))
    lease.acquire(redis_client)
    old, young = hold(redis_url, alive, 2)
    # A sweep stamped one of them longer ago than the visibility timeout: a stuck worker's.
    redis_client.zadd(alive.unacked.index, {old: time.time() - 120})

    with sweeper_channel(redis_url) as channel:
        recovery("sweeper/1", visibility_timeout=60).sweep(channel)

    assert redis_client.llen(QUEUE) == 1  # the old one, as a last resort
    assert redis_client.hkeys(alive.unacked.hash) == [young]
    assert alive.member in redis_client.smembers(REGISTRY_KEY)


def test_the_visibility_sweep_covers_the_pool_level_keys_and_no_other_pool(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # What a worker of an older version left in the pool-level keys, and a live worker of
    # another pool (with its own, longer, visibility timeout) holding an old message.
    legacy = pool_unacked("default")
    publish_noops(redis_url, 1)
    with app.connection_for_read(redis_url) as connection:
        channel = connection.channel()
        [tag] = [channel.basic_get(QUEUE).delivery_tag]
        channel.qos._delivered.clear()
        channel.close()
    assert redis_client.hkeys(legacy.hash) == [tag]
    redis_client.zadd(legacy.index, {tag: time.time() - 120})
    other = WorkerKeys("long", "alive/2")
    Lease(other, Deadlines(15)).acquire(redis_client)
    publish_noops(redis_url, 1)
    [other_tag] = hold(redis_url, other, 1)
    redis_client.zadd(other.unacked.index, {other_tag: time.time() - 120})

    with sweeper_channel(redis_url) as channel:
        recovery("sweeper/1", visibility_timeout=60).sweep(channel)

    assert redis_client.llen(QUEUE) == 1
    assert redis_client.hlen(legacy.hash) == 0
    assert redis_client.hkeys(other.unacked.hash) == [other_tag]


def test_a_sweeper_stops_taking_messages_once_their_worker_has_a_lease_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    worker = WorkerKeys("default", "back/1")
    publish_noops(redis_url, 3)
    tags = hold(redis_url, worker, 3)
    Lease(worker, Deadlines(15)).acquire(redis_client)

    with sweeper_channel(redis_url) as channel:
        restored = recovery("sweeper/1").restore(channel, worker.unacked, tags, unless_alive=True)

    assert restored == 0
    assert redis_client.hlen(worker.unacked.hash) == 3


SWEEPERS = 4
MESSAGES = 400


def test_concurrent_sweepers_put_each_message_back_exactly_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    gone = WorkerKeys("default", "gone/1")
    published = publish_noops(redis_url, MESSAGES)
    tags = hold(redis_url, gone, MESSAGES)
    start = threading.Barrier(SWEEPERS)

    def sweep(number: int) -> int:
        # Each its own connection; all at once, over the same messages in the same order: the
        # worst case for a race. No claim: the transactions alone must be exactly-once.
        with sweeper_channel(redis_url) as channel:
            start.wait()
            return recovery(f"sweeper/{number}").restore(
                channel, gone.unacked, tags, unless_alive=True
            )

    with ThreadPoolExecutor(SWEEPERS) as pool:
        counts = list(pool.map(sweep, range(SWEEPERS)))

    queued = queued_task_ids(redis_client)
    assert sorted(queued) == sorted(published)  # each message exactly once
    assert sum(counts) == MESSAGES
    assert redis_client.hlen(gone.unacked.hash) == 0


def test_concurrent_full_sweeps_restore_and_forget_a_gone_worker_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    gone = [WorkerKeys("default", f"gone/{n}") for n in range(3)]
    published = publish_noops(redis_url, 3 * 50)
    for worker in gone:
        hold(redis_url, worker, 50)
    start = threading.Barrier(SWEEPERS)

    def sweep(number: int) -> None:
        with sweeper_channel(redis_url) as channel:
            start.wait()
            recovery(f"sweeper/{number}").sweep(channel)

    with ThreadPoolExecutor(SWEEPERS) as pool:
        list(pool.map(sweep, range(SWEEPERS)))

    assert sorted(queued_task_ids(redis_client)) == sorted(published)
    assert redis_client.smembers(REGISTRY_KEY) == set()
    assert unacked_count(redis_client, "default") == 0


def test_one_worker_of_a_pool_stamps_its_sets_per_turn(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Three live workers of the pool, each sweeping: one stamps, the others stamp nothing while
    # its turn lasts (0.9 sweep interval); the worker whose turn it was takes the next one.
    workers = [WorkerKeys("default", f"w/{n}") for n in range(3)]
    for worker in workers:
        Lease(worker, Deadlines(15)).acquire(redis_client)
    sweepers = [Recovery(app, Lease(keys, Deadlines(15)), LONG_VISIBILITY) for keys in workers]
    turn = sweepers[0].turn_ms / 1000
    assert turn == pytest.approx(0.9 * Deadlines(15).sweep_interval)
    # A short turn, so the test waits little for one to end.
    for sweeper in sweepers:
        sweeper.turn_ms = 600

    def stamp_runs() -> int:
        stats = redis_client.info("commandstats")
        return int(stats.get("cmdstat_hkeys", {}).get("calls", 0))  # one a set that holds some

    publish_noops(redis_url, 3)
    for worker in workers:
        hold(redis_url, worker, 1)
    with sweeper_channel(redis_url) as channel:
        before = stamp_runs()
        sweepers[1].sweep(channel)
        assert stamp_runs() - before == 3  # its turn: every set of the pool that holds some
        assert all(redis_client.zcard(w.unacked.index) == 1 for w in workers)
        before = stamp_runs()
        sweepers[0].sweep(channel)
        sweepers[2].sweep(channel)
        assert stamp_runs() == before  # not their turn
        sweepers[1].sweep(channel)
        assert stamp_runs() - before == 3  # still its turn
        time.sleep(0.7)
        before = stamp_runs()
        sweepers[2].sweep(channel)  # the turn ended: the next sweeper's
        sweepers[1].sweep(channel)
        assert stamp_runs() - before == 3
    assert redis_client.llen(QUEUE) == 0


def test_a_pool_of_one_worker_takes_no_turn(redis_url: str, redis_client: redis.Redis) -> None:
    alone = WorkerKeys("default", "alone/1")
    Lease(alone, Deadlines(15)).acquire(redis_client)
    with sweeper_channel(redis_url) as channel:
        Recovery(app, Lease(alone, Deadlines(15)), LONG_VISIBILITY).sweep(channel)
    assert not redis_client.exists("liveness-stamp-turn:default")


# --- the sweep's stamps: how long a message has been held ---------------------------------------

#: A visibility timeout the stamp tests wait for.
SHORT_VISIBILITY = 2.0


def server_time(client: redis.Redis) -> float:
    """Redis's clock, which writes the stamps (``celery_ecs.recovery.STAMP``)."""
    seconds, microseconds = cast("tuple[int, int]", client.time())
    return seconds + microseconds / 1e6


def calls(client: redis.Redis, *commands: str) -> dict[str, int]:
    """Calls so far of each of ``commands`` (those a script ran included)."""
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands}


def test_taking_and_acknowledging_messages_write_no_index_entry(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Every per-task path: FETCH on the event loop, carrying acknowledgements, and ACK at the
    # close; FETCH for basic_get; ACK on the synchronous connection.
    worker = WorkerKeys("default", "w/1")
    before = calls(redis_client, "zadd", "zrem")

    publish_noops(redis_url, 3)
    consume(redis_url, worker, 3, on_message=lambda message: message.ack())
    publish_noops(redis_url, 2)
    tags = hold(redis_url, worker, 2)
    assert redis_client.hlen(worker.unacked.hash) == 2
    with worker_channel(redis_url, worker) as channel:
        channel.acknowledge_now(tags)

    assert calls(redis_client, "zadd", "zrem") == before
    assert redis_client.hlen(worker.unacked.hash) == 0
    assert not redis_client.exists(worker.unacked.index)


def test_a_held_message_goes_back_a_visibility_timeout_after_the_first_sweep_that_saw_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # A live worker stuck holding a message: the first sweep stamps it; the sweeps after keep
    # it until the stamp is a visibility timeout old, never before, and the first sweep past
    # that puts it back.
    stuck = WorkerKeys("default", "stuck/1")
    Lease(stuck, Deadlines(15)).acquire(redis_client)
    [task] = publish_noops(redis_url, 1)
    [tag] = hold(redis_url, stuck, 1)
    sweeper = recovery("sweeper/1", visibility_timeout=SHORT_VISIBILITY)
    with sweeper_channel(redis_url) as channel:
        before = server_time(redis_client)
        sweeper.sweep(channel)
        after = server_time(redis_client)
        stamp = float(redis_client.zscore(stuck.unacked.index, tag))
        assert before <= stamp <= after  # Redis's clock, as the sweep ran
        expiry = stamp + SHORT_VISIBILITY
        sweeps_before_expiry = 0
        deadline = time.monotonic() + 30
        while redis_client.hexists(stuck.unacked.hash, tag):
            assert time.monotonic() < deadline, "never put back"
            time.sleep(0.1)
            before = server_time(redis_client)
            sweeper.sweep(channel)
            after = server_time(redis_client)
            restored = not redis_client.hexists(stuck.unacked.hash, tag)
            if after < expiry:
                assert not restored, f"put back {expiry - after:.3f} s early"
                sweeps_before_expiry += 1
                assert redis_client.zscore(stuck.unacked.index, tag) == stamp  # not renewed
            if before >= expiry:
                assert restored, "a sweep past the visibility timeout left it"
    assert sweeps_before_expiry >= 5  # the sweeps that kept it did run
    assert queued_task_ids(redis_client) == [task]
    assert not redis_client.exists(stuck.unacked.index)  # its stamp went with it


def test_the_stamp_of_an_acknowledged_message_goes_with_the_next_sweep(
    redis_url: str, redis_client: redis.Redis
) -> None:
    worker = WorkerKeys("default", "alive/1")
    Lease(worker, Deadlines(15)).acquire(redis_client)
    publish_noops(redis_url, 2)
    acknowledged, kept = hold(redis_url, worker, 2)
    sweeper = recovery("sweeper/1")
    with sweeper_channel(redis_url) as channel, worker_channel(redis_url, worker) as own:
        sweeper.sweep(channel)
        stamps = dict(redis_client.zrange(worker.unacked.index, 0, -1, withscores=True))
        assert set(stamps) == {acknowledged, kept}
        own.acknowledge_now([acknowledged])
        assert redis_client.zcard(worker.unacked.index) == 2  # the acknowledgement left it

        sweeper.sweep(channel)
        assert redis_client.zrange(worker.unacked.index, 0, -1, withscores=True) == [
            (kept, stamps[kept])  # the other one's stamp is kept, not renewed
        ]
        own.acknowledge_now([kept])
        sweeper.sweep(channel)
    assert not redis_client.exists(worker.unacked.hash, worker.unacked.index)
    assert redis_client.llen(QUEUE) == 0  # nothing put back


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own: its settings or its counts are the test's alone."""
    server = start_redis()
    yield server
    server.stop()


def test_at_maxmemory_a_sweep_still_stamps(own_redis: RedisServer) -> None:
    # Refused, the stamp of a stuck worker's message would never be written: it would never
    # come back. The script is flagged allow-oom.
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    stuck = WorkerKeys("default", "stuck/1")
    Lease(stuck, Deadlines(15)).acquire(client)
    publish_noops(own_redis.url, 1)
    [tag] = hold(own_redis.url, stuck, 1)
    fill_past_maxmemory(client)

    with sweeper_channel(own_redis.url) as channel:
        recovery("sweeper/1").sweep(channel)

    assert client.zscore(stuck.unacked.index, tag) is not None
    assert client.get("liveness-stamp-turn:default") == "default:sweeper/1"  # taken too
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.zadd("other", {"x": 1})  # what the script did, refused outside it


def test_what_a_sweep_costs_per_set(own_redis: RedisServer) -> None:
    # The figures docs/explanation/measured.md gives: commands per set per sweep, the script's
    # own EVALSHA and those it runs (INFO commandstats counts both).
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    unacked = WorkerKeys("default", "w/1").unacked
    stamp(client, [unacked], LONG_VISIBILITY)  # loads the script (NOSCRIPT, then EVAL)

    def cost() -> dict[str, int]:
        stats = client.info("commandstats")
        before = {key: int(value["calls"]) for key, value in stats.items()}
        stamp(client, [unacked], LONG_VISIBILITY)
        after = client.info("commandstats")
        return {key.removeprefix("cmdstat_"): int(value["calls"]) - before.get(key, 0)
                for key, value in after.items()
                if key != "cmdstat_info" and int(value["calls"]) != before.get(key, 0)}

    # Nothing held.
    assert cost() == {"evalsha": 1, "exists": 1}
    # Held, a message taken since the last sweep (stamped now); then nothing new.
    client.hset(unacked.hash, mapping={"a": "[]", "b": "[]"})
    assert cost() == {"evalsha": 1, "exists": 1, "hkeys": 1, "time": 1, "zrange": 1, "zadd": 1}
    assert cost() == {"evalsha": 1, "exists": 1, "hkeys": 1, "time": 1, "zrange": 1}
    # One acknowledged since (its stamp goes), one taken since.
    client.hdel(unacked.hash, "a")
    client.hset(unacked.hash, "c", "[]")
    assert cost() == {"evalsha": 1, "exists": 1, "hkeys": 1, "time": 1, "zrange": 1, "zadd": 1,
                      "zrem": 1}  # fmt: skip
    # Everything acknowledged since: the stamps go; then nothing held again.
    client.delete(unacked.hash)
    assert cost() == {"evalsha": 1, "exists": 1, "hkeys": 1, "del": 1}
    assert cost() == {"evalsha": 1, "exists": 1}


def test_what_a_turn_costs(own_redis: RedisServer) -> None:
    # A sweep in a pool of several workers first asks for the pool's turn: one script, one SET.
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    take_turn(client, "turn", "a", 60_000)  # loads the script (NOSCRIPT, then EVAL)
    for sweeper, its_turn in (("a", True), ("b", False)):
        before = client.info("commandstats")
        assert take_turn(client, "turn", sweeper, 60_000) is its_turn
        after = client.info("commandstats")
        assert {key.removeprefix("cmdstat_"): int(value["calls"]) - int(before[key]["calls"])
                for key, value in after.items()
                if key != "cmdstat_info" and value["calls"] != before[key]["calls"]
                } == {"evalsha": 1, "set": 1}  # fmt: skip


# --- the transport ------------------------------------------------------------------------------


def consume(
    url: str, keys: WorkerKeys, count: int, transport: str | None = None,
    on_message: Callable[[Any], None] = lambda message: None,
) -> list[Any]:  # fmt: skip
    """Deliver ``count`` messages through the event-loop path (FETCH, or kombu's BRPOP);
    ``on_message`` is called for each after its delivery, as Celery acknowledges."""
    options = {**app.conf.broker_transport_options, **keys.transport_options()}
    received: list[Any] = []

    connection = Connection(url, transport=transport or app.conf.broker_transport,
                            transport_options=options)  # fmt: skip
    with connection, Consumer(connection, [Queue(QUEUE)], accept=["json"],
                              callbacks=[lambda _, message: received.append(message)]):
        while len(received) < count:
            connection.drain_events(timeout=10)
            on_message(received[-1])
        channel = connection.default_channel
        channel.qos._delivered.clear()  # nothing restored at close: the test looks at Redis
        channel.close()  # reads the reply of a FETCH still in flight
    return received


def test_a_fetched_message_is_recorded_as_kombu_records_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    worker = WorkerKeys("default", "w/1")
    publish_noops(redis_url, 1)

    [message] = consume(redis_url, worker, 1)

    tag = message.delivery_tag
    stored = loads(redis_client.hget(worker.unacked.hash, tag))
    info = message.delivery_info
    # kombu's QoS.append: [payload, exchange, routing_key] under the tag; not its index (the
    # sweep stamps it).
    assert stored == [message._raw, info["exchange"], info["routing_key"]]
    assert not redis_client.exists(worker.unacked.index)
    assert redis_client.smembers(REGISTRY_KEY) == {worker.member}
    assert redis_client.llen(QUEUE) == 0


def test_fetch_takes_messages_in_the_order_kombus_brpop_does(
    redis_url: str, redis_client: redis.Redis
) -> None:
    priorities = [0, 9, 3, 6, 0, 9]
    for priority in priorities:
        publish_noops(redis_url, 1, priority=priority)
    snapshot = {key: redis_client.lrange(key, 0, -1) for key in redis_client.keys(f"{QUEUE}*")
                if redis_client.type(key) == "list"}  # fmt: skip

    ours = [m.headers["id"] for m in consume(redis_url, WorkerKeys("default", "a/1"), 6)]
    for key, items in snapshot.items():
        redis_client.rpush(key, *items)
    kombus = [m.headers["id"] for m in consume(redis_url, WorkerKeys("default", "b/1"), 6,
                                               transport="redis")]  # fmt: skip

    assert ours == kombus


def test_fetch_hands_back_unrecorded_what_is_not_a_kombu_message(
    redis_client: redis.Redis,
) -> None:
    # As after BRPOP, the message fails in Python; the script must not fail halfway (a Lua error
    # after the RPOP would lose it without a word).
    redis_client.lpush(QUEUE, "not json", '{"properties": {}}')
    replies = [redis_client.eval(FETCH, 4, "hash", "registry", QUEUE, wake_key(QUEUE),
                                 "member", "1")
               for _ in range(2)]  # fmt: skip
    assert [item for _, item, *_ in replies] == ["not json", '{"properties": {}}']
    assert [recorded for _, _, recorded, *_ in replies] == ["", ""]
    assert not redis_client.exists("hash", "registry")


def test_a_consumer_of_empty_queues_waits_and_gets_what_comes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    worker = WorkerKeys("default", "w/1")
    [task_id] = [None]

    def publish_later() -> None:
        time.sleep(1.5)  # FETCH finds nothing, the channel waits on the wake list
        nonlocal task_id
        task_id = publish_noops(redis_url, 1)[0]

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    [message] = consume(redis_url, worker, 1)
    publisher.join()

    assert message.headers["id"] == task_id
    assert redis_client.hexists(worker.unacked.hash, message.delivery_tag)


def test_acknowledgements_ride_on_the_next_fetch(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    worker = WorkerKeys("default", "w/1")
    publish_noops(redis_url, 3)
    commands_before = eval_calls(redis_client)

    with caplog.at_level(logging.WARNING, logger="celery_ecs.transport"):
        received = consume(redis_url, worker, 3, on_message=lambda message: message.ack())

    assert redis_client.hlen(worker.unacked.hash) == 0  # every ack reached Redis
    assert not redis_client.exists(worker.unacked.index)
    # Three messages, three acks: one FETCH for each message, one more carrying the last ack.
    assert eval_calls(redis_client) - commands_before == 4
    assert not any(m.acknowledged is False for m in received)
    assert caplog.records == []


def eval_calls(client: redis.Redis) -> int:
    """Scripts run (EVAL, or EVALSHA that found its script)."""
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        - int(stats.get(f"cmdstat_{command}", {}).get("failed_calls", 0))
        for command in ("eval", "evalsha")
    )


def test_an_ack_riding_on_a_fetch_of_a_message_taken_back_is_logged(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    worker = WorkerKeys("default", "w/1")
    publish_noops(redis_url, 2)

    def take_back_then_ack(message: Any) -> None:
        with sweeper_channel(redis_url) as sweeper:
            recovery("sweeper/1").restore(sweeper, worker.unacked, [message.delivery_tag],
                                          unless_alive=True)  # fmt: skip
        message.ack()

    with caplog.at_level(logging.WARNING, logger="celery_ecs.transport"):
        # The FETCH carrying the ack also brings the second message (restored at the close).
        first = consume(redis_url, worker, 1, on_message=take_back_then_ack)[0]

    [record] = caplog.records
    assert first.delivery_tag in record.getMessage()
    assert "another worker had taken it back" in record.getMessage()


def test_an_ack_of_a_message_another_worker_took_back_is_logged(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    worker = WorkerKeys("default", "w/1")
    publish_noops(redis_url, 2)
    with worker_channel(redis_url, worker) as channel:
        taken, kept = channel.basic_get(QUEUE), channel.basic_get(QUEUE)
        with sweeper_channel(redis_url) as sweeper:
            recovery("sweeper/1").restore(sweeper, worker.unacked, [taken.delivery_tag],
                                          unless_alive=True)  # fmt: skip

        with caplog.at_level(logging.WARNING, logger="celery_ecs.transport"):
            kept.ack()
            assert caplog.records == []
            taken.ack()

    [record] = caplog.records
    assert taken.delivery_tag in record.getMessage()
    assert "another worker had taken it back" in record.getMessage()
    assert held_task_ids(redis_client, worker.unacked) == set()


# --- the worker's side: the kill, and acknowledgements whose reply was lost ---------------------


class PoolOf(PreforkPool):
    """A prefork pool as the watchdog sees it: its processes' ids, nothing started."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    @property
    def info(self) -> dict[str, Any]:
        return {"processes": self.pids}


def test_the_thread_kills_the_pool_processes_once_when_tasks_still_run_at_three_quarters(
    clock: FakeClock, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pool process running a task, and an event loop that does nothing about the loss (as if
    # stuck); Redis unreachable for the thread (nothing listens on the port).
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease = Lease(WorkerKeys("default", "w/1"), Deadlines(15), clock=clock)
        lease.acquire(redis_client)
        unreachable = f"redis://127.0.0.1:{free_port()}/0"
        worker = SimpleNamespace(
            liveness=lease, pool=PoolOf([child.pid]),
            app=SimpleNamespace(conf=SimpleNamespace(broker_url=unreachable)),
        )  # fmt: skip
        monkeypatch.setattr(worker_state, "active_requests", {"a running request"})
        threads = LivenessStep(SimpleNamespace()).create(worker)

        for second in range(1, 20):
            clock.now += 1
            threads.refresher.function()
            threads.watchdog.function()
            if second < 11.25:
                assert child.poll() is None, f"killed at {second} s"
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert lease.lost() is not None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_acknowledgements_whose_reply_was_lost_are_sent_again_before_the_own_set_is_restored(
    redis_url: str, redis_client: redis.Redis
) -> None:
    keys = WorkerKeys("default", "w/1")
    publish_noops(redis_url, 2)
    completed, held = hold(redis_url, keys, 2)
    lease = Lease(keys, Deadlines(15))
    with app.connection_for_read(redis_url, transport_options=keys.transport_options()) as conn:
        consumer = SimpleNamespace(
            unconfirmed_acks=[completed], connection=conn, held_at_loss=[], held_epoch=None,
            controller=SimpleNamespace(liveness=lease, app=app),
        )  # fmt: skip
        RestoreLostDeliveries(SimpleNamespace()).start(consumer)

    # The completed task's message is gone, not restored to run again; the other is back.
    assert redis_client.llen(QUEUE) == 1
    assert loads(redis_client.lindex(QUEUE, 0))["properties"]["delivery_tag"] == held
    assert redis_client.hlen(keys.unacked.hash) == 0
    assert consumer.unconfirmed_acks == []


def held_messages(url: str, keys: WorkerKeys, count: int) -> list[Any]:
    """Take ``count`` messages as ``keys``'s worker and keep kombu's messages, as a consumer
    keeps them in memory."""
    with worker_channel(url, keys) as channel:
        messages = [channel.basic_get(QUEUE) for _ in range(count)]
        channel.qos._delivered.clear()
        channel.close()
    return messages


def restore_after_reconnect(url: str, lease: Lease, held: list[Any], epoch: str | None) -> None:
    """What the consumer does once reconnected: its lease, then ``RestoreLostDeliveries``
    (the queue declared again first, as Celery's consumer does before)."""
    with app.connection_for_read(url, transport_options=lease.keys.transport_options()) as conn:
        Queue(QUEUE, exchange=app.amqp.queues[QUEUE].exchange, routing_key=QUEUE)(
            conn.default_channel
        ).declare()
        with conn.default_channel.conn_or_acquire() as client:
            lease.acquire(client)
        consumer = SimpleNamespace(
            unconfirmed_acks=[], connection=conn, held_at_loss=held, held_epoch=epoch,
            controller=SimpleNamespace(liveness=lease, app=app),
        )  # fmt: skip
        RestoreLostDeliveries(SimpleNamespace()).start(consumer)
        assert consumer.held_at_loss == [] and consumer.held_epoch is None


def test_messages_held_when_the_broker_lost_its_data_go_back_from_memory_oldest_first(
    redis_url: str, redis_client: redis.Redis
) -> None:
    keys = WorkerKeys("default", "w/1")
    lease = Lease(keys, Deadlines(15))
    lease.acquire(redis_client)
    published = publish_noops(redis_url, 3)
    held = held_messages(redis_url, keys, 3)
    epoch_at_loss = lease.epoch

    redis_client.flushall()  # the broker restarts without its data: set, queues, epoch gone
    restore_after_reconnect(redis_url, lease, held, epoch_at_loss)

    assert lease.epoch != epoch_at_loss
    assert queued_task_ids(redis_client) == published  # each once, oldest first in line
    assert all(loads(raw)["headers"]["redelivered"] for raw in redis_client.lrange(QUEUE, 0, -1))


def test_messages_held_when_the_broker_kept_its_data_go_back_from_the_set_only(
    redis_url: str, redis_client: redis.Redis
) -> None:
    keys = WorkerKeys("default", "w/1")
    lease = Lease(keys, Deadlines(15))
    lease.acquire(redis_client)
    published = publish_noops(redis_url, 3)
    held = held_messages(redis_url, keys, 3)

    restore_after_reconnect(redis_url, lease, held, lease.epoch)  # same epoch: data kept

    # From the set, each once; no sweep stamped them: in no particular order among themselves.
    assert sorted(queued_task_ids(redis_client)) == sorted(published)
    assert redis_client.hlen(keys.unacked.hash) == 0


# --- name lookups that hang ---------------------------------------------------------------------


def is_numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HangingLookups:
    """``socket.getaddrinfo`` that answers at once until ``hang`` is set, then blocks until
    ``release`` is set; counts the lookups it was asked for. A numeric host is answered at
    once, as the system resolver does: it asks no name server."""

    def __init__(self) -> None:
        self.real = socket.getaddrinfo
        self.hang, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, host: str, *args: Any, **kwargs: Any) -> Any:
        if is_numeric(host):
            return self.real(host, *args, **kwargs)
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(30)
        return self.real(host, *args, **kwargs)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingLookups]:
    hanging = HangingLookups()
    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    yield hanging
    hanging.release.set()


def test_a_lookup_that_hangs_is_cut_at_its_timeout_and_joined_not_repeated(
    lookups: HangingLookups,
) -> None:
    resolver = BoundedResolver(timeout=0.3)
    lookups.hang.set()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no address for localhost"):
            resolver.getaddrinfo("localhost", 6379, 0, socket.SOCK_STREAM)
        assert time.monotonic() - started < 2
    assert lookups.calls == 1  # one lookup hangs; the later calls wait for it, within bounds
    lookups.release.set()
    deadline = time.monotonic() + 10
    while True:  # its answer, once it comes, is the next call's
        try:
            assert resolver.getaddrinfo("localhost", 6379, 0, socket.SOCK_STREAM)
            break
        except TimeoutError:
            assert time.monotonic() < deadline


def test_a_lookup_that_hangs_gets_the_last_answer(lookups: HangingLookups) -> None:
    resolver = BoundedResolver(timeout=0.3)
    answer = resolver.getaddrinfo("localhost", 6379, 0, socket.SOCK_STREAM)
    lookups.hang.set()
    started = time.monotonic()
    assert resolver.getaddrinfo("localhost", 6379, 0, socket.SOCK_STREAM) == answer
    assert time.monotonic() - started < 2


def test_the_refresher_reconnects_within_a_tick_while_lookups_hang(
    redis_server: Any, redis_client: redis.Redis, lookups: HangingLookups
) -> None:
    deadlines = Deadlines(6)
    lease = Lease(WorkerKeys("default", "w/1"), deadlines)
    lease.acquire(redis_client)
    extend = LeaseRefresher(f"redis://localhost:{redis_server.port}/0", lease.keys.lease,
                            deadlines)  # fmt: skip
    assert extend() is True
    lookups.hang.set()
    redis_client.client_kill_filter(_type="normal", skipme=True)  # every connection drops

    started = time.monotonic()
    assert extend() is True
    assert time.monotonic() - started < deadlines.tick * 2
    assert 5_000 < redis_client.pttl(lease.keys.lease) <= 6_000
