"""Real workers that die or freeze: their tasks come back from liveness, not from age.

Real redis-server, real ``celery worker`` processes started as the ECS task definition starts
them, each in a process group of its own: a SIGKILL of the group is a container dying, a SIGSTOP
of the group a container (or its host) frozen. Tasks are ``app.tasks.apply_credit``: they count
their starts and apply their effect once per key.

The liveness timeout is scaled down (``CELERY_LIVENESS_TIMEOUT``; the product's default is 10 s),
and every visibility timeout here is far longer than anything the tests wait for, so whatever
comes back early came back through liveness.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu.utils.json import loads

from celery_ecs.liveness import Deadlines, WorkerKeys, registered_workers
from celery_ecs.revokes import REVOKED_KEY
from infra.budget import MAX_TASK_TIMEOUT, worker_budget
from infra.containers import worker_command
from testkit.processes import python_argv
from tests.support import AppProcess, send_task, start_process, start_worker, wait_for

#: The crash tests' liveness timeout: a crashed worker's tasks are back within 4/3 of it
#: (``Deadlines.recovery_bound``).
LIVENESS_TIMEOUT = 8
#: The pause tests': shorter, as they wait for a whole timeout and then a rerun.
PAUSE_LIVENESS_TIMEOUT = 6
#: The product's promise: a crashed worker's tasks are back on their queue within this.
RECOVERY_PROMISE = 30.0
AMOUNT = 10


def send_credit(url: str, key: str, work_seconds: float, **options: object) -> None:
    send_task(url, "app.tasks.apply_credit", kwargs={
        "idempotency_key": key, "account": "acct", "amount": AMOUNT, "work_seconds": work_seconds,
    }, **options)  # fmt: skip


def attempts(client: redis.Redis, *keys: str) -> list[int]:
    return [int(value or 0) for value in client.mget([f"attempts:{key}" for key in keys])]


def applied(client: redis.Redis, key: str) -> bool:
    return bool(client.exists(f"idem:{key}"))


def keys_of(client: redis.Redis, name: str) -> WorkerKeys:
    """The liveness keys of the worker started as ``name`` (``--hostname name@%h``)."""
    [keys] = [w for w in registered_workers(client) if w.worker.startswith(f"{name}@")]
    return keys


def unacked_of(client: redis.Redis, name: str) -> int:
    return int(client.hlen(keys_of(client, name).unacked.hash))


def freeze(worker: AppProcess) -> None:
    os.killpg(worker.process.pid, signal.SIGSTOP)


def thaw(worker: AppProcess) -> None:
    os.killpg(worker.process.pid, signal.SIGCONT)


def pool_environment(app_env: dict[str, str], task_timeout: int) -> dict[str, str]:
    """What the budget renders for a pool whose longest task is ``task_timeout`` seconds, with
    two messages prefetched per slot and countdowns up to 30 s."""
    budget = worker_budget(task_timeout, prefetch_multiplier=2, max_countdown=30)
    return {**app_env, **budget.environment(), "CELERY_LIVENESS_TIMEOUT": str(LIVENESS_TIMEOUT)}


def first_to_start(client: redis.Redis, earlier: str, later: list[str], timeout: float) -> None:
    """Wait until ``earlier`` runs again (its second start); none of ``later`` may start first."""

    def started() -> bool:
        counts = attempts(client, earlier, *later)
        assert counts[1:] == [0] * len(later), f"{later} started before {earlier}: {counts}"
        return counts[0] == 2

    wait_for(started, timeout, what=f"{earlier} to run again")


def queued_keys(client: redis.Redis) -> list[str]:
    """The idempotency keys of the default queue's messages, in the order they will be taken."""
    return [json.loads(base64.b64decode(loads(raw)["body"]))[1]["idempotency_key"]
            for raw in reversed(client.lrange("default", 0, -1))]  # fmt: skip


