"""ECS task scale-in protection (``celery_ecs.protection``) against a stand-in for the ECS agent.

The stand-in is a local HTTP server that records every call and answers like the agent's
task-protection endpoint. Unit tests drive ``TaskProtection`` with a fake clock; the last test
runs a real prefork worker against a real redis-server.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from celery.worker import state as worker_state

from celery_ecs import protection as protection_module
from celery_ecs.periodic import PeriodicThread
from celery_ecs.protection import STATE_PATH, TaskProtection, TaskProtectionStep
from infra.containers import worker_command
from testkit.processes import start_process
from tests.support import AppProcess, app_environment, send_task, wait_for

ENABLE = {"ProtectionEnabled": True, "ExpiresInMinutes": 15}
DISABLE = {"ProtectionEnabled": False}
TASK_ARN = "arn:aws:ecs:eu-west-1:111122223333:task/cluster/0123456789abcdef"


@dataclass
class FakeAgent:
    """Records PUTs; answers each with the next queued (status, body) or a confirmation."""

    url: str = ""
    calls: list[dict[str, object]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    content_types: list[str | None] = field(default_factory=list)
    answers: deque[tuple[int, object]] = field(default_factory=deque)
    #: Set to hold answers back (the client times out) until it is cleared.
    hanging: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def answer(self, body: dict[str, object]) -> tuple[int, object]:
        if self.answers:
            return self.answers.popleft()
        enabled = body["ProtectionEnabled"]
        return 200, {"protection": {
            "ExpirationDate": "2026-11-24T02:29:16Z" if enabled else None,
            "ProtectionEnabled": enabled,
            "TaskArn": TASK_ARN,
        }}  # fmt: skip


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    fake = FakeAgent()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.calls.append(body)
            fake.paths.append(self.path)
            fake.content_types.append(self.headers["Content-Type"])
            if fake.hanging.is_set():
                fake.released.wait(timeout=60)
            status, answer = fake.answer(body)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return  # a hanging answer's client has given up: what the hang tests

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the calls are asserted, not printed."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    fake.released.set()
    server.shutdown()
    server.server_close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def protection_for(agent: FakeAgent, clock: FakeClock, **options: float) -> TaskProtection:
    return TaskProtection(agent.url, clock=clock, request_timeout=2.0, **options)  # type: ignore[arg-type]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# TaskProtection with a fake clock


@pytest.mark.parametrize("agent_uri", [None, ""])
def test_outside_ecs_it_does_nothing(agent_uri: str | None) -> None:
    protection = TaskProtection(agent_uri)
    assert not protection.enabled
    for busy in (True, False, True):
        protection.update(busy)  # no agent, no request, no error
    assert not protection.protected


def test_on_while_busy_and_off_after_the_idle_grace(agent: FakeAgent, clock: FakeClock) -> None:
    protection = protection_for(agent, clock, idle_grace_seconds=30)
    protection.update(busy=False)
    assert agent.calls == [], "never protected: nothing to turn off"

    protection.update(busy=True)
    assert agent.calls == [ENABLE]
    assert agent.paths == [STATE_PATH]
    assert agent.content_types == ["application/json"]
    assert protection.protected
    for _ in range(5):
        clock.advance(1)
        protection.update(busy=True)
    assert agent.calls == [ENABLE], "one call per busy period, not per tick"

    protection.update(busy=False)
    clock.advance(29)
    protection.update(busy=False)
    assert agent.calls == [ENABLE], "still inside the idle grace"
    clock.advance(1)
    protection.update(busy=False)
    assert agent.calls == [ENABLE, DISABLE]
    assert not protection.protected
    clock.advance(60)
    protection.update(busy=False)
    assert agent.calls == [ENABLE, DISABLE]


def test_short_gaps_between_tasks_cost_no_calls(agent: FakeAgent, clock: FakeClock) -> None:
    protection = protection_for(agent, clock, idle_grace_seconds=30)
    for _ in range(20):  # 20 tasks of 5 s with 10 s gaps
        protection.update(busy=True)
        clock.advance(5)
        protection.update(busy=False)
        clock.advance(10)
    assert agent.calls == [ENABLE]


def test_a_long_task_renews_protection_before_it_expires(
    agent: FakeAgent, clock: FakeClock
) -> None:
    protection = protection_for(agent, clock)  # 15 minutes, renewed with 5 left
    protection.update(busy=True)
    clock.advance(10 * 60 - 1)
    protection.update(busy=True)
    assert agent.calls == [ENABLE]
    clock.advance(2)
    protection.update(busy=True)
    assert agent.calls == [ENABLE, ENABLE]

    renewed_at = [clock.now]
    for _ in range(3 * 360):  # three more hours, a tick every 10 s
        clock.advance(10)
        calls = len(agent.calls)
        protection.update(busy=True)
        if len(agent.calls) > calls:
            renewed_at.append(clock.now)
        assert protection.protected
    assert all(call == ENABLE for call in agent.calls)
    gaps = {later - earlier for earlier, later in itertools.pairwise(renewed_at)}
    assert gaps == {610.0}, "renewed on the first tick with less than 5 of 15 minutes left"


@pytest.mark.parametrize(
    ("status", "answer", "logged"),
    [
        (500, "agent exploded", "HTTP 500: agent exploded"),
        (200, {"failure": {"Arn": TASK_ARN, "Detail": None, "Reason": "TASK_NOT_VALID"}},
         '"Reason": "TASK_NOT_VALID"'),
        (400, {"requestID": "12345", "error": {
            "Arn": TASK_ARN, "Code": "AccessDeniedException",
            "Message": "not authorized to perform: ecs:UpdateTaskProtection"}},
         "AccessDeniedException"),
        (200, {"requestID": "12345", "error": {
            "Arn": TASK_ARN, "Code": "ThrottlingException", "Message": "Rate exceeded"}},
         '"Code": "ThrottlingException", "Message": "Rate exceeded"'),
        (200, "<html>not json</html>", "JSONDecodeError"),
        (200, {"protection": {"ProtectionEnabled": False, "TaskArn": TASK_ARN}},
         "does not confirm ProtectionEnabled=True"),
    ],
)  # fmt: skip
def test_agent_errors_are_logged_survived_and_retried(
    agent: FakeAgent,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    status: int,
    answer: object,
    logged: str,
) -> None:
    agent.answers.append((status, answer))
    protection = protection_for(agent, clock)
    with caplog.at_level(logging.INFO, logger="celery_ecs.protection"):
        protection.update(busy=True)
        assert not protection.protected
        assert len(warnings(caplog)) == 1 and logged in warnings(caplog)[0]

        clock.advance(1)  # the next tick retries
        protection.update(busy=True)
    assert agent.calls == [ENABLE, ENABLE]
    assert protection.protected
    assert "agent answering again after 1 failures" in caplog.text


def test_connection_refused_is_retried_with_a_growing_delay(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    protection = TaskProtection(
        f"http://127.0.0.1:{closed_port()}", clock=clock, retry_delay=1, max_retry_delay=4
    )
    attempts_at = []
    with caplog.at_level(logging.WARNING, logger="celery_ecs.protection"):
        for second in range(20):
            before = len(caplog.records)
            protection.update(busy=True)
            if len(caplog.records) > before:
                attempts_at.append(second)
            clock.advance(1)
    assert "Connection refused" in caplog.records[0].getMessage()
    # Delays 1, 2, 4, then capped at 4.
    assert attempts_at == [0, 1, 3, 7, 11, 15, 19]
    assert not protection.protected


def test_a_hanging_agent_times_out_and_the_call_is_retried(
    agent: FakeAgent, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    protection = TaskProtection(agent.url, clock=clock, request_timeout=0.2)
    agent.hanging.set()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="celery_ecs.protection"):
        protection.update(busy=True)
    assert time.monotonic() - started < 30  # the agent would hang for 60 s
    assert "timed out" in warnings(caplog)[0]
    assert not protection.protected

    agent.hanging.clear()
    agent.released.set()
    clock.advance(1)
    protection.update(busy=True)
    assert protection.protected


def test_an_enable_that_timed_out_may_have_worked_so_idle_turns_it_off(
    agent: FakeAgent, clock: FakeClock
) -> None:
    protection = TaskProtection(agent.url, clock=clock, request_timeout=0.2, idle_grace_seconds=0)
    agent.hanging.set()
    protection.update(busy=True)  # the agent may well have applied it
    agent.hanging.clear()
    agent.released.set()
    clock.advance(1)
    protection.update(busy=False)
    assert agent.calls == [ENABLE, DISABLE]


def test_a_failed_disable_is_retried_until_protection_would_have_expired(
    agent: FakeAgent, clock: FakeClock
) -> None:
    protection = protection_for(agent, clock, idle_grace_seconds=0, max_retry_delay=60)
    protection.update(busy=True)
    agent.answers.extend([(500, "down")] * 100)
    for _ in range(40 * 60):  # 40 minutes of idle ticks, one a second
        protection.update(busy=False)
        clock.advance(1)
    disables = agent.calls[1:]
    assert disables and all(call == DISABLE for call in disables)
    # Retried at 1, 2, 4 ... 60 s apart, and given up once the 15 minutes (+1) have passed.
    assert 15 < len(disables) < 25


def test_a_failed_disable_succeeds_on_retry(agent: FakeAgent, clock: FakeClock) -> None:
    protection = protection_for(agent, clock, idle_grace_seconds=0)
    protection.update(busy=True)
    agent.answers.append((503, "busy"))
    protection.update(busy=False)
    clock.advance(1)
    protection.update(busy=False)
    clock.advance(1)
    protection.update(busy=False)
    assert agent.calls == [ENABLE, DISABLE, DISABLE]
    assert not protection.protected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"expires_in_minutes": 0}, "1..2880"),
        ({"expires_in_minutes": 2881}, "1..2880"),
        ({"expires_in_minutes": 10, "renew_before_minutes": 10}, "below expires_in_minutes"),
        ({"renew_before_minutes": 0}, "above 0"),
    ],
)
def test_invalid_timings_are_refused(options: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskProtection("http://127.0.0.1:1", **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The polling thread


class _Request:
    """Stands in for a celery.worker.request.Request in the worker's state sets."""


