"""Backlog metrics (``app.metrics``): the EMF line, counts against a real Redis, a real worker."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from app.celery_app import app
from app.metrics import BacklogPublisher, emf_line, write_to_stdout
from devtools.processes import start_process
from devtools.redis_server import free_port
from infra.containers import worker_command
from tests.support import AppProcess, app_environment, send_task, wait_for

NAMESPACE = "CeleryEcs/test"


def parse_emf(line: str) -> tuple[str, int, int]:
    """Check ``line`` is an EMF document for one queue's backlog; return (queue, backlog, ms)."""
    document = json.loads(line)
    assert document["_aws"]["CloudWatchMetrics"] == [
        {
            "Namespace": NAMESPACE,
            "Dimensions": [["Queue"]],
            "Metrics": [{"Name": "Backlog", "Unit": "Count"}],
        }
    ]
    assert set(document) == {"_aws", "Queue", "Backlog"}
    # EMF: every dimension and metric named in the metadata is a top-level member.
    assert isinstance(document["Queue"], str) and isinstance(document["Backlog"], int)
    return document["Queue"], document["Backlog"], document["_aws"]["Timestamp"]


def test_emf_line_is_one_line_of_the_documented_document() -> None:
    line = emf_line(NAMESPACE, "default", 12, 1_700_000_000_123)
    assert "\n" not in line
    assert parse_emf(line) == ("default", 12, 1_700_000_000_123)
    assert json.loads(line)["_aws"]["Timestamp"] == 1_700_000_000_123


def test_lines_go_straight_to_file_descriptor_1(capfd: pytest.CaptureFixture[str]) -> None:
    write_to_stdout(emf_line(NAMESPACE, "long", 0, 1))
    out, err = capfd.readouterr()
    assert out == emf_line(NAMESPACE, "long", 0, 1) + "\n" and err == ""


def publish_noops(broker_url: str, queue: str, priorities: list[int | None]) -> None:
    for priority in priorities:
        options: dict[str, object] = {"queue": queue}
        if priority is not None:
            options["priority"] = priority
        send_task(broker_url, "app.tasks.noop", **options)


def publisher_for(broker_url: str, lines: list[str]) -> BacklogPublisher:
    return BacklogPublisher(
        app,
        ["default", "long"],
        NAMESPACE,
        broker_url=broker_url,
        write=lines.append,
        clock=lambda: 1_700_000_000.5,
    )


def test_backlog_counts_every_priority_list_of_a_queue(
    redis_url: str, redis_client: redis.Redis
) -> None:
    publish_noops(redis_url, "default", [None, 0, 3, 5, 9, 9])
    publish_noops(redis_url, "long", [None, None])
    # kombu's Redis transport keeps one list per priority step (0, 3, 6, 9; 5 rounds down to 3).
    assert set(redis_client.keys("default*")) == {"default", "default\x06\x163", "default\x06\x169"}

    lines: list[str] = []
    publisher = publisher_for(redis_url, lines)
    publisher.publish()
    assert [parse_emf(line) for line in lines] == [
        ("default", 6, 1_700_000_000_500),
        ("long", 2, 1_700_000_000_500),
    ]
    publisher.publish()
    assert lines[2:] == lines[:2], "counting neither consumes nor creates anything"
    assert sum(redis_client.llen(key) for key in redis_client.keys("default*")) == 6


def test_empty_and_missing_queues_count_zero(redis_url: str, redis_client: redis.Redis) -> None:
    lines: list[str] = []
    publisher_for(redis_url, lines).publish()
    assert [parse_emf(line)[:2] for line in lines] == [("default", 0), ("long", 0)]
    assert redis_client.keys("*") == [], "a non-passive declare creates no key in Redis"


def test_broker_errors_are_logged_and_the_next_round_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    lines: list[str] = []
    publisher = publisher_for(f"redis://127.0.0.1:{port}/0", lines)
    with caplog.at_level(logging.WARNING, logger="app.metrics"):
        publisher.publish()  # nothing listens on the port yet
    assert lines == []
    assert "could not count the queues, skipping this round" in caplog.text
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
    assert [parse_emf(line)[:2] for line in lines] == [("default", 0), ("long", 0)]


def test_a_command_error_is_logged_not_raised(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.set("long", "not a list")  # LLEN answers WRONGTYPE
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="app.metrics"):
        publisher_for(redis_url, lines).publish()
    assert lines == []
    assert "WRONGTYPE" in caplog.text


@pytest.mark.parametrize("namespace", [NAMESPACE, ""])
def test_the_app_registers_the_step_only_with_a_namespace(namespace: str, tmp_path: Path) -> None:
    env = app_environment("redis://127.0.0.1:1/0", tmp_path, CELERY_METRICS_NAMESPACE=namespace)
    steps = subprocess.run(
        [sys.executable, "-c", "from app.celery_app import app; print(*app.steps['worker'])"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ("BacklogMetricsStep" in steps) is bool(namespace)


# Runs the worker command with a short publish interval instead of 60 s.
_WORKER_PUBLISHING_FAST = (
    "import sys, app.metrics; app.metrics.PUBLISH_INTERVAL_SECONDS = 0.2; "
    "from celery.__main__ import main; sys.argv[0] = 'celery'; main()"
)


def test_a_real_worker_publishes_the_backlog_of_its_queues(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    broker_url = app_env["CELERY_BROKER_URL"]
    for number in range(3):  # waiting before the worker starts: it drains them one by one
        send_task(
            broker_url, "app.tasks.apply_credit", queue="default",
            kwargs={"idempotency_key": f"metrics-{number}", "account": "acct", "amount": 1,
                    "work_seconds": 1},
        )  # fmt: skip
    env = {**app_env, "CELERY_METRICS_NAMESPACE": NAMESPACE}
    argv = [
        sys.executable,
        "-c",
        _WORKER_PUBLISHING_FAST,
        *worker_command("metrics", ("default",), 1)[1:],
    ]
    worker = start_process("metrics", argv, env, tmp_path)
    processes.append(worker)

    def emf_lines() -> list[tuple[str, int, int]]:
        # Every line that mentions the EMF key must be a whole document, with no log prefix.
        return [parse_emf(line) for line in worker.logs().splitlines() if '"_aws"' in line]

    def drained() -> bool:
        assert worker.alive(), worker.logs()
        backlogs = [backlog for queue, backlog, _ in emf_lines()]
        return 2 in backlogs and backlogs[-1] == 0

    wait_for(drained, 20, what="the backlog to be published down to 0")
    published = emf_lines()
    assert {queue for queue, _, _ in published} == {"default"}, "only the queues it consumes"
    backlogs = [backlog for _, backlog, _ in published]
    assert backlogs == sorted(backlogs, reverse=True), "no new messages: it only goes down"
    timestamps = [timestamp for _, _, timestamp in published]
    assert timestamps == sorted(timestamps)
    assert worker.stop(timeout=15) == 0, worker.logs()
    assert "Traceback" not in worker.logs()
