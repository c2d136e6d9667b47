"""A broker restart under load loses nothing and kills no worker, and beat rides it out.

ElastiCache restarts nodes for maintenance, node replacement and failover: every connection
drops, the endpoint refuses connections for a while, and the data comes back, or, on a node
without persistence or replica (the dev stack's), does not. Here a real redis-server is shut
down (saving its data, or not) and started again on the same port while a real worker runs
tasks; ``CLIENT KILL`` would only drop connections to a server that stays reachable, which is
not the same failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.exceptions import Reject
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_ecs.liveness import unacked_count
from infra.containers import worker_command
from testkit.processes import python_argv
from testkit.redis_server import RedisServer, free_port, start_redis
from tests.support import (
    AppProcess,
    app_environment,
    send_task,
    start_process,
    start_worker,
    wait_for,
)
from tests.test_beat import HOURLY, install_schedule, make_overdue, sent_tasks, start_beat
from tests.test_transport import fill_past_maxmemory

TASKS = 100
AMOUNT = 1
# Long enough that nothing in this test can come back through the visibility timeout: every
# task must complete through the worker's own recovery.
VISIBILITY_TIMEOUT = 900


@pytest.fixture
def restartable_redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


def completed(client: redis.Redis, keys: list[str]) -> int:
    return sum(client.exists(f"idem:{key}") for key in keys)


def test_a_busy_worker_survives_a_broker_restart_and_every_task_completes(
    restartable_redis: RedisServer, tmp_path: Path,
    processes: list[AppProcess],
) -> None:
    url = restartable_redis.url
    env = app_environment(
        url, tmp_path,
        CELERY_TASK_SOFT_TIME_LIMIT="20", CELERY_TASK_TIME_LIMIT="22",
        CELERY_MAX_COUNTDOWN="0", CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
    )  # fmt: skip
    worker = start_worker(env, tmp_path, concurrency=4)
    processes.append(worker)
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = [f"restart-{i}" for i in range(TASKS)]
    for key in keys:
        send_task(
            url, "app.tasks.apply_credit",
            kwargs={"idempotency_key": key, "account": "acct", "amount": AMOUNT,
                    "work_seconds": 0.2},
        )  # fmt: skip
    wait_for(lambda: completed(client, keys) >= 10, 60, what="the first tasks to complete")

    restartable_redis.restart(downtime=1)

    client = redis.Redis.from_url(url, decode_responses=True)
    wait_for(lambda: completed(client, keys) == TASKS, 120, interval=0.5,
             what=f"all {TASKS} tasks to complete")
    assert client.hget("ledger:balances", "acct") == str(TASKS * AMOUNT)
    wait_for(lambda: unacked_count(client, "default") == 0, 30, what="every ack")
    assert worker.alive(), worker.logs()
    assert "Unrecoverable error" not in worker.logs()



def test_a_broker_at_maxmemory_ends_no_worker_and_each_task_runs_once_when_memory_frees(
    restartable_redis: RedisServer, tmp_path: Path, processes: list[AppProcess],
) -> None:
    url = restartable_redis.url
    env = app_environment(
        url, tmp_path,
        CELERY_TASK_SOFT_TIME_LIMIT="20", CELERY_TASK_TIME_LIMIT="22",
        CELERY_MAX_COUNTDOWN="0", CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
        # Shorter than the spell at maxmemory below: the holder keeps its task only because
        # its lease refresh (PEXPIRE, outside any MULTI) is allowed at maxmemory.
        CELERY_LIVENESS_TIMEOUT="4",
    )  # fmt: skip
    client = redis.Redis.from_url(url, decode_responses=True)
    client.config_set("maxmemory-policy", "noeviction")  # ElastiCache's, as infra/broker.py sets
    holder = start_worker(env, tmp_path, name="holder")
    processes.append(holder)
    credit = {"account": "acct", "amount": AMOUNT}
    send_task(url, "app.tasks.apply_credit",
              kwargs={**credit, "idempotency_key": "held", "work_seconds": 12})  # fmt: skip
    wait_for(lambda: client.get("attempts:held") == "1", 30, what="the held task to start")
    # Queued behind it: the holder, one slot and one message per slot, does not take it.
    send_task(url, "app.tasks.apply_credit", kwargs={**credit, "idempotency_key": "queued"})

    fill_past_maxmemory(client)
    # A worker that starts now (a replacement, a scale-out) can write nothing: neither kombu's
    # queue bindings nor its lease nor its restores. It waits, consuming nothing, and lives.
    late = start_process("late", python_argv(worker_command("late", ("default",), 1)), env,
                         tmp_path)  # fmt: skip
    processes.append(late)
    wait_for(lambda: "the broker is at maxmemory" in late.logs() or not late.alive(), 60,
             what="the late worker to meet maxmemory")  # fmt: skip
    time.sleep(5)  # a few starts refused; longer than the liveness timeout
    assert late.alive(), late.logs()
    assert client.lrange("default", 0, -1) != []  # nothing taken
    assert client.get("attempts:queued") is None

    client.delete(*client.keys("filler:*"))  # memory frees
    wait_for(lambda: client.exists("idem:held", "idem:queued") == 2, 60, interval=0.2,
             what="both tasks to complete")  # fmt: skip
    # The held task ran once: nobody took it from the holder, which kept its lease throughout.
    assert [client.get("attempts:held"), client.get("attempts:queued")] == ["1", "1"]
    assert client.hget("ledger:balances", "acct") == str(2 * AMOUNT)
    wait_for(lambda: unacked_count(client, "default") == 0, 30, what="every ack")
    for worker in (holder, late):
        assert worker.alive(), worker.logs()
        assert "Unrecoverable error" not in worker.logs()
    assert "liveness lost" not in holder.logs()


def test_a_broker_back_without_its_data_loses_no_task_the_worker_held(
    restartable_redis: RedisServer, tmp_path: Path, processes: list[AppProcess],
) -> None:
    # Everything the worker holds at the restart: two running tasks, two prefetched behind
    # them, one waiting for its countdown. Their only record after the restart is the
    # worker's memory; each must run again and complete.
    url = restartable_redis.url
    env = app_environment(
        url, tmp_path,
        CELERY_TASK_SOFT_TIME_LIMIT="20", CELERY_TASK_TIME_LIMIT="22",
        CELERY_MAX_COUNTDOWN="30", CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
        CELERY_PREFETCH_MULTIPLIER="2",  # two prefetched per slot: a message waits behind each
    )  # fmt: skip
    worker = start_worker(env, tmp_path, concurrency=2)
    processes.append(worker)
    client = redis.Redis.from_url(url, decode_responses=True)
    # First the countdown: received, it raises the prefetch count by one (Celery's ETA rule).
    send_credit(url, "countdown", 0.2, countdown=10)
    work = {"running-1": 8, "running-2": 8, "prefetched-1": 0.2, "prefetched-2": 0.2}
    for key, seconds in work.items():
        send_credit(url, key, seconds)
    keys = ["countdown", *work]
    wait_for(lambda: all(client.exists(f"attempts:{k}") for k in ["running-1", "running-2"])
             and client.llen("default") == 0 and unacked_count(client, "default") == 5,
             30, what="the worker to run two tasks and hold three more")  # fmt: skip

    client.set("written-before-the-restart", 1)
    restartable_redis.restart(downtime=1, keep_data=False)

    client = redis.Redis.from_url(url, decode_responses=True)
    # Back empty. (Not "few keys": the worker may already have written many again.)
    assert not client.exists("written-before-the-restart")
    wait_for(lambda: completed(client, keys) == len(keys), 90, interval=0.5,
             what="every task the worker held to run again and complete")  # fmt: skip
    assert client.hget("ledger:balances", "acct") == str(len(keys) * AMOUNT)  # once each
    wait_for(lambda: unacked_count(client, "default") == 0, 30, what="every ack")
    logs = worker.logs()
    assert "the broker lost its data" in logs, logs
    assert worker.alive(), logs


def send_credit(url: str, key: str, work_seconds: float, **options: object) -> None:
    send_task(url, "app.tasks.apply_credit", kwargs={
        "idempotency_key": key, "account": "acct", "amount": AMOUNT, "work_seconds": work_seconds,
    }, **options)  # fmt: skip


def test_a_task_that_cannot_reach_redis_is_requeued_not_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the worker does with the outcome is Celery's documented behaviour: an exception
    # acknowledges the message (FAILURE, gone), Reject(requeue=True) puts it back.
    from app import tasks

    unreachable = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(tasks, "client", lambda: unreachable)

    with pytest.raises(Reject) as rejected:
        tasks.apply_credit(idempotency_key="k", account="acct", amount=1)

    assert rejected.value.requeue is True
    assert isinstance(rejected.value.__cause__, redis.ConnectionError)


def test_beat_rides_out_a_broker_restart_and_keeps_scheduling(
    restartable_redis: RedisServer, tmp_path: Path, processes: list[AppProcess],
) -> None:
    url = restartable_redis.url
    env = app_environment(url, tmp_path)
    client = redis.Redis.from_url(url, decode_responses=True)
    install_schedule(env, tmp_path, client)
    beat = start_beat(env, tmp_path, "beat")
    processes.append(beat)
    wait_for(lambda: "Acquired lock" in beat.logs(), 30, what="beat to hold its lock")

    # Down until beat has met the outage: a loaded machine may delay its tick past a fixed gap.
    restartable_redis.restart(downtime=2, down_until=lambda: "Redis unreachable" in beat.logs())

    client = redis.Redis.from_url(url, decode_responses=True)
    # Due now: its last run long ago, and first in the schedule beat reads each tick.
    make_overdue(client, HOURLY.name)
    client.zadd("redbeat::schedule", {f"redbeat:{HOURLY.name}": time.time() - 1})
    wait_for(lambda: sent_tasks(client, HOURLY.queue), 30, what="beat to send the due entry")
    assert beat.alive(), beat.logs()
    assert "Redis unreachable" in beat.logs()  # it met the outage, and waited it out
    assert client.exists("redbeat::lock")


def test_the_waits_at_maxmemory_double_up_to_the_longest_and_start_again_after_a_spell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery_ecs import consumer as consumer_module
    from celery_ecs.consumer import MAXMEMORY_FIRST_WAIT, MAXMEMORY_LONGEST_WAIT, Consumer

    now = [1000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(consumer_module.time, "sleep", sleep)
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: now[0])
    consumer = Consumer.__new__(Consumer)  # only the wait's state: no worker around it
    consumer._maxmemory_wait, consumer._maxmemory_waited_at = 0.0, float("-inf")
    for _ in range(6):
        consumer._wait_for_memory()
    assert waits == [MAXMEMORY_FIRST_WAIT, 1.0, 2.0, 4.0, MAXMEMORY_LONGEST_WAIT,
                     MAXMEMORY_LONGEST_WAIT]  # fmt: skip
    now[0] += 2 * MAXMEMORY_LONGEST_WAIT + 1  # consumed a while: a new spell starts short
    consumer._wait_for_memory()
    assert waits[-1] == MAXMEMORY_FIRST_WAIT
