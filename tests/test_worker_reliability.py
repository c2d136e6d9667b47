"""What the worker guarantees when it is stopped, loses a pool process or its broker connection.

Real redis-server, real `celery worker` processes started as the ECS task definition starts
them. Tasks are `app.tasks.apply_credit`: it counts its attempts and applies its effect once
per idempotency key.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis

from app.liveness import unacked_count
from tests.support import AppProcess, send_task, start_worker, wait_for


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
