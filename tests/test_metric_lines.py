"""The local stack's terminal shows metric lines short, and only when a value changes.

Every line here is one the app writes: beat's heartbeat (``celery_ecs.metrics.BeatHeartbeat``, an
EMF document) and a worker's round without an AWS region
(``celery_ecs.metrics.QueueMetricsPublisher`` through ``celery_ecs.cloudwatch.metrics_sink``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.celery_app import app as celery_app
from celery_ecs.cloudwatch import metrics_sink
from celery_ecs.metrics import (
    BEAT_HEARTBEAT_INTERVAL_SECONDS,
    BeatHeartbeat,
    Metric,
    QueueMetricsPublisher,
    QueueState,
    Snapshot,
    emf_line,
)
from devtools.local_stack.metric_lines import MetricLines, metric_values

NAMESPACE = "CeleryEcs/celery-ecs-dev"
NOW = 1_700_000_000.0
#: Never connected to: ``datums`` only formats a snapshot.
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


def beat_lines(ticks: int) -> list[str]:
    """What beat writes over ``ticks`` heartbeat intervals."""
    now = [NOW]
    lines: list[str] = []
    heartbeat = BeatHeartbeat(NAMESPACE, write=lines.append, clock=lambda: now[0])
    for _ in range(ticks):
        heartbeat.tick()
        now[0] += BEAT_HEARTBEAT_INTERVAL_SECONDS
    return lines


@pytest.fixture
def worker_round() -> Callable[[dict[str, tuple[int, float | None]], int], str]:
    """The line a worker of the pool ``default`` writes for one round: queue -> (backlog, oldest
    publish time), and its pool's live workers."""
    lines: list[str] = []
    sink = metrics_sink(NAMESPACE, lines.append, environ={})  # no region: the twin, a laptop
    publisher = QueueMetricsPublisher(
        celery_app, "default", "default@a", ["default"], sink, broker_url=UNREACHABLE_BROKER
    )

    def line(queues: dict[str, tuple[int, float | None]], workers: int) -> str:
        states = {queue: QueueState(*state) for queue, state in queues.items()}
        sink(publisher.datums(Snapshot(states, workers), NOW))
        return lines[-1]

    return line


def test_a_worker_round_is_one_short_line(
    worker_round: Callable[[dict[str, tuple[int, float | None]], int], str],
) -> None:
    line = worker_round({"default": (3, NOW - 12.5)}, 2)
    assert line.startswith(f"queue metrics {NAMESPACE} ")  # what the container writes

    assert MetricLines().shown("worker-default", line) == (
        "metrics  queue default: Backlog=3 OldestMessageAge=12.5; pool default: Workers=2"
    )


def test_beats_heartbeat_is_one_short_line_not_a_json_document() -> None:
    (line, *_) = beat_lines(1)
    assert line.startswith('{"_aws":{"Timestamp":')

    assert MetricLines().shown("beat", line) == "metrics  service beat: BeatHeartbeat=1"


def test_an_emf_line_with_several_metrics_keeps_their_order() -> None:
    line = emf_line(
        NAMESPACE, {"Queue": "long"},
        [Metric("Backlog", 0, "Count"), Metric("OldestMessageAge", 0.25, "Seconds")], 1,
    )  # fmt: skip
    assert MetricLines().shown("worker-long", line) == (
        "metrics  queue long: Backlog=0 OldestMessageAge=0.25"
    )


def test_a_line_is_shown_again_only_when_a_value_changes(
    worker_round: Callable[[dict[str, tuple[int, float | None]], int], str],
) -> None:
    view = MetricLines()
    idle = worker_round({"default": (0, None)}, 1)
    busy = worker_round({"default": (4, NOW - 2)}, 1)
    shown = [view.shown("worker-default", line) for line in (idle, idle, busy, busy, idle)]
    assert [text is not None for text in shown] == [True, False, True, False, True]
    # The heartbeat never changes: shown once, however long beat runs.
    assert [view.shown("beat", line) is not None for line in beat_lines(5)] == [True] + [False] * 4


def test_each_service_has_its_own_last_line(
    worker_round: Callable[[dict[str, tuple[int, float | None]], int], str],
) -> None:
    view = MetricLines()
    idle = worker_round({"default": (0, None)}, 1)
    assert view.shown("worker-default", idle) is not None
    assert view.shown("worker-other", idle) is not None
    # A second task of the same service repeating the pool's numbers adds nothing.
    assert view.shown("worker-default", idle) is None


def test_raw_shows_every_metric_line_as_written(
    worker_round: Callable[[dict[str, tuple[int, float | None]], int], str],
) -> None:
    view = MetricLines(raw=True)
    lines = [worker_round({"default": (0, None)}, 1)] * 2 + beat_lines(2)
    assert [view.shown("any", line) for line in lines] == lines


@pytest.mark.parametrize(
    "line",
    [
        "2026-12-07 00:52:15,716 INFO MainProcess celery_ecs.metrics: queue metrics: publishing",
        "queue metrics: no AWS region set, writing them to stdout, not to CloudWatch",
        '{"_aws": "not a document"}',
        '{"_aws":{"CloudWatchMetrics":[{"Dimensions":[["Queue"]],"Metrics":[{"Name":"B"}]}]}}',
        "queue metrics N (no AWS region: not sent): Backlog{Queue=default}=many",
        "",
    ],
)
def test_other_lines_pass_as_they_are(line: str) -> None:
    assert metric_values(line) is None
    view = MetricLines()
    assert [view.shown("worker-default", line) for _ in range(2)] == [line, line]
