"""Celery's two lines per task with APP_LOG_TASKS=false (``celery_ecs.runtime.PerTaskLines``):
"Task … received" and "Task … succeeded" are not even built, every other INFO line of their
loggers still is, and with the lines on, or without the filter, Celery's closures are as built.

In-process, as the worker runs them: the tracer as the worker sets it on the task
(``task.__trace__ = build_tracer(...)``: the consumer, the prefork pool's processes), the
message handler as the consumer makes it (``task.start_strategy``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery, uuid
from celery.app import trace
from celery.app.trace import build_tracer
from celery.contrib.testing.mocks import TaskMessage
from celery.exceptions import Retry

import celery_ecs
from celery_ecs import runtime
from celery_ecs.runtime import PerTaskLines
from celery_ecs.settings import BROKER_URL

LINES = {trace.LOG_RECEIVED, trace.LOG_SUCCESS}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Celery:
    """An equipped app with three tasks that store nothing (nothing connects): one succeeds,
    one retries, one raises an expected error (``throws``)."""
    monkeypatch.setenv(BROKER_URL, "redis://127.0.0.1:1/0")
    app = Celery("lines", set_as_current=False)
    celery_ecs.equip(app)

    @app.task(name="lines.ok", ignore_result=True, shared=False)
    def ok(number: int) -> int:
        return number

    @app.task(name="lines.again", ignore_result=True, shared=False)
    def again() -> None:
        raise Retry("again", when=5)

    @app.task(name="lines.expected", ignore_result=True, shared=False, throws=(KeyError,))
    def expected() -> None:
        raise KeyError("expected")

    app.finalize()
    return app


@pytest.fixture
def made() -> Iterator[list[logging.LogRecord]]:
    """Every LogRecord created meanwhile, whether a filter then drops it or not."""
    factory = logging.getLogRecordFactory()
    records: list[logging.LogRecord] = []

    def recording(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        records.append(record)
        return record

    logging.setLogRecordFactory(recording)
    yield records
    logging.setLogRecordFactory(factory)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The two loggers at INFO (as ``APP_LOG_LEVEL``'s default), their lines captured."""
    for name in PerTaskLines.LOGGERS:
        caplog.set_level(logging.INFO, logger=name)
    return caplog


@pytest.fixture(params=[False, True], ids=["APP_LOG_TASKS=false", "APP_LOG_TASKS=true"])
def log_tasks(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The filters ``configure_logging`` puts on the two loggers when the lines are off."""
    added = [] if request.param else [logging.getLogger(name) for name in PerTaskLines.LOGGERS]
    for logger in added:
        logger.addFilter(PerTaskLines())
    yield bool(request.param)
    for logger in added:
        for each in [each for each in logger.filters if isinstance(each, PerTaskLines)]:
            logger.removeFilter(each)


def run(app: Celery, name: str, *args: Any) -> None:
    """Run the task as a pool process does: the tracer the worker set on it."""
    task = app.tasks[name]
    task.__trace__ = build_tracer(name, task, app.loader, "worker@host", app=app)
    task_id = uuid()
    task.__trace__(task_id, args, {}, {"id": task_id, "delivery_info": {}})


def receive(app: Celery, name: str) -> list[Any]:
    """Hand a message of the task to the handler the consumer makes for it; the requests it
    passes on for running."""
    handled: list[Any] = []
    consumer = SimpleNamespace(
        hostname="worker@host", connection_errors=(), event_dispatcher=None,
        timer=SimpleNamespace(call_at=None), apply_eta_task=None, disable_rate_limits=True,
        task_buckets={}, on_task_request=handled.append, _limit_task=None,
        _limit_post_eta=None, pool=SimpleNamespace(apply_async=None),
        controller=SimpleNamespace(state=SimpleNamespace(revoked=set())),
    )  # fmt: skip
    handler: Callable[..., Any] = app.tasks[name].start_strategy(
        app, consumer, task_reserved=lambda request: None
    )
    handler(TaskMessage(name, args=(7,)), None, lambda: None, lambda: None, None)
    return handled


def messages(records: list[logging.LogRecord]) -> list[str]:
    return [str(record.msg) for record in records]


def test_the_per_task_lines_are_built_only_when_logged(
    app: Celery, made: list[logging.LogRecord], logged: pytest.LogCaptureFixture,
    log_tasks: bool,
) -> None:  # fmt: skip
    assert len(receive(app, "lines.ok")) == 1  # passed on to run, as always
    run(app, "lines.ok", 7)

    created = set(messages(made)) & LINES
    assert created == (LINES if log_tasks else set()), "not even built when not logged"
    assert (set(messages(logged.records)) & LINES) == created
    if log_tasks:
        (succeeded,) = [record for record in logged.records if record.msg == trace.LOG_SUCCESS]
        assert succeeded.getMessage().startswith("Task lines.ok[")


def test_every_other_info_line_of_the_two_loggers_still_appears(
    app: Celery, made: list[logging.LogRecord], logged: pytest.LogCaptureFixture,
    log_tasks: bool,
) -> None:  # fmt: skip
    run(app, "lines.again")
    run(app, "lines.expected")

    shown = [record for record in logged.records if record.name == "celery.app.trace"]
    assert [record.msg for record in shown if record.levelno == logging.INFO] == [
        trace.LOG_RETRY,
        trace.LOG_FAILURE.strip(),  # "raised expected" (the task's throws)
    ]
    assert "lines.again" in shown[0].getMessage() and "retry: again" in shown[0].getMessage()
    assert "raised expected: KeyError" in shown[1].getMessage()


def test_celerys_closures_are_the_ones_the_runtime_quiets() -> None:
    """Both found in the installed Celery (else the lines would only be dropped, as before)."""
    assert sorted(runtime.PER_TASK_LINE_CLOSURES.values()) == sorted(PerTaskLines.LOGGERS)


def test_only_celerys_closures_are_changed_and_only_under_the_filter(
    app: Celery, logged: pytest.LogCaptureFixture
) -> None:
    task = app.tasks["lines.ok"]
    task.__trace__ = build_tracer(task.name, task, app.loader, "worker@host", app=app)
    tracer = task.__trace__  # set without the filter: as Celery built it
    assert tracer.__closure__[tracer.__code__.co_freevars.index("_does_info")].cell_contents
    assert runtime.without_per_task_line(len) is len
    task.__trace__ = None
    assert task.__trace__ is None
