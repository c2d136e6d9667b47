"""Queue metrics (``app.metrics``): the EMF lines, exact backlogs, ages and worker counts against a
real Redis with known contents, the publish-time stamp on every path that publishes, beat's
heartbeat, a real worker."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import redis

import app.celery_app
import app.tasks
from app.celery_app import app as celery_app
from app.metrics import (
    BEAT_HEARTBEAT_INTERVAL_SECONDS,
    PUBLISHED_AT_HEADER,
    WORKER_TTL_SECONDS,
    BeatHeartbeat,
    Metric,
    QueueMetricsPublisher,
    emf_line,
    published_at,
    workers_key,
    write_to_stdout,
)
from app.transport import WAKE_PREFIX
from devtools.processes import start_process
from devtools.redis_server import free_port
from infra.containers import worker_command
from tests.support import AppProcess, app_environment, send_task, wait_for

NAMESPACE = "CeleryEcs/test"
NOW = 1_700_000_000.0


def parse_emf(line: str) -> dict[str, Any]:
    """Check ``line`` is one EMF document as CloudWatch requires it; return its members other
    than the metadata (dimension values and metric values)."""
    document = json.loads(line)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    names = [metric["Name"] for metric in directive["Metrics"]]
    (dimensions,) = directive["Dimensions"]
    # EMF: every dimension and metric named in the metadata is a top-level member, and nothing
    # else is (so no stray member becomes a log-only field by mistake).
    assert set(document) == {"_aws", *dimensions, *names}
    for metric in directive["Metrics"]:
        assert metric["StorageResolution"] in (1, 60)
        assert isinstance(document[metric["Name"]], (int, float))
    return {key: value for key, value in document.items() if key != "_aws"}


def test_emf_line_is_one_line_of_a_high_resolution_document() -> None:
    line = emf_line(
        NAMESPACE,
        {"Queue": "default"},
        [Metric("Backlog", 12, "Count"), Metric("OldestMessageAge", 4.5, "Seconds")],
        1_700_000_000_123,
    )
    assert "\n" not in line
    document = json.loads(line)
    assert document["_aws"] == {
        "Timestamp": 1_700_000_000_123,
        "CloudWatchMetrics": [
            {
                "Namespace": NAMESPACE,
                "Dimensions": [["Queue"]],
                "Metrics": [
                    {"Name": "Backlog", "Unit": "Count", "StorageResolution": 1},
                    {"Name": "OldestMessageAge", "Unit": "Seconds", "StorageResolution": 1},
                ],
            }
        ],
    }
    assert parse_emf(line) == {"Queue": "default", "Backlog": 12, "OldestMessageAge": 4.5}


def test_lines_go_straight_to_file_descriptor_1(capfd: pytest.CaptureFixture[str]) -> None:
    line = emf_line(NAMESPACE, {"Pool": "p"}, [Metric("Workers", 1, "Count")], 1)
    write_to_stdout(line)
    out, err = capfd.readouterr()
    assert out == line + "\n" and err == ""


def publish_at(broker_url: str, when: float, queue: str, priority: int | None = None) -> None:
    """Publish a no-op through the app's message factory as if the clock read ``when``."""
    options: dict[str, object] = {"queue": queue}
    if priority is not None:
        options["priority"] = priority
    with mock.patch.object(app.celery_app, "time", SimpleNamespace(time=lambda: when)):
        send_task(broker_url, "app.tasks.noop", **options)


def publisher_for(
    broker_url: str, lines: list[str], *, worker: str = "pool@a", now: float = NOW
) -> QueueMetricsPublisher:
    return QueueMetricsPublisher(
        celery_app,
        "pool",
        worker,
        ["default", "long"],
        NAMESPACE,
        broker_url=broker_url,
        write=lines.append,
        clock=lambda: now,
    )


def lists(client: redis.Redis) -> dict[str, list[str]]:
    """Every list in Redis (the queues) with its contents."""
    return {
        key: client.lrange(key, 0, -1) for key in client.keys("*") if client.type(key) == "list"
    }


def by_dimension(lines: list[str]) -> dict[str, dict[str, Any]]:
    documents = [parse_emf(line) for line in lines]
    return {str(doc.get("Queue") or f"pool:{doc['Pool']}"): doc for doc in documents}