@pytest.mark.parametrize(
    ("task_timeout", "restorer"),
    [(5, "a live worker's sweep"), (MAX_TASK_TIMEOUT, "the replacement, before it consumes")],
    ids=["short pool", "longest pool"],
)
def test_a_killed_workers_tasks_are_back_within_seconds_and_run_before_newer_ones(
    task_timeout: int, restorer: str, app_env: dict[str, str], tmp_path: Path,
    redis_client: redis.Redis, processes: list[AppProcess],
) -> None:
    env = pool_environment(app_env, task_timeout)
    url = env["CELERY_BROKER_URL"]
    deadlines = Deadlines(LIVENESS_TIMEOUT)
    if restorer == "a live worker's sweep":
        # A worker of the same pool that takes nothing from the default queue.
        processes.append(start_worker(env, tmp_path, name="sweeper", queues=("long",)))
    victim = start_worker(env, tmp_path, name="victim")
    processes.append(victim)
    # A message waiting for its ETA (held beyond the prefetch window), a running one, and one
    # prefetched behind it (two per slot).
    send_credit(url, "countdown", work_seconds=0.5, countdown=20)
    send_credit(url, "running", work_seconds=3)
    send_credit(url, "prefetched", work_seconds=0.5)
    victim_keys = keys_of(redis_client, "victim")
    held = victim_keys.unacked
    wait_for(lambda: attempts(redis_client, "running") == [1]
             and redis_client.hlen(held.hash) == 3, 30, what="the victim to hold 3 messages")

    victim.kill_all()  # the container dies: nothing restored, the lease no longer refreshed
    killed_at = time.monotonic()
    newer = ["newer-1", "newer-2"]
    for key in newer:
        send_credit(url, key, work_seconds=0)

    # The lease was refreshed at most a tick before the kill: until it can have expired, no
    # one takes the victim's messages (nobody can tell it from a live worker yet).
    time.sleep(max(0.0, LIVENESS_TIMEOUT - deadlines.tick - 1 - (time.monotonic() - killed_at)))
    assert redis_client.hlen(held.hash) == 3
    if restorer == "a live worker's sweep":
        # Within the promise, whatever the pool's visibility timeout (53 s for the short pool,
        # 2.4 days for the longest), and at the head of the queue, ahead of newer ones. Oldest
        # first only to within a sweep interval (the sweeps' stamps): these three were taken
        # within one, so among themselves in no particular order (test_liveness has the order).
        wait_for(lambda: redis_client.hlen(held.hash) == 0,
                 RECOVERY_PROMISE - (time.monotonic() - killed_at), interval=0.2,
                 what="the victim's messages back on the queue")  # fmt: skip
        queued = queued_keys(redis_client)
        assert sorted(queued[:3]) == sorted(["countdown", "running", "prefetched"])
        assert queued[3:] == newer
    else:
        # ECS starts the replacement later than the lease lives (a Fargate task takes longer to
        # start): it must put the victim's messages back before it takes anything.
        wait_for(lambda: not redis_client.exists(victim_keys.lease), 30, interval=0.2,
                 what="the victim's lease to expire")  # fmt: skip
    processes.append(start_worker(env, tmp_path, name="replacement"))

    first_to_start(redis_client, "running", newer, 60)
    wait_for(lambda: attempts(redis_client, "prefetched") == [1], 30, what="the prefetched one")
    assert attempts(redis_client, *newer) == [0, 0]
    for key in ["countdown", "running", "prefetched", *newer]:
        wait_for(lambda k=key: applied(redis_client, k), 60, what=f"{key} to be applied")
    assert redis_client.hget("ledger:balances", "acct") == str(5 * AMOUNT)  # each once
    # At least once: the running task started twice, the others once.
    assert attempts(redis_client, "running", "prefetched", "countdown") == [2, 1, 1]


def pause_environment(app_env: dict[str, str]) -> dict[str, str]:
    return {**app_env, "CELERY_LIVENESS_TIMEOUT": str(PAUSE_LIVENESS_TIMEOUT)}


