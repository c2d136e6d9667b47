"""The enqueue command (what an EventBridge schedule runs): it works and fails cleanly."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import redis

from celery_ecs.schedule import PeriodicEntry
from infra.config import load
from infra.containers import CELERY_APP, ENQUEUE_SCRIPT, enqueue_command
from testkit.processes import ROOT, python_argv
from testkit.redis_server import free_port
from tests.support import AppProcess, start_worker, wait_for

#: The default stack's first entry (hourly purge on "default").
ENTRY = load({}).schedule[0]


def enqueue(
    env: dict[str, str], *args: str, app: str = CELERY_APP, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The enqueue command as the EventBridge target runs it (``celery-ecs-enqueue``)."""
    return subprocess.run(
        python_argv([ENQUEUE_SCRIPT, *(("--app", app) if app else ()), *args]),
        env=env, capture_output=True, text=True, timeout=60, cwd=cwd,
    )


def scheduled(entry: PeriodicEntry, slot: str | None = None) -> list[str]:
    """The arguments an EventBridge rule of ``entry`` runs the command with (with ``slot`` for
    the event's time; without, as a person runs it by hand)."""
    _script, *arguments = enqueue_command(entry, slot or "")
    return arguments if slot else arguments[:-2]


def queued(client: redis.Redis, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_entry_is_enqueued_on_its_queue(app_env: dict[str, str], redis_client: redis.Redis) -> None:
    result = enqueue(app_env, *scheduled(ENTRY))

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
    first = enqueue(app_env, *scheduled(ENTRY, slot))
    second = enqueue(app_env, *scheduled(ENTRY, slot))
    other_slot = enqueue(app_env, *scheduled(ENTRY, "2026-11-24T03:30:00Z"))

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


def test_bad_arguments_fail_with_status_2(app_env: dict[str, str]) -> None:
    bad_json = enqueue(app_env, "app.tasks.noop", "--kwargs", "{not json")
    not_object = enqueue(app_env, "app.tasks.noop", "--kwargs", "[1, 2]")
    not_list = enqueue(app_env, "app.tasks.noop", "--args", '{"a": 1}')
    empty_name = enqueue(app_env, "app.tasks.noop", "--name", " ", "--slot", "s")

    assert bad_json.returncode == 2 and "--kwargs is not valid JSON" in bad_json.stderr
    assert not_object.returncode == 2 and "--kwargs must be a JSON object" in not_object.stderr
    assert not_list.returncode == 2 and "--args must be a JSON list" in not_list.stderr
    assert empty_name.returncode == 2 and "--name is empty" in empty_name.stderr


def test_an_entry_s_arguments_and_queue_reach_the_message(
    app_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """What the stack's schedule says of an entry is on the command line, and in the message."""
    entry = PeriodicEntry(
        "credit", "app.tasks.apply_credit", ENTRY.schedule,
        args=("cli-2", "bob"), kwargs={"amount": 7}, queue="long",
    )  # fmt: skip
    result = enqueue(app_env, *scheduled(entry, "2026-11-24T02:30:00Z"))

    assert result.returncode == 0, result.stderr
    (message,) = queued(redis_client, "long")
    assert message["headers"]["task"] == "app.tasks.apply_credit"
    assert message["properties"]["body_encoding"] == "base64"
    assert json.loads(base64.b64decode(message["body"]))[:2] == [["cli-2", "bob"], {"amount": 7}]
    assert redis_client.llen("default") == 0


def test_slots_are_claimed_per_entry_name(
    app_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """Two entries running the same task at the same slot (other arguments) both publish; the
    same entry twice publishes once."""
    slot = "2026-11-24T02:30:00Z"
    first = PeriodicEntry("purge-a", ENTRY.task, ENTRY.schedule, queue="default")
    second = PeriodicEntry("purge-b", ENTRY.task, ENTRY.schedule, queue="default")
    outcomes = [
        json.loads(enqueue(app_env, *scheduled(entry, slot)).stdout)["status"]
        for entry in (first, second, first)
    ]

    assert outcomes == ["enqueued", "enqueued", "duplicate"]
    assert sorted(redis_client.keys("enqueue:slot:*")) == [
        f"enqueue:slot:purge-a:{slot}", f"enqueue:slot:purge-b:{slot}",
    ]  # fmt: skip


def test_unreachable_broker_fails_with_status_1(app_env: dict[str, str]) -> None:
    env = {**app_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = enqueue(env, *scheduled(ENTRY, "s"))

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
        failed = enqueue(refused, *scheduled(ENTRY, slot))
    finally:
        redis_client.acl_deluser("no-publish")

    assert failed.returncode == 1, failed.stderr
    # The transport publishes with a script (celery_ecs.transport.PUBLISH): its LPUSH is refused.
    assert "The user executing the script can't run this command" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert redis_client.keys("enqueue:slot:*") == []  # released
    assert redis_client.llen(ENTRY.queue) == 0

    redelivered = enqueue(app_env, *scheduled(ENTRY, slot))
    assert redelivered.returncode == 0, redelivered.stderr
    assert json.loads(redelivered.stdout)["status"] == "enqueued"
    assert len(queued(redis_client, ENTRY.queue)) == 1


def test_the_app_is_named_and_equipped(app_env: dict[str, str], tmp_path: Path) -> None:
    """The command publishes through the app it is given, and only an equipped one: the slot
    claims, the countdown limit and the transport are the runtime's."""
    (tmp_path / "plain.py").write_text("from celery import Celery\napp = Celery('plain')\n")
    env = {**app_env, "PYTHONPATH": str(ROOT)}  # the runtime from this checkout, not the cwd

    unnamed = enqueue(app_env, ENTRY.task, "--queue", ENTRY.queue, app="")
    from_env = enqueue({**app_env, "CELERY_APP": CELERY_APP}, ENTRY.task, "--queue", ENTRY.queue,
                       app="")  # fmt: skip
    missing = enqueue(app_env, ENTRY.task, "--queue", ENTRY.queue, app="no_such_module")
    # The app's module is found in the current directory, as `celery --app` finds it.
    plain = enqueue(env, "app.tasks.noop", app="plain", cwd=tmp_path)

    assert unnamed.returncode == 2 and "name the Celery app with --app" in unnamed.stderr
    assert from_env.returncode == 0, from_env.stderr
    assert missing.returncode == 2 and "--app no_such_module: cannot import it" in missing.stderr
    assert plain.returncode == 2, plain.stderr
    assert "'plain' was not given to celery_ecs.equip" in plain.stderr