def test_backlog_and_oldest_age_are_exact_over_every_priority_list(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # kombu keeps one list per priority step (0, 3, 6, 9); 5 rounds down to 3. The oldest
    # message waits in a lower-priority list, behind newer ones of a higher priority.
    publish_at(redis_url, NOW - 100, "default", priority=9)
    publish_at(redis_url, NOW - 90, "default")
    publish_at(redis_url, NOW - 80, "default", priority=5)
    publish_at(redis_url, NOW - 10, "default")
    publish_at(redis_url, NOW - 5, "default", priority=9)
    publish_at(redis_url, NOW - 30, "long")
    assert set(redis_client.keys("default*")) == {"default", "default\x06\x163", "default\x06\x169"}
    before = lists(redis_client)

    lines: list[str] = []
    publisher = publisher_for(redis_url, lines)
    publisher.publish()
    assert by_dimension(lines) == {
        "default": {"Queue": "default", "Backlog": 5, "OldestMessageAge": 100},
        "long": {"Queue": "long", "Backlog": 1, "OldestMessageAge": 30},
        "pool:pool": {"Pool": "pool", "Workers": 1},
    }
    assert lists(redis_client) == before, "reading removes, adds and reorders nothing"


def test_the_age_is_that_of_the_next_message_of_each_list(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """kombu LPUSHes and BRPOPs: the right end of a list is its oldest message."""
    for age in (300, 200, 100):
        publish_at(redis_url, NOW - age, "default")
    redis_client.rpop("default")  # what a worker's BRPOP takes: the 300 s old one
    lines: list[str] = []
    publisher_for(redis_url, lines).publish()
    assert by_dimension(lines)["default"]["OldestMessageAge"] == 200


def test_unstamped_messages_never_break_the_metric(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # An older publisher's message (no stamp) and something that is not a kombu message at all.
    redis_client.rpush("long", json.dumps({"body": "", "headers": {"task": "x"}}))
    redis_client.rpush("long\x06\x169", "not json")
    lines: list[str] = []
    publisher_for(redis_url, lines).publish()
    assert by_dimension(lines)["long"] == {"Queue": "long", "Backlog": 2}, "no age, no guess"

    publish_at(redis_url, NOW - 42, "long", priority=3)
    lines.clear()
    publisher_for(redis_url, lines).publish()
    assert by_dimension(lines)["long"] == {"Queue": "long", "Backlog": 3, "OldestMessageAge": 42}


def test_empty_and_missing_queues_count_zero_and_create_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    lines: list[str] = []
    publisher_for(redis_url, lines).publish()
    documents = by_dimension(lines)
    assert documents["default"] == {"Queue": "default", "Backlog": 0, "OldestMessageAge": 0}
    assert documents["long"] == {"Queue": "long", "Backlog": 0, "OldestMessageAge": 0}
    assert lists(redis_client) == {}, "no queue is created"
    assert 0 < redis_client.ttl(workers_key("pool")) <= WORKER_TTL_SECONDS


def test_workers_counts_the_pools_live_workers(redis_url: str) -> None:
    lines: list[str] = []
    publisher_for(redis_url, lines, worker="pool@a").publish()
    publisher_for(redis_url, lines, worker="pool@b", now=NOW + 5).publish()
    publisher_for(redis_url, lines, worker="pool@a", now=NOW + 10).publish()  # again: still 2
    assert [doc["Workers"] for doc in map(parse_emf, lines) if "Workers" in doc] == [1, 2, 2]
    lines.clear()
    # b's last round was at NOW + 5: past the TTL it no longer counts.
    publisher_for(redis_url, lines, now=NOW + 5 + WORKER_TTL_SECONDS + 1).publish()
    assert by_dimension(lines)["pool:pool"]["Workers"] == 1


def test_one_round_is_one_round_trip(redis_url: str) -> None:
    """The broker sees one pipelined request per round, whatever the number of queues."""
    lines: list[str] = []
    publisher = publisher_for(redis_url, lines)
    publisher.publish()  # connects
    with (
        mock.patch.object(
            redis.client.Pipeline,
            "execute",
            autospec=True,
            side_effect=redis.client.Pipeline.execute,
        ) as execute,
        mock.patch.object(redis.Redis, "execute_command") as single,
    ):
        publisher.publish()
    assert execute.call_count == 1 and single.call_count == 0
    assert len(lines) == 6


def test_broker_errors_are_logged_and_the_next_round_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    lines: list[str] = []
    publisher = publisher_for(f"redis://127.0.0.1:{port}/0", lines)
    with caplog.at_level(logging.WARNING, logger="app.metrics"):
        publisher.publish()  # nothing listens on the port yet
    assert lines == []
    assert "could not read the queues, skipping this round" in caplog.text
    assert "Connection refused" in caplog.text

    broker = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)

        def answering() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answering, 10, what="redis-server on the reserved port")
        publisher.publish()
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    assert by_dimension(lines)["default"]["Backlog"] == 0


def test_a_command_error_is_logged_not_raised(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.set("long", "not a list")  # LLEN answers WRONGTYPE
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="app.metrics"):
        publisher_for(redis_url, lines).publish()
    assert lines == []
    assert "WRONGTYPE" in caplog.text


# --- the publish-time stamp --------------------------------------------------------------------


def head_stamp(client: redis.Redis, queue: str) -> float | None:
    return published_at(client.lindex(queue, -1))


def test_the_message_factory_stamps_every_publish(
    redis_url: str, redis_client: redis.Redis
) -> None:
    publish_at(redis_url, 1234.5, "default")
    message = json.loads(redis_client.lindex("default", -1))
    assert message["headers"][PUBLISHED_AT_HEADER] == 1234.5
    # A retry is a new publish through the same factory: its wait starts again.
    task = app.tasks.noop
    with (
        mock.patch.object(app.celery_app, "time", SimpleNamespace(time=lambda: 2000.0)),
        celery_app.connection_for_write(redis_url) as connection,
    ):
        task.apply_async(connection=connection, queue="long", ignore_result=True, retries=1)
    assert head_stamp(redis_client, "long") == 2000.0


def test_the_web_stamps_what_it_publishes(make_client: Any, redis_client: redis.Redis) -> None:
    response = make_client().post("/tasks/noop", json={})
    assert response.status_code == 202, response.get_json()
    stamp = head_stamp(redis_client, "default")
    assert stamp is not None and abs(stamp - redis_client.time()[0]) < 60


def test_the_enqueue_command_stamps_what_it_publishes(
    app_env: dict[str, str], redis_client: redis.Redis
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.enqueue", "--entry", "nightly-report"],
        env=app_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (queue,) = [key for key in redis_client.keys("*") if redis_client.type(key) == "list"
                and not key.startswith(WAKE_PREFIX)]  # fmt: skip
    stamp = head_stamp(redis_client, queue)
    assert stamp is not None and abs(stamp - redis_client.time()[0]) < 60


# --- beat's heartbeat ----------------------------------------------------------------------------


def test_beat_writes_a_heartbeat_at_most_every_interval() -> None:
    now = [NOW]
    lines: list[str] = []
    heartbeat = BeatHeartbeat(NAMESPACE, write=lines.append, clock=lambda: now[0])
    for step in (0.0, 1.0, BEAT_HEARTBEAT_INTERVAL_SECONDS - 2, 1.0, 5.0):
        now[0] += step
        heartbeat.tick()
    assert len(lines) == 2, "at the first tick, and once the interval has passed"
    assert [parse_emf(line) for line in lines] == [{"Service": "beat", "BeatHeartbeat": 1}] * 2
    # One-minute resolution: the alarm on it counts heartbeats per minute.
    assert json.loads(lines[0])["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "BeatHeartbeat", "Unit": "Count", "StorageResolution": 60}
    ]
    assert BEAT_HEARTBEAT_INTERVAL_SECONDS < 60 / 1.5, "every minute gets one, even with jitter"


def test_beat_without_a_namespace_writes_nothing() -> None:
    lines: list[str] = []
    BeatHeartbeat("", write=lines.append).tick()
    assert lines == []


@pytest.mark.parametrize("namespace", [NAMESPACE, ""])
def test_the_app_registers_the_step_only_with_a_namespace(namespace: str, tmp_path: Path) -> None:
    env = app_environment("redis://127.0.0.1:1/0", tmp_path, CELERY_METRICS_NAMESPACE=namespace)
    steps = subprocess.run(
        [sys.executable, "-c", "from app.celery_app import app; print(*app.steps['worker'])"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ("QueueMetricsStep" in steps) is bool(namespace)


# Runs the worker command with a short publish interval instead of 10 s.
_WORKER_PUBLISHING_FAST = (
    "import sys, app.metrics; app.metrics.PUBLISH_INTERVAL_SECONDS = 0.2; "
    "from celery.__main__ import main; sys.argv[0] = 'celery'; main()"
)


def test_a_real_worker_publishes_the_metrics_of_its_queues(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    broker_url = app_env["CELERY_BROKER_URL"]
    for number in range(3):  # waiting before the worker starts: it drains them one by one
        send_task(
            broker_url, "app.tasks.apply_credit", queue="default",
            kwargs={"idempotency_key": f"metrics-{number}", "account": "acct", "amount": 1,
                    "work_seconds": 1},
        )  # fmt: skip
    env = {**app_env, "CELERY_METRICS_NAMESPACE": NAMESPACE, "CELERY_POOL_NAME": "metrics"}
    argv = [
        sys.executable,
        "-c",
        _WORKER_PUBLISHING_FAST,
        *worker_command("metrics", ("default",), 1)[1:],
    ]
    worker = start_process("metrics", argv, env, tmp_path)
    processes.append(worker)

    def documents() -> list[dict[str, Any]]:
        # Every line that mentions the EMF key must be a whole document, with no log prefix.
        return [parse_emf(line) for line in worker.logs().splitlines() if '"_aws"' in line]

    def drained() -> bool:
        assert worker.alive(), worker.logs()
        backlogs = [doc["Backlog"] for doc in documents() if "Backlog" in doc]
        return 2 in backlogs and backlogs[-1] == 0

    wait_for(drained, 30, what="the backlog to be published down to 0")
    published = documents()
    assert {doc["Queue"] for doc in published if "Queue" in doc} == {"default"}, "its queues only"
    backlogs = [doc["Backlog"] for doc in published if "Backlog" in doc]
    assert backlogs == sorted(backlogs, reverse=True), "no new messages: it only goes down"
    ages = [doc.get("OldestMessageAge") for doc in published if doc.get("Backlog")]
    assert all(age is not None and 0 <= age < 60 for age in ages), ages
    assert {doc["Workers"] for doc in published if "Pool" in doc} == {1}
    assert {doc["Pool"] for doc in published if "Pool" in doc} == {"metrics"}
    assert worker.stop(timeout=15) == 0, worker.logs()
    assert "Traceback" not in worker.logs()