def test_a_worker_frozen_for_less_than_its_liveness_timeout_keeps_its_tasks(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    env = pause_environment(app_env)
    url = env["CELERY_BROKER_URL"]
    deadlines = Deadlines(PAUSE_LIVENESS_TIMEOUT)
    # A sweeper of the same pool that takes no task of the default queue.
    sweeper = start_worker(env, tmp_path, name="sweeper", queues=("long",))
    processes.append(sweeper)
    frozen = start_worker(env, tmp_path, name="frozen")
    processes.append(frozen)
    send_credit(url, "frozen-1", work_seconds=2)
    wait_for(lambda: attempts(redis_client, "frozen-1") == [1], 30, what="the task to start")

    # Past the point where the worker, unable to refresh, would give its liveness up, but
    # short of the key's expiry: when it runs again its refresh finds the key, so no one can
    # have taken anything, and nothing is cancelled.
    freeze(frozen)
    time.sleep(deadlines.lost_after + deadlines.tick)
    thaw(frozen)

    wait_for(lambda: applied(redis_client, "frozen-1"), 30, what="the task to complete")
    wait_for(lambda: unacked_of(redis_client, "frozen") == 0, 30, what="its ack")
    time.sleep(deadlines.sweep_interval + 1)  # a sweep that could still take it: none does
    assert attempts(redis_client, "frozen-1") == [1]
    assert redis_client.llen("default") == 0
    assert "liveness lost" not in frozen.logs()
    assert frozen.alive()


def test_a_worker_frozen_past_its_liveness_timeout_loses_its_tasks_and_stops_its_run(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    env = pause_environment(app_env)
    url = env["CELERY_BROKER_URL"]
    work_seconds = 15.0  # below the soft time limit (20 s)
    frozen = start_worker(env, tmp_path, name="frozen")
    processes.append(frozen)
    send_credit(url, "frozen-2", work_seconds=work_seconds)
    wait_for(lambda: attempts(redis_client, "frozen-2") == [1], 30, what="the task to start")
    started_at = time.monotonic()
    task_id = frozen.logs().split("apply_credit[", 1)[1].split("]", 1)[0]
    other = start_worker(env, tmp_path, name="other")
    processes.append(other)

    freeze(frozen)
    # Its lease expires; the other worker's sweep puts the message back and runs it.
    wait_for(lambda: attempts(redis_client, "frozen-2") == [2], 60, interval=0.2,
             what="the other worker to run the task")  # fmt: skip
    thaw(frozen)
    thawed_at = time.monotonic()
    left = work_seconds - (thawed_at - started_at)
    assert left > 1, "the machine was too slow for this test to show anything"

    # Thawed, the worker finds its key gone and stops its run, which had `left` seconds to go,
    # instead of completing the task a second time unnoticed; then it takes a new lease.
    wait_for(lambda: applied(redis_client, "frozen-2"), 60, what="the other worker's run")
    time.sleep(max(0.0, thawed_at + left + 2 - time.monotonic()))
    logs = frozen.logs()
    assert "liveness lost" in logs, logs
    assert f"apply_credit[{task_id}] succeeded" not in logs, logs
    assert "taken it back" not in logs  # it did not even acknowledge it: it was stopped
    # The other worker's run applied the credit; its "succeeded" line follows the result's store.
    wait_for(lambda: f"apply_credit[{task_id}] succeeded" in other.logs(), 30,
             what="the other worker's run to succeed")  # fmt: skip
    assert attempts(redis_client, "frozen-2") == [2]
    assert redis_client.hget("ledger:balances", "acct") == str(AMOUNT)

    # It lives on with a fresh lease, and runs what comes next.
    other.kill_all()
    send_credit(url, "after-thaw", work_seconds=0)
    wait_for(lambda: applied(redis_client, "after-thaw"), 30, what="the thawed worker to work")
    assert frozen.alive()


def test_a_task_revoked_while_its_worker_held_it_does_not_run_on_the_replacement(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = pool_environment(app_env, 5)
    url = env["CELERY_BROKER_URL"]
    victim = start_worker(env, tmp_path, name="victim")
    processes.append(victim)
    credit = {"account": "acct", "amount": AMOUNT}
    # Held as in the crash test above: one waiting for its ETA, one running, one prefetched.
    countdown = send_task(url, "app.tasks.apply_credit", countdown=12,
                          kwargs={**credit, "idempotency_key": "countdown"})
    send_credit(url, "running", work_seconds=3)
    prefetched = send_task(url, "app.tasks.apply_credit",
                           kwargs={**credit, "idempotency_key": "prefetched"})
    revoked = {"countdown": countdown, "prefetched": prefetched}
    victim_keys = keys_of(redis_client, "victim")
    wait_for(lambda: attempts(redis_client, "running") == [1]
             and redis_client.hlen(victim_keys.unacked.hash) == 3, 30,
             what="the victim to hold 3 messages")  # fmt: skip

    # Revoked while the victim holds them: it would skip both when their turn comes.
    # Sent as an operator's `celery control revoke` sends it, from an app of the test broker
    # (the in-process app's producers are bound to another; Celery reads the variable first).
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    Celery().control.revoke(list(revoked.values()))
    wait_for(lambda: "flagged as revoked" in victim.logs(), 10, what="the victim's revoke")
    wait_for(lambda: all(redis_client.zscore(REVOKED_KEY, task_id) for task_id in
                         revoked.values()), 10, what="the revokes to be recorded")  # fmt: skip

    victim.kill_all()  # the container dies with both messages unacknowledged
    wait_for(lambda: not redis_client.exists(victim_keys.lease), 30, interval=0.2,
             what="the victim's lease to expire")  # fmt: skip
    replacement = start_worker(env, tmp_path, name="replacement")
    processes.append(replacement)

    # The replacement puts the victim's messages back and takes them: it runs the running one
    # again and discards the revoked ones, acknowledging them.
    wait_for(lambda: applied(redis_client, "running"), 60, what="the running task's rerun")
    wait_for(lambda: all(f"Discarding revoked task: app.tasks.apply_credit[{task_id}]"
                         in replacement.logs() for task_id in revoked.values())
             or any(attempts(redis_client, *revoked)), 30,
             what="the replacement to take the revoked tasks")  # fmt: skip
    wait_for(lambda: redis_client.llen("default") == 0
             and unacked_of(redis_client, "replacement") == 0, 30,
             what="every message to be taken and settled")  # fmt: skip
    assert attempts(redis_client, *revoked) == [0, 0], replacement.logs()
    assert redis_client.hget("ledger:balances", "acct") == str(AMOUNT)


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_worker_whose_pool_the_watchdog_cannot_kill_refuses_to_start(
    pool: str, app_env: dict[str, str], tmp_path: Path,
) -> None:
    # Those pools run tasks in the worker's main process: kill_pool_processes would find no
    # process to kill, and the watchdog would let a task run on past the lease.
    argv = python_argv([*worker_command("refused", ("default",), 1), "--pool", pool])
    worker = start_process("refused", argv, app_env, tmp_path)
    try:
        code = worker.wait(60)
    finally:
        worker.kill_all()
    logs = worker.logs()
    assert code != 0, logs
    assert f"worker pool {pool!r} (celery worker --pool, or the worker_pool setting)" in logs
    assert "use --pool prefork" in logs
