"""Beat: a due entry is sent once, and a second beat (an overlapping deploy) sends nothing; its
entries are the stack's, read from CELERY_BEAT_SCHEDULE_JSON at start.

Real redis-server and real `celery beat` processes. Beat runs celery-redbeat: schedule state
and a lock live in Redis.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from celery_ecs.schedule import Every, PeriodicEntry, entries_to_json
from celery_ecs.settings import BEAT_SCHEDULE
from infra.config import load
from infra.containers import BEAT_COMMAND
from testkit.processes import python_argv
from tests.support import AppProcess, start_process, wait_for

#: The default stack's schedule, as its beat task definition carries it.
SCHEDULE = load({}).schedule
HOURLY = next(entry for entry in SCHEDULE if isinstance(entry.schedule, Every))


def start_beat(
    env: dict[str, str], workdir: Path, name: str,
    schedule: tuple[PeriodicEntry, ...] = SCHEDULE,
) -> AppProcess:  # fmt: skip
    env = {**env, BEAT_SCHEDULE: entries_to_json(schedule)}
    return start_process(name, python_argv(BEAT_COMMAND), env, workdir)


def sent_tasks(client: redis.Redis, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]


def make_overdue(client: redis.Redis, entry_name: str) -> None:
    """Pretend the entry last ran two intervals ago, as after a long beat outage."""
    key = f"redbeat:{entry_name}"
    meta = json.loads(client.hget(key, "meta"))
    past = datetime.now(UTC) - timedelta(seconds=2 * HOURLY.schedule.seconds)
    meta["last_run_at"] = {
        "__type__": "datetime", "year": past.year, "month": past.month, "day": past.day,
        "hour": past.hour, "minute": past.minute, "second": past.second,
        "microsecond": 0, "timezone": "UTC",
    }
    client.hset(key, "meta", json.dumps(meta))


def install_schedule(env: dict[str, str], workdir: Path, client: redis.Redis) -> None:
    """Run beat once so it stores the schedule, then stop it (releasing its lock)."""
    beat = start_beat(env, workdir, "beat-setup")
    try:
        wait_for(lambda: client.exists(f"redbeat:{HOURLY.name}"), 30, what="the stored schedule")
        # Started, not starting: redbeat stores the schedule, then takes the lock, and only then
        # records it; a beat stopped in between cannot release the lock (it expires instead).
        wait_for(lambda: "Acquired lock" in beat.logs(), 30, what="the setup beat's lock")
    finally:
        beat.signal(signal.SIGTERM)
        beat.wait(timeout=30)
    assert not client.exists("redbeat::lock")
    assert sent_tasks(client, HOURLY.queue) == []  # a new entry waits one interval


def test_due_entry_is_sent_once(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    install_schedule(app_env, tmp_path, redis_client)
    make_overdue(redis_client, HOURLY.name)

    beat = start_beat(app_env, tmp_path, "beat")
    processes.append(beat)
    wait_for(lambda: sent_tasks(redis_client, HOURLY.queue), 30, what="the due entry")
    time.sleep(6)  # more than one scheduler tick (beat_max_loop_interval = 5 s)

    assert sent_tasks(redis_client, HOURLY.queue) == [HOURLY.task]
    # Nobody learns the ids of what beat sends: its tasks store no result.
    [raw] = redis_client.lrange(HOURLY.queue, 0, -1)
    assert json.loads(raw)["headers"]["ignore_result"] is True
    assert (tmp_path / "celery-beat.heartbeat").exists()


def test_second_beat_waits_for_the_lock_and_sends_nothing(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    install_schedule(app_env, tmp_path, redis_client)
    make_overdue(redis_client, HOURLY.name)

    first = start_beat(app_env, tmp_path, "beat-first")
    processes.append(first)
    wait_for(lambda: sent_tasks(redis_client, HOURLY.queue), 30, what="the due entry")
    second = start_beat(app_env, tmp_path, "beat-second")
    processes.append(second)
    make_overdue(redis_client, HOURLY.name)  # due again: whoever holds the lock sends it
    wait_for(lambda: len(sent_tasks(redis_client, HOURLY.queue)) == 2, 30, what="the resend")
    time.sleep(6)

    assert sent_tasks(redis_client, HOURLY.queue) == [HOURLY.task, HOURLY.task]
    assert "Acquired lock" in first.logs()
    assert "Acquired lock" not in second.logs()

    # A deploy: the old beat stops and releases the lock; the waiting one takes over at once.
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    wait_for(lambda: "Acquired lock" in second.logs(), 30, what="the second beat to take over")


def test_an_entry_s_queue_and_arguments_come_from_the_environment(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    """An entry the example app knows nothing of: the stack's JSON alone makes beat send it."""
    entry = PeriodicEntry(
        "credit-every-hour", "app.tasks.apply_credit", Every(3600),
        args=("beat-1", "carol"), kwargs={"amount": 2}, queue="long",
    )  # fmt: skip
    setup = start_beat(app_env, tmp_path, "beat-setup", (entry,))
    wait_for(lambda: "Acquired lock" in setup.logs(), 30, what="the setup beat's lock")
    setup.signal(signal.SIGTERM)
    setup.wait(timeout=30)
    assert not redis_client.exists(f"redbeat:{HOURLY.name}")  # only the environment's entries
    make_overdue(redis_client, entry.name)

    processes.append(start_beat(app_env, tmp_path, "beat", (entry,)))
    wait_for(lambda: sent_tasks(redis_client, "long"), 30, what="the due entry")
    [raw] = redis_client.lrange("long", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "app.tasks.apply_credit"
    body = json.loads(base64.b64decode(message["body"]))
    assert body[:2] == [["beat-1", "carol"], {"amount": 2}]


def test_a_malformed_schedule_stops_beat_naming_the_entry_and_key(
    app_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**app_env, BEAT_SCHEDULE: json.dumps(
        [{"name": "x", "task": "app.tasks.noop", "cron": "61 * * *", "queue": "default"}]
    )}  # fmt: skip
    beat = start_process("beat-bad", python_argv(BEAT_COMMAND), env, tmp_path)
    assert beat.wait(timeout=60) != 0
    assert "CELERY_BEAT_SCHEDULE_JSON: [0].cron: '61 * * *' has 4 fields, not 5" in beat.logs()
