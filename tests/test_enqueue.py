"""The enqueue command (what an EventBridge schedule runs): it works and fails cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import redis

from app.schedule import SCHEDULE
from testkit.redis_server import free_port
from tests.support import AppProcess, start_worker, wait_for

ENTRY = SCHEDULE[0]


def enqueue(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.enqueue", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def queued(client: redis.Redis, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_entry_is_enqueued_on_its_queue(app_env: dict[str, str], redis_client: redis.Redis) -> None:
    result = enqueue(app_env, "--entry", ENTRY.name)

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "enqueued"
    (message,) = queued(redis_client, ENTRY.queue)
    assert message["headers"]["task"] == ENTRY.task
    assert message["headers"]["id"] == outcome["id"]


def test_same_slot_twice_runs_the_task_once(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    slot = "2026-11-24T02:30:00Z"
    first = enqueue(app_env, "--entry", ENTRY.name, "--slot", slot)
    second = enqueue(app_env, "--entry", ENTRY.name, "--slot", slot)
    other_slot = enqueue(app_env, "--entry", ENTRY.name, "--slot", "2026-11-24T03:30:00Z")

    assert [r.returncode for r in (first, second, other_slot)] == [0, 0, 0]
    assert json.loads(first.stdout)["status"] == "enqueued"
    assert json.loads(second.stdout)["status"] == "duplicate"
    assert json.loads(other_slot.stdout)["status"] == "enqueued"
    assert len(queued(redis_client, ENTRY.queue)) == 2

    processes.append(start_worker(app_env, tmp_path))
    wait_for(lambda: redis_client.exists("maintenance:last-purge"), 30, what="the task run")
    wait_for(lambda: redis_client.llen(ENTRY.queue) == 0, 30, what="an empty queue")
    # One run per slot: both results, and no more (the runs' ids are the slots' own).
    wait_for(lambda: len(redis_client.keys("celery-task-meta-*")) == 2, 30, what="both results")
    assert len(redis_client.keys("celery-task-meta-*")) == 2


def test_task_with_kwargs(app_env: dict[str, str], redis_client: redis.Redis) -> None:
    kwargs = {"idempotency_key": "cli-1", "account": "a", "amount": 3}
    result = enqueue(app_env, "app.tasks.apply_credit", "--kwargs", json.dumps(kwargs))

    assert result.returncode == 0, result.stderr
    (message,) = queued(redis_client, "default")
    assert message["headers"]["task"] == "app.tasks.apply_credit"


def test_unknown_task_fails_with_status_2(app_env: dict[str, str], redis_client) -> None:
    result = enqueue(app_env, "app.tasks.does_not_exist")

    assert result.returncode == 2
    assert "unknown task 'app.tasks.does_not_exist'" in result.stderr
    assert redis_client.dbsize() == 0


def test_unknown_entry_and_bad_kwargs_fail_with_status_2(app_env: dict[str, str]) -> None:
    unknown = enqueue(app_env, "--entry", "no-such-entry")
    bad_json = enqueue(app_env, "app.tasks.noop", "--kwargs", "{not json")
    not_object = enqueue(app_env, "app.tasks.noop", "--kwargs", "[1, 2]")

    assert unknown.returncode == 2 and "unknown entry 'no-such-entry'" in unknown.stderr
    assert bad_json.returncode == 2 and "--kwargs is not valid JSON" in bad_json.stderr
    assert not_object.returncode == 2 and "must be a JSON object" in not_object.stderr


def test_unreachable_broker_fails_with_status_1(app_env: dict[str, str]) -> None:
    env = {**app_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = enqueue(env, "--entry", ENTRY.name, "--slot", "s")

    assert result.returncode == 1
    assert "unreachable after 4 attempts" in result.stderr
    assert result.stdout == ""


def test_unverified_tls_is_refused(app_env: dict[str, str]) -> None:
    env = {**app_env, "CELERY_BROKER_URL": "rediss://:token@broker.example:6379/0"}
    result = enqueue(env, "app.tasks.noop")

    assert result.returncode == 2
    assert "CELERY_BROKER_URL: a rediss:// URL must end with ?ssl_cert_reqs=required" in (
        result.stderr
    )


def test_unreachable_broker_without_slot_fails_with_status_1(app_env: dict[str, str]) -> None:
    """No slot claim first: the publish itself must hit the bounded retries, not hang."""
    env = {**app_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = enqueue(env, "app.tasks.noop")

    assert result.returncode == 1, result.stderr
    assert "unreachable after 4 attempts" in result.stderr


def test_a_failed_publish_releases_the_slot_so_a_redelivery_can_publish_it(
    app_env: dict[str, str], redis_client: redis.Redis, redis_url: str
) -> None:
    # A broker that takes the slot's claim (SET) but refuses the publish (LPUSH): the claim must
    # not outlive the failure, or EventBridge's retry of the same slot would find it taken and
    # the slot would never run.
    redis_client.acl_setuser(
        "no-publish", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-lpush"],
    )  # fmt: skip
    port = urlsplit(redis_url).port
    refused = {**app_env, "CELERY_BROKER_URL": f"redis://no-publish:pw@127.0.0.1:{port}/0"}
    slot = "2026-12-01T03:00:00Z"
    try:
        failed = enqueue(refused, "--entry", ENTRY.name, "--slot", slot)
    finally:
        redis_client.acl_deluser("no-publish")

    assert failed.returncode == 1, failed.stderr
    # The transport publishes with a script (app.transport.PUBLISH): its LPUSH is refused.
    assert "The user executing the script can't run this command" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert redis_client.keys("enqueue:slot:*") == []  # released
    assert redis_client.llen(ENTRY.queue) == 0

    redelivered = enqueue(app_env, "--entry", ENTRY.name, "--slot", slot)
    assert redelivered.returncode == 0, redelivered.stderr
    assert json.loads(redelivered.stdout)["status"] == "enqueued"
    assert len(queued(redis_client, ENTRY.queue)) == 1
