"""What the worker guarantees when it is stopped, loses a pool process or its broker connection.

Real redis-server, real `celery worker` processes started as the ECS task definition starts
them. Tasks are `app.tasks.apply_credit`: it counts its attempts and applies its effect once
per idempotency key.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from kombu.common import QoS

from celery_ecs.consumer import HeldMessagesQoS
from celery_ecs.liveness import unacked_count
from infra.containers import CELERY_APP
from testkit.processes import python_argv
from tests.support import ROOT, AppProcess, send_task, start_worker, wait_for


def send_credit(broker_url: str, key: str, work_seconds: float) -> None:
    send_task(
        broker_url, "app.tasks.apply_credit",
        kwargs={"idempotency_key": key, "account": "acct", "amount": 10,
                "work_seconds": work_seconds},
    )


def attempts(client: redis.Redis, key: str) -> int:
    return int(client.get(f"attempts:{key}") or 0)


def unacked(client: redis.Redis) -> int:
    return unacked_count(client, "default")


def test_sigterm_lets_the_running_task_finish(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess]
) -> None:
    worker = start_worker(app_env, tmp_path)
    processes.append(worker)
    send_credit(app_env["CELERY_BROKER_URL"], "term-1", work_seconds=2)
    wait_for(lambda: attempts(redis_client, "term-1") == 1, 30, what="the task to start")

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0, worker.logs()

    assert redis_client.hget("ledger:balances", "acct") == "10"
    assert attempts(redis_client, "term-1") == 1
    assert unacked(redis_client) == 0
    assert redis_client.llen("default") == 0


def test_a_line_per_task_only_when_asked(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    worker = start_worker({**app_env, "APP_LOG_TASKS": "false"}, tmp_path)
    processes.append(worker)
    send_credit(app_env["CELERY_BROKER_URL"], "quiet-1", work_seconds=0)
    wait_for(lambda: redis_client.hget("ledger:balances", "acct") == "10", 30, what="the credit")
    wait_for(lambda: unacked(redis_client) == 0, 30, what="the ack")

    logs = worker.logs()
    assert "ready." in logs  # the worker's own lines are still there
    assert "apply_credit[" not in logs, logs  # Celery's received and succeeded lines are not


def test_killed_pool_process_requeues_the_task(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess]
) -> None:
    worker = start_worker(app_env, tmp_path)
    processes.append(worker)
    send_credit(app_env["CELERY_BROKER_URL"], "child-1", work_seconds=2)
    wait_for(lambda: attempts(redis_client, "child-1") == 1, 30, what="the task to start")

    # The OOM killer takes the pool process; the worker lives on and must requeue the task
    # (task_reject_on_worker_lost with acks_late) instead of acknowledging it as failed.
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)

    wait_for(lambda: attempts(redis_client, "child-1") == 2, 30, what="the requeued run")
    wait_for(lambda: redis_client.hget("ledger:balances", "acct") == "10", 30, what="the credit")
    assert worker.alive()


def test_duplicate_delivery_applies_the_effect_once(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess]
) -> None:
    processes.append(start_worker(app_env, tmp_path, concurrency=2))
    send_credit(app_env["CELERY_BROKER_URL"], "dup-1", work_seconds=0.5)
    send_credit(app_env["CELERY_BROKER_URL"], "dup-1", work_seconds=0.5)  # delivered twice

    wait_for(lambda: attempts(redis_client, "dup-1") == 2, 30, what="both runs")
    wait_for(lambda: unacked(redis_client) == 0 and redis_client.llen("default") == 0, 30,
             what="both acks")
    assert redis_client.hget("ledger:balances", "acct") == "10"



def test_lost_broker_connection_is_retried_and_the_running_task_redelivered(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    # A free slot keeps the worker listening on the broker, so it notices the loss at once. (A
    # worker busy on every slot notices only when a slot frees; the finished task's ack then
    # goes through a fresh connection and nothing runs twice.)
    worker = start_worker(app_env, tmp_path, concurrency=2)
    processes.append(worker)
    send_credit(app_env["CELERY_BROKER_URL"], "conn-1", work_seconds=3)
    wait_for(lambda: attempts(redis_client, "conn-1") == 1, 30, what="the task to start")

    # What a failover or a network blip does to the worker: every connection drops at once.
    assert redis_client.client_kill_filter(_type="normal", skipme=True) > 0

    # The worker reconnects instead of exiting; the run that lost its connection is cancelled
    # and its message restored, so the task runs again and the credit is still applied once.
    wait_for(lambda: attempts(redis_client, "conn-1") == 2, 30, what="the redelivered run")
    wait_for(lambda: redis_client.hget("ledger:balances", "acct") == "10", 30, what="the credit")
    wait_for(lambda: unacked(redis_client) == 0 and redis_client.llen("default") == 0, 30,
             what="the ack")  # fmt: skip
    # Had the first run not been cancelled, it would finish within its 3 s of work: give it
    # that long, and more, to show up as a second success.
    time.sleep(3 + 2)
    assert worker.alive()
    logs = worker.logs()
    assert "Connection to broker lost" in logs
    assert logs.count("succeeded") == 1, logs  # the first run was cancelled, not finished
    assert attempts(redis_client, "conn-1") == 2


# --- Countdown/ETA bursts -------------------------------------------------------------------

#: The burst: more messages due at one second than a worker may hold, by far.
BURST = 1000
#: Per pool slot, and slots: the worker may hold ETA_HELD_PER_SLOT x ETA_CONCURRENCY messages.
ETA_HELD_PER_SLOT = 3
ETA_CONCURRENCY = 2


def test_the_prefetch_counter_comes_back_to_the_prefetch_after_a_burst_at_the_limit() -> None:
    """Celery raises the count for each countdown/ETA message and lowers it when the message is
    due; the limit caps the raises. kombu's counter loses the capped raises and ends at 1,
    ``HeldMessagesQoS`` at the prefetch it started from."""
    sent: list[int] = []

    def burst(qos: QoS) -> int:
        for _ in range(10):
            qos.increment_eventually()
        assert qos.value == 6  # capped at the limit
        for _ in range(10):
            qos.decrement_eventually()
        return qos.value

    assert burst(QoS(lambda prefetch_count: sent.append(prefetch_count), 2, max_prefetch=6)) == 1
    ours = HeldMessagesQoS(lambda prefetch_count: sent.append(prefetch_count), 2, max_prefetch=6)
    assert burst(ours) == 2
    ours.update()
    assert sent == [2]  # what the channel is told
    # Celery sets the value itself when it restores a prefetch it reduced after a lost
    # connection: counted from there.
    ours.value = 1
    ours.increment_eventually()
    assert ours.value == 2
    # 0 means no prefetch limit at all (kombu's convention): raises and lowerings keep it.
    unlimited = HeldMessagesQoS(lambda prefetch_count: None, 0, max_prefetch=6)
    assert unlimited.increment_eventually() == unlimited.decrement_eventually() == 0


class HeldSampler(threading.Thread):
    """Samples how many messages the pool's workers hold, every 10 ms, until stopped."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.most = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.most = max(self.most, unacked(self.client))
            self.samples += 1
            self.done.wait(0.01)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.most