def test_the_worker_step_follows_the_worker_state(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECS_AGENT_URI", agent.url)
    monkeypatch.setattr(protection_module, "POLL_INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(protection_module, "IDLE_GRACE_SECONDS", 0.0)
    step = TaskProtectionStep(parent=None)
    assert step.include_if(worker=None)
    poller = step.create(worker=None)
    poller.start()
    try:
        request = _Request()
        worker_state.reserved_requests.add(request)  # prefetched: protect already
        wait_for(lambda: agent.calls == [ENABLE], 30, what="protection on")
        worker_state.active_requests.add(request)
        worker_state.reserved_requests.discard(request)
        worker_state.active_requests.discard(request)
        wait_for(lambda: agent.calls == [ENABLE, DISABLE], 30, what="protection off")
    finally:
        poller.stop()
    assert not any(thread.name == "ecs-task-protection" for thread in threading.enumerate())


def test_the_step_is_left_out_outside_ecs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ECS_AGENT_URI", raising=False)
    with caplog.at_level(logging.INFO, logger="celery_ecs.protection"):
        assert not TaskProtectionStep(parent=None).include_if(worker=None)
    assert "ECS_AGENT_URI is not set" in caplog.text


@pytest.mark.redis  # imports the app in a fresh process
@pytest.mark.parametrize("enabled", ["true", "false"])
def test_the_app_registers_the_step_only_when_enabled(enabled: str, tmp_path: Path) -> None:
    env = app_environment("redis://127.0.0.1:1/0", tmp_path, CELERY_TASK_PROTECTION=enabled)
    steps = subprocess.run(
        [sys.executable, "-c", "from app.celery_app import app; print(*app.steps['worker'])"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ("TaskProtectionStep" in steps) is (enabled == "true")


def test_the_polling_thread_survives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")

    thread = PeriodicThread("flaky", 0.01, flaky)
    with caplog.at_level(logging.ERROR, logger="celery_ecs.periodic"):
        thread.start()
        try:
            wait_for(lambda: len(calls) >= 3, 30, what="calls after the error")
        finally:
            thread.stop()
    assert "flaky: unexpected error; the next run happens as usual" in caplog.text
    assert "RuntimeError: a bug" in caplog.text


# ---------------------------------------------------------------------------------------------
# A real worker

# Runs the worker command with the idle grace shortened, so protection goes off within a tick.
_WORKER_WITH_SHORT_IDLE_GRACE = (
    "import sys, celery_ecs.protection; celery_ecs.protection.IDLE_GRACE_SECONDS = 0.0; "
    "from celery.__main__ import main; sys.argv[0] = 'celery'; main()"
)


def test_a_real_worker_is_protected_exactly_while_it_runs_a_task(
    agent: FakeAgent,
    app_env: dict[str, str],
    redis_client: redis.Redis,
    tmp_path: Path,
    processes: list[AppProcess],
) -> None:
    env = {**app_env, "ECS_AGENT_URI": agent.url, "CELERY_TASK_PROTECTION": "true"}
    argv = [
        sys.executable, "-c", _WORKER_WITH_SHORT_IDLE_GRACE,
        *worker_command("protected", ("default",), 1)[1:], "--pool", "prefork",
    ]  # fmt: skip
    worker = start_process("protected", argv, env, tmp_path)
    processes.append(worker)
    heartbeat = tmp_path / "celery-worker.heartbeat"
    wait_for(lambda: heartbeat.exists() or not worker.alive(), 30, what="the worker to start")
    assert worker.alive(), worker.logs()
    assert agent.calls == [], "idle worker: no protection"

    send_task(
        app_env["CELERY_BROKER_URL"], "app.tasks.apply_credit", queue="default",
        kwargs={"idempotency_key": "protected-1", "account": "acct", "amount": 1,
                "work_seconds": 3},
    )  # fmt: skip
    wait_for(lambda: agent.calls, 30, what="protection on")
    assert agent.calls == [ENABLE]
    assert redis_client.get("attempts:protected-1") == "1"
    assert redis_client.get("idem:protected-1") is None, "the task was still running"

    wait_for(lambda: redis_client.get("idem:protected-1"), 30, what="the task to finish")
    wait_for(lambda: len(agent.calls) == 2, 30, what="protection off")
    assert agent.calls == [ENABLE, DISABLE]

    assert worker.stop(timeout=15) == 0, worker.logs()
    assert "ECS task protection on for 15 minutes" in worker.logs()
    assert "Traceback" not in worker.logs()
