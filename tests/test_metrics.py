"""Queue metrics (``celery_ecs.metrics``, ``celery_ecs.cloudwatch``): exact backlogs, ages and
worker counts against a real Redis with known contents; what reaches a real stand-in of the
CloudWatch API (moto's server) and what a hung or throttling endpoint does to a round and to a real
worker; the publish-time stamp on every path that publishes; beat's EMF heartbeat."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import redis

import app.tasks
import celery_ecs.runtime
from app.celery_app import app as celery_app
from celery_ecs.cloudwatch import (
    CLOUDWATCH_TIMEOUT_SECONDS,
    Datum,
    PutMetricDataSink,
    metrics_sink,
)
from celery_ecs.metrics import (
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
from celery_ecs.transport import WAKE_PREFIX
from infra.containers import CELERY_APP, ENQUEUE_SCRIPT, worker_command
from testkit.aws_standin import AwsStandIn, HungEndpoint, ThrottlingEndpoint, sdk_environment
from testkit.processes import python_argv, start_process
from testkit.redis_server import free_port
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
    with mock.patch.object(celery_ecs.runtime, "time", SimpleNamespace(time=lambda: when)):
        send_task(broker_url, "app.tasks.noop", **options)


Round = Sequence[Datum]


def publisher_for(
    broker_url: str, rounds: list[Round], *, worker: str = "pool@a", now: float = NOW
) -> QueueMetricsPublisher:
    return QueueMetricsPublisher(
        celery_app,
        "pool",
        worker,
        ["default", "long"],
        rounds.append,
        broker_url=broker_url,
        clock=lambda: now,
    )


def documents(datums: Round) -> list[dict[str, Any]]:
    """A round's datapoints grouped by dimension, as {dimension: value, metric: value...}, and
    checked against what PutMetricData accepts and what the alarms read."""
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for datum in datums:
        (dimension,) = datum["Dimensions"]
        key = (dimension["Name"], dimension["Value"])
        document = grouped.setdefault(key, {dimension["Name"]: dimension["Value"]})
        assert datum["MetricName"] not in document, "one value per metric and round"
        assert datum["StorageResolution"] == 1, "the alarms evaluate 10-second periods"
        assert datum["Timestamp"] == datums[0]["Timestamp"], "one round, one time"
        assert datum["Timestamp"].tzinfo is not None
        seconds = datum["MetricName"] == "OldestMessageAge"
        assert datum["Unit"] == ("Seconds" if seconds else "Count")
        document[datum["MetricName"]] = datum["Value"]
    return list(grouped.values())


def lists(client: redis.Redis) -> dict[str, list[str]]:
    """Every list in Redis (the queues) with its contents."""
    return {
        key: client.lrange(key, 0, -1) for key in client.keys("*") if client.type(key) == "list"
    }


def by_dimension(rounds: list[Round]) -> dict[str, dict[str, Any]]:
    """Every round's documents by dimension value; later rounds win."""
    found = [doc for datums in rounds for doc in documents(datums)]
    return {str(doc.get("Queue") or f"pool:{doc['Pool']}"): doc for doc in found}


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

    rounds: list[Round] = []
    publisher = publisher_for(redis_url, rounds)
    publisher.publish()
    assert by_dimension(rounds) == {
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
    rounds: list[Round] = []
    publisher_for(redis_url, rounds).publish()
    assert by_dimension(rounds)["default"]["OldestMessageAge"] == 200


def test_unstamped_messages_never_break_the_metric(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # An older publisher's message (no stamp) and something that is not a kombu message at all.
    redis_client.rpush("long", json.dumps({"body": "", "headers": {"task": "x"}}))
    redis_client.rpush("long\x06\x169", "not json")
    rounds: list[Round] = []
    publisher_for(redis_url, rounds).publish()
    assert by_dimension(rounds)["long"] == {"Queue": "long", "Backlog": 2}, "no age, no guess"

    publish_at(redis_url, NOW - 42, "long", priority=3)
    rounds.clear()
    publisher_for(redis_url, rounds).publish()
    assert by_dimension(rounds)["long"] == {"Queue": "long", "Backlog": 3, "OldestMessageAge": 42}


def test_empty_and_missing_queues_count_zero_and_create_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    rounds: list[Round] = []
    publisher_for(redis_url, rounds).publish()
    found = by_dimension(rounds)
    assert found["default"] == {"Queue": "default", "Backlog": 0, "OldestMessageAge": 0}
    assert found["long"] == {"Queue": "long", "Backlog": 0, "OldestMessageAge": 0}
    assert lists(redis_client) == {}, "no queue is created"
    assert 0 < redis_client.ttl(workers_key("pool")) <= WORKER_TTL_SECONDS


def test_workers_counts_the_pools_live_workers(redis_url: str) -> None:
    rounds: list[Round] = []
    publisher_for(redis_url, rounds, worker="pool@a").publish()
    publisher_for(redis_url, rounds, worker="pool@b", now=NOW + 5).publish()
    publisher_for(redis_url, rounds, worker="pool@a", now=NOW + 10).publish()  # again: still 2
    workers = [doc["Workers"] for datums in rounds for doc in documents(datums) if "Workers" in doc]
    assert workers == [1, 2, 2]
    rounds.clear()
    # b's last round was at NOW + 5: past the TTL it no longer counts.
    publisher_for(redis_url, rounds, now=NOW + 5 + WORKER_TTL_SECONDS + 1).publish()
    assert by_dimension(rounds)["pool:pool"]["Workers"] == 1


def test_one_round_is_one_round_trip(redis_url: str) -> None:
    """The broker sees one pipelined request per round, whatever the number of queues."""
    rounds: list[Round] = []
    publisher = publisher_for(redis_url, rounds)
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
    assert len(rounds) == 2 and len(rounds[1]) == 5, "both queues' backlog and age, the workers"


@pytest.mark.redis  # starts a redis-server of its own, late
def test_broker_errors_are_logged_and_the_next_round_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    rounds: list[Round] = []
    publisher = publisher_for(f"redis://127.0.0.1:{port}/0", rounds)
    with caplog.at_level(logging.WARNING, logger="celery_ecs.metrics"):
        publisher.publish()  # nothing listens on the port yet
    assert rounds == []
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
    assert by_dimension(rounds)["default"]["Backlog"] == 0


def test_a_command_error_is_logged_not_raised(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.set("long", "not a list")  # LLEN answers WRONGTYPE
    rounds: list[Round] = []
    with caplog.at_level(logging.WARNING, logger="celery_ecs.metrics"):
        publisher_for(redis_url, rounds).publish()
    assert rounds == []
    assert "WRONGTYPE" in caplog.text


# --- CloudWatch: a real stand-in of its API, a hung one, a throttling one -----------------------


@pytest.fixture
def moto_server() -> Iterator[AwsStandIn]:
    """A server of its own per test: moto's GetMetricData ignores the namespace of a query that
    names dimensions, so tests sharing one could read each other's datapoints."""
    server = AwsStandIn()
    yield server
    server.stop()


@pytest.fixture
def point_aws_sdk_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Points this process's AWS SDK at an endpoint, with a region and credentials, as a
    task's settings would (``sdk_environment``); nothing else of the caller's steers it."""
    for name in ("AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL_CLOUDWATCH"):
        monkeypatch.delenv(name, raising=False)

    def point(endpoint_url: str) -> None:
        for name, value in sdk_environment(endpoint_url).items():
            monkeypatch.setenv(name, value)

    return point


def cloudwatch_values(
    server: AwsStandIn, namespace: str, metric: str, dimension: tuple[str, str]
) -> list[float]:
    """What CloudWatch (the stand-in) answers GetMetricData for ``metric`` in 10 s periods."""
    client = server.client("cloudwatch")
    now = datetime.now(UTC)
    answer = client.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": dimension[0], "Value": dimension[1]}],
                    },
                    "Period": 10,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
    )
    return [float(value) for value in answer["MetricDataResults"][0]["Values"]]


def test_one_round_is_one_put_metric_data_call_at_high_resolution(
    redis_url: str, moto_server: AwsStandIn, point_aws_sdk_at: Callable[[str], None]
) -> None:
    point_aws_sdk_at(moto_server.url)
    namespace = f"{NAMESPACE}/one-call"
    publish_at(redis_url, time.time() - 7, "default")
    publish_at(redis_url, time.time() - 3, "default")
    sink = metrics_sink(namespace, write_to_stdout)
    assert isinstance(sink, PutMetricDataSink)
    sent: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        # Read on the way out (the request still goes to the server).
        sent.append(json.loads(request.body))

    sink.client.meta.events.register("before-send.cloudwatch.PutMetricData", record)
    QueueMetricsPublisher(
        celery_app, "pool", "pool@a", ["default", "long"], sink, broker_url=redis_url
    ).publish()

    (request,) = sent
    assert request["Namespace"] == namespace
    assert {d["StorageResolution"] for d in request["MetricData"]} == {1}
    assert sorted(d["MetricName"] for d in request["MetricData"]) == [
        "Backlog", "Backlog", "OldestMessageAge", "OldestMessageAge", "Workers",
    ]  # fmt: skip
    assert cloudwatch_values(moto_server, namespace, "Backlog", ("Queue", "default")) == [2]
    assert cloudwatch_values(moto_server, namespace, "Backlog", ("Queue", "long")) == [0]
    (age,) = cloudwatch_values(moto_server, namespace, "OldestMessageAge", ("Queue", "default"))
    assert 7 <= age < 30
    assert cloudwatch_values(moto_server, namespace, "Workers", ("Pool", "pool")) == [1]


def test_a_hung_endpoint_costs_a_round_its_timeouts_and_no_more(
    redis_url: str, point_aws_sdk_at: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    with HungEndpoint() as endpoint:
        point_aws_sdk_at(endpoint.url)
        publisher = QueueMetricsPublisher(
            celery_app, "pool", "pool@a", ["default"], metrics_sink(NAMESPACE, print),
            broker_url=redis_url,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="celery_ecs.cloudwatch"):
            began = time.monotonic()
            publisher.publish()
            took = time.monotonic() - began
        assert endpoint.connections == 1, "one attempt: no retry holds the thread again"
    assert took < CLOUDWATCH_TIMEOUT_SECONDS + 2, took
    assert "CloudWatch did not take this round, dropped" in caplog.text
    assert "Read timeout" in caplog.text


def test_a_throttled_round_is_dropped_not_retried(
    redis_url: str, point_aws_sdk_at: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    with ThrottlingEndpoint() as endpoint:
        point_aws_sdk_at(endpoint.url)
        publisher = QueueMetricsPublisher(
            celery_app, "pool", "pool@a", ["default"], metrics_sink(NAMESPACE, print),
            broker_url=redis_url,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="celery_ecs.cloudwatch"):
            publisher.publish()
            publisher.publish()
        assert endpoint.requests == 2, "one request per round, none queued or retried"
    assert caplog.text.count("CloudWatch did not take this round, dropped") == 2
    assert "Throttling" in caplog.text


def test_without_a_region_a_round_is_one_compact_line(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ECS twin and a laptop have no CloudWatch: nothing is sent, a line says what would be."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    lines: list[str] = []
    sink = metrics_sink(NAMESPACE, lines.append)
    assert not isinstance(sink, PutMetricDataSink)
    publish_at(redis_url, NOW - 5, "default")
    publisher = QueueMetricsPublisher(
        celery_app, "pool", "pool@a", ["default", "long"], sink, broker_url=redis_url,
        clock=lambda: NOW,
    )  # fmt: skip
    publisher.publish()
    assert lines == [
        f"queue metrics {NAMESPACE} (no AWS region: not sent): Backlog{{Queue=default}}=1 "
        "OldestMessageAge{Queue=default}=5 Backlog{Queue=long}=0 OldestMessageAge{Queue=long}=0 "
        "Workers{Pool=pool}=1"
    ]


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
        mock.patch.object(celery_ecs.runtime, "time", SimpleNamespace(time=lambda: 2000.0)),
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
        python_argv([ENQUEUE_SCRIPT, "--app", CELERY_APP, "app.tasks.nightly_report",
                     "--queue", "default"]),
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


@pytest.mark.redis  # imports the app in a fresh process
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
    "import sys, celery_ecs.metrics; celery_ecs.metrics.PUBLISH_INTERVAL_SECONDS = 0.2; "
    "from celery.__main__ import main; sys.argv[0] = 'celery'; main()"
)


def test_a_real_worker_publishes_the_metrics_of_its_queues(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess], moto_server: AwsStandIn
) -> None:
    broker_url = app_env["CELERY_BROKER_URL"]
    for number in range(3):  # waiting before the worker starts: it drains them one by one
        send_task(
            broker_url, "app.tasks.apply_credit", queue="default",
            kwargs={"idempotency_key": f"metrics-{number}", "account": "acct", "amount": 1,
                    "work_seconds": 1},
        )  # fmt: skip
    namespace = f"{NAMESPACE}/worker-{tmp_path.name}"
    env = {
        **app_env,
        **moto_server.environment(),
        "CELERY_METRICS_NAMESPACE": namespace,
        "CELERY_POOL_NAME": "metrics",
    }
    argv = [
        sys.executable,
        "-c",
        _WORKER_PUBLISHING_FAST,
        *worker_command("metrics", ("default",), 1)[1:],
    ]
    worker = start_process("metrics", argv, env, tmp_path)
    processes.append(worker)

    def backlogs() -> list[float]:
        assert worker.alive(), worker.logs()
        return cloudwatch_values(moto_server, namespace, "Backlog", ("Queue", "default"))

    # The stand-in keeps the Maximum of each 10 s period, newest first: the queue is seen with
    # messages waiting (2 or 3, as the first round lands before or after the first task is taken,
    # and one period may span the whole drain) and, a period later, empty. A loaded machine may
    # take long to start the worker: the wait is generous.
    wait_for(lambda: max(backlogs(), default=0) >= 2 and backlogs()[0] == 0, 120,
             what="the backlog down to 0")  # fmt: skip
    assert worker.stop(timeout=15) == 0, worker.logs()
    assert "Traceback" not in worker.logs()
    assert "CloudWatch did not take this round" not in worker.logs()
    assert cloudwatch_values(moto_server, namespace, "Workers", ("Pool", "metrics"))
    assert set(cloudwatch_values(moto_server, namespace, "Workers", ("Pool", "metrics"))) == {1}
    ages = cloudwatch_values(moto_server, namespace, "OldestMessageAge", ("Queue", "default"))
    assert ages and all(0 <= age < 60 for age in ages), ages
    assert not cloudwatch_values(moto_server, namespace, "Backlog", ("Queue", "long")), (
        "its own queues only"
    )


def test_a_hung_cloudwatch_never_stalls_task_processing(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    """The metrics thread spends its rounds waiting on an endpoint that never answers, while
    the pool forks a new child after every task (a fork waits for no round,
    ``celery_ecs.periodic``): tasks still run, within a round's timeouts each."""
    broker_url = app_env["CELERY_BROKER_URL"]
    tasks = 4
    with HungEndpoint() as endpoint:
        env = {
            **app_env,
            **sdk_environment(endpoint.url),
            "CELERY_METRICS_NAMESPACE": NAMESPACE,
            "CELERY_POOL_NAME": "metrics",
        }
        argv = [
            sys.executable,
            "-c",
            _WORKER_PUBLISHING_FAST,
            *worker_command("metrics", ("default",), 1)[1:],
            "--max-tasks-per-child", "1",
        ]  # fmt: skip
        worker = start_process("metrics", argv, env, tmp_path)
        processes.append(worker)
        wait_for(lambda: endpoint.connections >= 1, 30, what="a round stuck on the endpoint")
        began = time.monotonic()
        for number in range(tasks):
            send_task(
                broker_url, "app.tasks.apply_credit", queue="default",
                kwargs={"idempotency_key": f"hung-{number}", "account": "acct", "amount": 1,
                        "work_seconds": 0},
            )  # fmt: skip

        def done() -> int:
            assert worker.alive(), worker.logs()
            return worker.logs().count("succeeded in")

        # Each task's child is replaced after it; a fork waits for at most one round.
        budget = tasks * (CLOUDWATCH_TIMEOUT_SECONDS + 1) + 10
        wait_for(lambda: done() == tasks, budget, what=f"{tasks} tasks despite a hung CloudWatch")
        took = time.monotonic() - began
        # Rounds go on: the stuck one is dropped at its timeout and the next connects (the tasks
        # no longer wait for any round, so they may all be done before that).
        wait_for(lambda: endpoint.connections >= 2, 2 * CLOUDWATCH_TIMEOUT_SECONDS + 30,
                 what="the next round after the dropped one")  # fmt: skip
        assert worker.stop(timeout=15 + CLOUDWATCH_TIMEOUT_SECONDS) == 0, worker.logs()
    assert "CloudWatch did not take this round, dropped" in worker.logs()
    assert took < budget