def prefetch_count(env: dict[str, str]) -> int:
    """The worker's current prefetch count, as ``celery inspect stats`` reports it."""
    command = ["celery", "--app", CELERY_APP, "inspect", "stats", "--json", "--timeout", "10"]
    argv = python_argv(command)
    output = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    (stats,) = json.loads(output.stdout).values()
    return int(stats["prefetch_count"])


def test_a_burst_of_eta_tasks_due_at_once_runs_each_exactly_once_within_the_limit(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    """Every message is due at the same second. The worker holds at most held per slot x
    concurrency of them (Celery's worker_eta_task_limit); the rest wait on the queue, taken as
    slots free. The visibility timeout is the app's minimum for these limits (held per slot x
    hard limit + max countdown, plus 1 s): no message stays unacknowledged that long, so the
    sweep takes none back from the live worker, and each task runs once."""
    hard_limit, max_countdown = 2, 60
    limit = ETA_HELD_PER_SLOT * ETA_CONCURRENCY
    env = {
        **app_env,
        "CELERY_TASK_SOFT_TIME_LIMIT": "1", "CELERY_TASK_TIME_LIMIT": str(hard_limit),
        "CELERY_MAX_COUNTDOWN": str(max_countdown),
        "CELERY_HELD_PER_SLOT": str(ETA_HELD_PER_SLOT),
        "CELERY_VISIBILITY_TIMEOUT": str(ETA_HELD_PER_SLOT * hard_limit + max_countdown + 1),
        "APP_LOG_TASKS": "false",
    }  # fmt: skip
    broker_url = env["CELERY_BROKER_URL"]
    sampler = HeldSampler(redis.Redis.from_url(broker_url))
    sampler.start()

    from app.celery_app import app

    # The burst is queued before the worker starts, due well after: a loaded machine may take
    # many seconds to publish a thousand messages and to start a worker, and the worker must
    # still receive them before they are due (an overdue message is not held for its ETA).
    due_at = math.ceil(time.time()) + 45
    due = datetime.fromtimestamp(due_at, UTC)
    keys = [f"eta-{index}" for index in range(BURST)]
    with app.connection_for_write(broker_url) as connection:
        for key in keys:
            app.send_task(
                "app.tasks.apply_credit", connection=connection, ignore_result=True, eta=due,
                kwargs={"idempotency_key": key, "account": "acct", "amount": 1},
            )  # fmt: skip
    processes.append(start_worker(env, tmp_path, concurrency=ETA_CONCURRENCY))

    # Until the burst is due, the worker holds its limit and no more; the rest stay queued.
    wait_for(lambda: unacked(redis_client) >= limit, 30, what="the worker to fill its limit")
    time.sleep(1)  # time to take more, were it allowed to
    assert unacked(redis_client) == limit
    assert redis_client.llen("default") == BURST - limit
    assert attempts(redis_client, keys[0]) == 0, "an ETA task ran early"
    assert time.time() < due_at, "the machine took longer than the countdown: make it longer"

    wait_for(lambda: redis_client.hget("ledger:balances", "acct") == str(BURST), 180,
             what="every credit")  # fmt: skip
    wait_for(lambda: unacked(redis_client) == 0 and redis_client.llen("default") == 0, 30,
             what="every ack")  # fmt: skip
    most_held = sampler.stop()

    runs = [attempts(redis_client, key) for key in keys]
    assert [key for key, count in zip(keys, runs, strict=True) if count != 1] == []
    assert most_held <= limit, (most_held, sampler.samples)
    # Once the burst is over the worker takes its own prefetch again (concurrency x 1), not
    # less: kombu's counter would have drifted down to 1 (celery_ecs.consumer.HeldMessagesQoS).
    assert prefetch_count(env) == ETA_CONCURRENCY
