"""The web API: tasks go in over HTTP, real workers run them, results come back over HTTP.

Most tests drive the Flask app in-process with its test client against a real Redis and a real
worker; the last ones run the container's exact gunicorn command.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from celery import states
from celery.backends.redis import RedisBackend
from flask.testing import FlaskClient
from gunicorn.workers.gthread import ThreadWorker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app
from werkzeug.wrappers import Request

from app.celery_app import app as celery_app
from app.web import ALLOWED_TASKS, REDIS_ROUND_TRIP_TIMEOUT, TaskResults
from celery_ecs.gunicorn_worker import JsonErrorWorker
from infra.containers import WEB_COMMAND
from policy.invariants import aws_types
from testkit.redis_server import free_port
from tests.support import (
    AUTHORIZATION,
    AppProcess,
    ClientFactory,
    run_program,
    start_process,
    start_worker,
    wait_for,
)

CREDIT = {"idempotency_key": "order-1:credit", "account": "acct-1", "amount": 25}


@pytest.fixture
def worker(app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]) -> AppProcess:
    process = start_worker(app_env, tmp_path)
    processes.append(process)
    return process


def submit(client: FlaskClient, name: str, kwargs: dict[str, object]) -> str:
    response = client.post(f"/tasks/{name}", json=kwargs)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body == {"id": body["id"], "task": name, "status_url": f"/tasks/{body['id']}"}
    assert response.headers["Location"] == f"/tasks/{body['id']}"
    return str(body["id"])


def finished(client: FlaskClient, task_id: str, timeout: float = 20) -> dict[str, object]:
    def state() -> dict[str, object] | None:
        response = client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        return body if body["state"] in states.READY_STATES else None

    return wait_for(state, timeout, what=f"task {task_id} to finish")


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


# --- Tasks in, results out ----------------------------------------------------------------------


def test_every_allowed_task_runs_and_its_result_is_visible(
    client: FlaskClient, worker: AppProcess
) -> None:
    runs = [
        ("apply_credit", CREDIT, {"applied": True, "account": "acct-1", "balance": 25}),
        # The credit's ledger log entry is older than a retention of 0 s.
        ("purge_expired_records", {"retention_seconds": 0}, {"removed": 1}),
        (
            "generate_report",
            {"report_id": "weekly-1", "steps": 3, "step_seconds": 0},
            {"report_id": "weekly-1", "steps": 3, "continuations": 0},
        ),
        ("noop", {}, None),
    ]
    assert sorted(name for name, _, _ in runs) == sorted(ALLOWED_TASKS)

    for name, kwargs, expected in runs:
        task_id = submit(client, name, kwargs)
        outcome = finished(client, task_id)
        assert outcome == {"id": task_id, "state": "SUCCESS", "result": expected}, name


def test_the_same_credit_posted_twice_is_applied_once(
    client: FlaskClient, worker: AppProcess, redis_client: redis.Redis
) -> None:
    first, second = submit(client, "apply_credit", CREDIT), submit(client, "apply_credit", CREDIT)

    outcomes = [finished(client, task_id) for task_id in (first, second)]

    assert sorted(outcome["result"]["applied"] for outcome in outcomes) == [False, True]
    assert redis_client.hget("ledger:balances", "acct-1") == "25"
    assert redis_client.get(f"attempts:{CREDIT['idempotency_key']}") == "2"  # both ran


def test_allowlisted_names_map_to_registered_tasks() -> None:
    for name, allowed in ALLOWED_TASKS.items():
        assert allowed.task.name == f"app.tasks.{name}"
        assert allowed.task.name in celery_app.tasks


def test_a_failed_task_shows_its_error_but_not_its_traceback(
    client: FlaskClient, redis_url: str
) -> None:
    task_id = str(uuid.uuid4())
    # Stored exactly as a worker stores a failure.
    RedisBackend(app=celery_app, url=redis_url).mark_as_failure(
        task_id,
        ZeroDivisionError("division by zero"),
        traceback='Traceback (most recent call last):\n  File "/app/app/tasks.py"',
    )

    response = client.get(f"/tasks/{task_id}")

    assert response.status_code == 200
    assert response.get_json() == {
        "id": task_id,
        "state": "FAILURE",
        "result": None,
        "error": {"type": "ZeroDivisionError", "message": "division by zero"},
    }
    assert "Traceback" not in response.get_data(as_text=True)


def test_an_unknown_task_id_is_pending_and_a_malformed_one_is_not_found(
    client: FlaskClient,
) -> None:
    task_id = str(uuid.uuid4())
    # Celery cannot tell a queued task from one it never heard of.
    assert client.get(f"/tasks/{task_id}").get_json() == {
        "id": task_id,
        "state": "PENDING",
        "result": None,
    }
    assert_error(client.get("/tasks/not-a-task-id"), 404, "not_found")
    assert_error(client.get(f"/tasks/{task_id.upper()}"), 404, "not_found")


# --- Bad input: a JSON error, never a 500, nothing queued -----------------------------------------

JSON = "application/json"


def bad(
    case: str,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
    field: str | None = None,
) -> object:
    return pytest.param(method, path, body, content_type, status, code, field, id=case)


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code", "field"),
    [
        bad("unknown task", "POST", "/tasks/drop_database", b"{}", JSON, 404, "unknown_task"),
        bad("celery name", "POST", "/tasks/app.tasks.noop", b"{}", JSON, 404, "unknown_task"),
        bad("not allowlisted", "POST", "/tasks/nightly_report", b"{}", JSON, 404, "unknown_task"),
        bad("truncated JSON", "POST", "/tasks/noop", b'{"a": ', JSON, 400, "malformed_json"),
        bad("empty body", "POST", "/tasks/noop", b"", JSON, 400, "malformed_json"),
        bad(
            "duplicate key", "POST", "/tasks/noop", b'{"a": 1, "a": 2}', JSON, 400, "malformed_json"
        ),
        bad("NaN", "POST", "/tasks/apply_credit", b'{"amount": NaN}', JSON, 400, "malformed_json"),
        bad("bad UTF-8", "POST", "/tasks/noop", b'{"a": "\xff"}', JSON, 400, "malformed_json"),
        bad(
            "deep nesting",
            "POST",
            "/tasks/noop",
            b"[" * 20_000 + b"]" * 20_000,
            JSON,
            400,
            "malformed_json",
        ),
        bad("5000-digit number", "POST", "/tasks/noop", b"1" * 5000, JSON, 400, "malformed_json"),
        bad("array body", "POST", "/tasks/noop", b"[]", JSON, 422, "invalid_arguments"),
        bad("string body", "POST", "/tasks/noop", b'"x"', JSON, 422, "invalid_arguments"),
        bad(
            "unknown field", "POST", "/tasks/noop", b'{"x": 1}', JSON, 422, "invalid_arguments", "x"
        ),
        bad(
            "text/plain", "POST", "/tasks/noop", b"{}", "text/plain", 415, "unsupported_media_type"
        ),
        bad("no content type", "POST", "/tasks/noop", b"{}", None, 415, "unsupported_media_type"),
        bad(
            "oversized",
            "POST",
            "/tasks/noop",
            b"{" + b" " * 70_000 + b"}",
            JSON,
            413,
            "request_entity_too_large",
        ),
        bad("PUT", "PUT", "/tasks/noop", b"{}", JSON, 405, "method_not_allowed"),
        bad("DELETE", "DELETE", "/tasks/" + "0" * 36, b"", None, 405, "method_not_allowed"),
        bad("POST /readyz", "POST", "/readyz", b"{}", JSON, 405, "method_not_allowed"),
        bad("no such path", "GET", "/admin", b"", None, 404, "not_found"),
        bad("no task id", "GET", "/tasks", b"", None, 404, "not_found"),
    ],
)
def test_bad_requests_get_a_json_error(
    client: FlaskClient,
    redis_client: redis.Redis,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
    field: str | None,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.open(path, method=method, data=body, headers=headers)

    error = assert_error(response, status, code)
    if field is not None:
        assert field in error["message"]
    if status == 405:
        assert "Allow" in response.headers
    assert redis_client.llen("default") == 0


#: Marks an argument a test case leaves out.
OMIT = object()


@pytest.mark.parametrize(
    ("task", "changes", "field"),
    [
        ("apply_credit", {"amount": "25"}, "amount"),
        ("apply_credit", {"amount": True}, "amount"),  # bool is not an int
        ("apply_credit", {"amount": 25.5}, "amount"),
        ("apply_credit", {"amount": 0}, "amount"),
        ("apply_credit", {"amount": 10**12}, "amount"),
        ("apply_credit", {"amount": None}, "amount"),
        ("apply_credit", {"idempotency_key": "has space"}, "idempotency_key"),
        ("apply_credit", {"idempotency_key": ""}, "idempotency_key"),
        ("apply_credit", {"idempotency_key": "k" * 129}, "idempotency_key"),
        ("apply_credit", {"account": "a" * 65}, "account"),
        ("apply_credit", {"account": 7}, "account"),
        ("apply_credit", {"account": "nul\x00"}, "account"),
        ("apply_credit", {"account": "two\nlines"}, "account"),
        ("apply_credit", {"account": "\x1b[31mred"}, "account"),
        ("apply_credit", {"account": "c1\x85"}, "account"),
        ("apply_credit", {"account": "lone \ud800"}, "account"),
        ("apply_credit", {"idempotency_key": "key\n"}, "idempotency_key"),
        ("apply_credit", {"work_seconds": 61}, "work_seconds"),
        ("apply_credit", {"work_seconds": -1}, "work_seconds"),
        ("apply_credit", {"work_seconds": False}, "work_seconds"),
        ("apply_credit", {"idempotency_key": OMIT, "account": OMIT}, "account"),
        ("apply_credit", {"extra": 1}, "extra"),
        ("generate_report", {"report_id": "r", "steps": 0}, "steps"),
        ("generate_report", {"report_id": "r", "steps": 1001}, "steps"),
        ("generate_report", {"report_id": "r", "steps": 2, "step_seconds": "1"}, "step_seconds"),
        ("generate_report", {"report_id": OMIT, "steps": 2}, "report_id"),
        ("generate_report", {"report_id": "r", "steps": OMIT}, "steps"),
        ("generate_report", {"report_id": "\udc00", "steps": 2}, "report_id"),
        ("purge_expired_records", {"retention_seconds": -1}, "retention_seconds"),
        ("purge_expired_records", {"retention_seconds": 1.5}, "retention_seconds"),
        ("noop", {"anything": None}, "anything"),
    ],
)
def test_invalid_arguments_are_refused_naming_the_field(
    client: FlaskClient,
    redis_client: redis.Redis,
    task: str,
    changes: dict[str, object],
    field: str,
) -> None:
    valid = {**CREDIT, "work_seconds": 0.5} if task == "apply_credit" else {}
    kwargs = {name: value for name, value in {**valid, **changes}.items() if value is not OMIT}

    response = client.post(f"/tasks/{task}", json=kwargs)

    error = assert_error(response, 422, "invalid_arguments")
    assert field in error["message"]
    assert field in {problem["field"] for problem in error["details"]}
    assert redis_client.llen("default") == redis_client.llen("long") == 0


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"account": None}, "account", "expected a string, got null"),
        ({"account": 7}, "account", "expected a string, got 7"),
        ({"account": {"name": "x"}}, "account", "expected a string, got an object"),
        ({"amount": "25"}, "amount", "expected an integer, got a string"),
        ({"amount": True}, "amount", "expected an integer, got true"),
        ({"amount": 25.5}, "amount", "expected an integer, got 25.5"),
        ({"amount": [25]}, "amount", "expected an integer, got an array"),
        ({"amount": 0}, "amount", "must not be 0"),
        ({"amount": -(10**12)}, "amount", "must be between -1000000000 and 1000000000"),
        ({"work_seconds": "1"}, "work_seconds", "expected a number, got a string"),
        ({"account": ""}, "account", "must be 1 to 64 characters long"),
        ({"account": "a\x00"}, "account", "must not contain control characters"),
        ({"account": "\udfff"}, "account", "must not contain lone surrogates"),
        ({"idempotency_key": "a b"}, "idempotency_key", "may contain only letters, digits"),
        ({"amount": OMIT}, "amount", "is required"),
        ({"extra": 1}, "extra", "is not an argument of this task"),
    ],
)
def test_messages_speak_json_not_python(
    client: FlaskClient, changes: dict[str, object], field: str, message: str
) -> None:
    kwargs = {name: value for name, value in {**CREDIT, **changes}.items() if value is not OMIT}

    error = assert_error(client.post("/tasks/apply_credit", json=kwargs), 422, "invalid_arguments")

    (problem,) = error["details"]
    assert problem["field"] == field
    assert problem["message"].startswith(message)
    assert error["message"] == f"invalid arguments: {field}"


def test_a_body_that_is_not_an_object_is_named_by_its_json_type(client: FlaskClient) -> None:
    for body, described in [(b"[]", "an array"), (b"null", "null"), (b"1.5", "1.5")]:
        response = client.post("/tasks/noop", data=body, content_type=JSON)
        error = assert_error(response, 422, "invalid_arguments")
        assert error["message"].endswith(f"JSON object of keyword arguments, got {described}")


def queued_kwargs(redis_client: redis.Redis, queue: str) -> list[dict[str, object]]:
    """The keyword arguments of the task messages waiting in ``queue``, oldest first (kombu's
    Redis transport pushes on the left)."""
    messages = [json.loads(raw) for raw in reversed(redis_client.lrange(queue, 0, -1))]
    return [json.loads(base64.b64decode(message["body"]))[1] for message in messages]


def test_a_whole_number_with_a_fraction_is_that_integer(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    # JSON has one number type and JSON Schema's "integer" is any whole number: 25.0 is 25. The
    # task must get an int (Redis's HINCRBY refuses "25.0").
    submit(client, "apply_credit", {**CREDIT, "amount": 25.0})
    submit(client, "purge_expired_records", {"retention_seconds": 1e3})

    credit, purge = queued_kwargs(redis_client, "default")
    assert credit["amount"] == 25 and type(credit["amount"]) is int
    assert purge == {"retention_seconds": 1000}


def post_streamed(client: FlaskClient, path: str, body: bytes) -> TestResponse:
    """POST ``body`` as gunicorn hands the app a chunked request: without a Content-Length, on
    a stream the server ends (``wsgi.input_terminated``)."""
    environ = EnvironBuilder(
        path, method="POST", data=body, content_type=JSON, headers=AUTHORIZATION
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    app_iter, status, headers = run_wsgi_app(client.application, environ, buffered=True)
    return TestResponse(app_iter, status, headers, request=Request(environ))


@pytest.mark.parametrize(("size", "status"), [(100, 202), (101, 413), (70_000, 413)])
def test_a_streamed_body_is_held_to_the_size_limit(
    make_client: ClientFactory, redis_client: redis.Redis, size: int, status: int
) -> None:
    client = make_client(WEB_MAX_BODY_BYTES="100")
    # Valid JSON of any length: cut at the limit, it would still be the empty object.
    body = b"{}".ljust(size)

    response = post_streamed(client, "/tasks/noop", body)

    if status == 202:
        assert response.status_code == 202, response.get_data(as_text=True)
        assert redis_client.llen("default") == 1
    else:
        assert_error(response, 413, "request_entity_too_large")
        assert redis_client.llen("default") == 0


#: Python's names for JSON's types and values, which no message may use.
PYTHON_WORDS = re.compile(r"\b(NoneType|None|True|False|dict|list|tuple|str|int|float|bool)\b")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def task_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A task name and a body: the task's own fields with any values, any JSON, any bytes."""
    name = draw(st.sampled_from([*ALLOWED_TASKS, "other"]))
    allowed = ALLOWED_TASKS.get(name)
    fields = [*(allowed.arguments["properties"] if allowed else ()), "extra"]
    body = draw(
        st.dictionaries(st.sampled_from(fields), json_values).map(json.dumps)
        | json_values.map(json.dumps)
        | st.binary(max_size=64)
    )
    return name, body.encode() if isinstance(body, str) else body


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=task_requests())
def test_no_request_body_causes_a_server_error(
    client: FlaskClient, request: tuple[str, bytes]
) -> None:
    name, body = request
    response = client.post(f"/tasks/{name}", data=body, content_type=JSON)

    assert response.status_code in (202, 400, 404, 422), response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    if response.status_code != 202:
        error = response.get_json()["error"]
        problems = error.get("details", []) if error["code"] == "invalid_arguments" else []
        for message in [error["message"], *(problem["message"] for problem in problems)]:
            assert not PYTHON_WORDS.search(message), message


def test_an_unexpected_error_is_a_logged_json_500(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: TaskResults, task_id: str) -> dict[str, object]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(TaskResults, "status", broken)

    response = client.get(f"/tasks/{uuid.uuid4()}")

    assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.get_data(as_text=True)
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[1].args == ("secret internals",)


# --- Broker trouble: 503 with Retry-After, within the request timeout ----------------------------


def test_readiness_follows_the_broker(make_client: ClientFactory) -> None:
    up = make_client()
    down = make_client(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")

    assert up.get("/readyz").get_json() == {"status": "ready"}
    assert down.get("/livez").get_json() == {"status": "alive"}
    response = down.get("/readyz")
    assert_error(response, 503, "not_ready")
    assert response.headers["Retry-After"].isdigit()


def test_readiness_follows_a_separate_result_backend(make_client: ClientFactory) -> None:
    down = make_client(CELERY_RESULT_BACKEND=f"redis://127.0.0.1:{free_port()}/0")

    response = down.get("/readyz")

    error = assert_error(response, 503, "not_ready")
    assert error["message"] == "unreachable: result_backend"  # the broker is up
    assert response.headers["Retry-After"].isdigit()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers (a hung broker)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.parametrize("broker", ["refusing", "silent"])
def test_an_unreachable_broker_gives_503_within_the_request_timeout(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture, broker: str
) -> None:
    # The publish gives up at half the request timeout: the other half is slack for a loaded
    # machine, so the bound below is the product's promise, not a race.
    request_timeout = 6
    with contextlib.ExitStack() as stack:
        url = (
            f"redis://127.0.0.1:{free_port()}/0"
            if broker == "refusing"
            else stack.enter_context(silent_server())
        )
        client = make_client(CELERY_BROKER_URL=url, WEB_REQUEST_TIMEOUT=str(request_timeout))

        started = time.monotonic()
        response = client.post("/tasks/apply_credit", json=CREDIT)
        elapsed = time.monotonic() - started

        assert_error(response, 503, "broker_unavailable")
        assert response.headers["Retry-After"].isdigit()
        assert elapsed < request_timeout
        # Never silently: the failed publish is logged.
        assert any("could not publish app.tasks.apply_credit" in r.message for r in caplog.records)

        started = time.monotonic()
        assert_error(client.get(f"/tasks/{uuid.uuid4()}"), 503, "result_backend_unavailable")
        assert time.monotonic() - started < request_timeout


def test_publishing_survives_the_broker_dropping_its_connections(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    submit(client, "noop", {})
    # What a broker restart or failover does to the pooled connection.
    killed = redis_client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1

    submit(client, "noop", {})

    assert redis_client.llen("default") == 2


# --- The container's command: gunicorn ----------------------------------------------------------


def gunicorn_argv() -> list[str]:
    """The ECS task definition's web command, with this environment's gunicorn."""
    executable, *args = WEB_COMMAND
    return [str(Path(sys.executable).parent / executable), *args]


def call(
    port: int,
    method: str,
    path: str,
    body: object = None,
    timeout: float = 30,
    authorization: dict[str, str] = AUTHORIZATION,
) -> tuple[int, dict[str, str], object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": JSON} if body is not None else {}
        data = json.dumps(body) if body is not None else None
        connection.request(method, path, body=data, headers={**headers, **authorization})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def start_web(
    env: dict[str, str], workdir: Path, processes: list[AppProcess]
) -> tuple[AppProcess, int]:
    """Start the container's web command on a free port; return it once it answers."""
    port = free_port()
    web = start_process("web", gunicorn_argv(), {**env, "WEB_PORT": str(port)}, workdir)
    processes.append(web)

    def alive() -> bool:
        if not web.alive():
            raise AssertionError(f"gunicorn exited:\n{web.logs()}")
        with contextlib.suppress(OSError):
            return call(port, "GET", "/livez", timeout=1)[0] == 200
        return False

    wait_for(alive, 20, what="gunicorn to answer")
    return web, port


def test_gunicorn_serves_the_api(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess], worker: AppProcess
) -> None:
    web, port = start_web(app_env, tmp_path, processes)

    status, headers, body = call(port, "POST", "/tasks/apply_credit", CREDIT)
    assert status == 202, body
    assert headers["Location"] == body["status_url"]

    def done() -> object:
        _, _, state = call(port, "GET", body["status_url"])
        return state if state["state"] in states.READY_STATES else None

    outcome = wait_for(done, 20, what="the credit to be applied")
    assert outcome["result"] == {"applied": True, "account": "acct-1", "balance": 25}
    status, _, body = call(port, "GET", "/readyz")
    assert (status, body) == (200, {"status": "ready"})
    status, _, body = call(port, "PATCH", "/tasks/noop", {})
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")
    assert '"POST /tasks/apply_credit HTTP/1.1" 202' in web.logs()  # the access log


def exchange(port: int, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is and read one response: status, headers (lowercase), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def chunked(body: bytes, size: int = 8192) -> bytes:
    """``body`` in the chunked transfer coding."""
    pieces = [body[start : start + size] for start in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


POST_CHUNKED = (
    b"POST /tasks/noop HTTP/1.1\r\nHost: web\r\nContent-Type: application/json\r\n"
    b"Authorization: " + AUTHORIZATION["Authorization"].encode() + b"\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def test_gunicorn_holds_a_chunked_body_to_the_size_limit(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess], redis_client: redis.Redis
) -> None:
    _, port = start_web({**app_env, "WEB_MAX_BODY_BYTES": "1000"}, tmp_path, processes)

    # Valid JSON of any length: cut at the limit, it would still be the empty object.
    at_limit = exchange(port, POST_CHUNKED + chunked(b"{}".ljust(1000)))
    over_limit = exchange(port, POST_CHUNKED + chunked(b"{}".ljust(50_000)))

    assert at_limit[0] == 202, at_limit
    status, headers, body = over_limit
    assert (status, headers["content-type"]) == (413, JSON), over_limit
    assert json.loads(body)["error"]["code"] == "request_entity_too_large"
    assert redis_client.llen("default") == 1


#: Requests gunicorn refuses (all but the last before the app sees them), with the status and
#: error code each must get.
REFUSED_BY_GUNICORN = [
    (
        "request line too long",
        b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: web\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "too many headers",
        b"GET /livez HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(60)) + b"\r\n",
        431,
        "request_header_fields_too_large",
    ),
    (
        "header too large",
        b"GET /livez HTTP/1.1\r\nHost: web\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
        431,
        "request_header_fields_too_large",
    ),
    ("not HTTP", b"HELLO\r\n\r\n", 400, "bad_request"),
    (
        "invalid header name",
        b"GET /livez HTTP/1.1\r\nHost: web\r\nBad Header: 1\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "unsupported transfer coding",
        b"POST /tasks/noop HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: rot13\r\n\r\n",
        501,
        "not_implemented",
    ),
    ("malformed chunk", POST_CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
]


def test_errors_from_gunicorn_have_the_json_error_shape(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    _, port = start_web(app_env, tmp_path, processes)

    for case, request, status, code in REFUSED_BY_GUNICORN:
        got, headers, body = exchange(port, request)

        assert (got, headers["content-type"]) == (status, JSON), (case, got, headers, body)
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message"}, case
        assert error["code"] == code, case
        assert isinstance(error["message"], str) and error["message"], case
        assert int(headers["content-length"]) == len(body), case


def gunicorn_config(env: dict[str, str]) -> dict[str, str]:
    """The settings gunicorn resolves from the container's command in ``env`` (--print-config)."""
    argv = gunicorn_argv()
    argv.insert(-1, "--print-config")  # gunicorn resolves the settings, prints them, exits
    printed = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in printed.splitlines())
    }


def test_gunicorn_configuration(app_env: dict[str, str]) -> None:
    env = {**app_env, "WEB_PORT": "8123", "WEB_THREADS": "3", "WEB_REQUEST_TIMEOUT": "17"}
    config = gunicorn_config(env)

    assert config["bind"] == "['0.0.0.0:8123']"
    assert config["worker_class"] == "celery_ecs.gunicorn_worker.JsonErrorWorker"
    assert issubclass(JsonErrorWorker, ThreadWorker)  # gthread, with JSON errors
    assert config["threads"] == "3"
    assert config["timeout"] == config["graceful_timeout"] == "17"
    assert config["worker_tmp_dir"] == "/dev/shm"
    assert config["accesslog"] == "-"
    assert config["preload_app"] == "False"
    assert int(config["keepalive"]) > 60  # above the load balancer's idle timeout


@pytest.mark.parametrize(
    ("request_timeout", "idle_timeout"), [(1, 60), (30, 60), (56, 61), (110, 115)]
)
def test_gunicorn_keeps_idle_connections_longer_than_the_load_balancer(
    app_env: dict[str, str], request_timeout: int, idle_timeout: int
) -> None:
    # The balancer, not gunicorn, must close an idle connection: if gunicorn closed it first,
    # the balancer could send a request on it just then and answer 502.
    run = run_program({"web": {"requestTimeout": request_timeout}})
    balancer = run.one(aws_types.LB_LOAD_BALANCER).inputs
    web = run.task_definitions()["web"]

    assert balancer["idleTimeout"] == idle_timeout == max(60, request_timeout + 5)
    # The rendered environment names the API keys secret: the tests' keys file goes.
    env = {k: v for k, v in app_env.items() if k != "WEB_API_KEYS_FILE"} | web.environment
    config = gunicorn_config(env)
    assert int(config["timeout"]) == request_timeout  # the rendered environment reached it
    assert int(config["keepalive"]) > balancer["idleTimeout"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEB_PORT", "70000", "WEB_PORT=70000: must be a TCP port"),
        ("WEB_THREADS", "0", "WEB_THREADS=0: must be >= 1"),
        ("WEB_REQUEST_TIMEOUT", "30s", "WEB_REQUEST_TIMEOUT='30s': expected a whole number"),
        # No source of API keys: the API never runs open.
        ("WEB_API_KEYS_FILE", "", "set exactly one of WEB_API_KEYS_SECRET_ARN"),
        (
            "WEB_API_KEYS_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:keys-AbCdEf",
            "set exactly one of WEB_API_KEYS_SECRET_ARN",
        ),
    ],
)
def test_a_bad_web_setting_stops_gunicorn_before_it_starts(
    app_env: dict[str, str], name: str, value: str, message: str
) -> None:
    argv = gunicorn_argv()
    argv.insert(-1, "--print-config")
    result = subprocess.run(
        argv, env={**app_env, name: value}, capture_output=True, text=True, timeout=30
    )

    assert result.returncode != 0
    assert message in result.stderr


class HoldingRelay:
    """A TCP relay to a real Redis that holds what its clients send until ``release()``.

    It keeps a request waiting on the broker for as long as a test needs, and tells the test
    when the request got there.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.client_waiting = threading.Event()
        self.released = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                downstream, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
                self.sockets += [downstream, upstream]
                for source, sink, held in (
                    (downstream, upstream, True),
                    (upstream, downstream, False),
                ):
                    threading.Thread(
                        target=self._pump, args=(source, sink, held), daemon=True
                    ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if held:
                    self.client_waiting.set()
                    self.released.wait()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        for sock in self.sockets:
            sock.close()


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_the_request_in_flight_finish(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess], redis_url: str
) -> None:
    request_timeout = 20
    broker = urlsplit(redis_url)
    relay = HoldingRelay((broker.hostname or "127.0.0.1", broker.port or 6379))
    try:
        env = {
            **app_env,
            "CELERY_BROKER_URL": relay.url,
            "WEB_REQUEST_TIMEOUT": str(request_timeout),
        }
        web, port = start_web(env, tmp_path, processes)
        answers: list[tuple[int, dict[str, str], object]] = []
        in_flight = threading.Thread(target=lambda: answers.append(call(port, "GET", "/readyz")))
        in_flight.start()
        wait_for(relay.client_waiting.is_set, 10, what="/readyz to wait on the broker")
        held_since = time.monotonic()

        web.signal(signal.SIGTERM)
        # The workers close their listening sockets once they begin their graceful shutdown
        # (within a second: their main loop's poll interval), and the reply is released then:
        # the request was in flight through the start of the shutdown. It is released anyway
        # before the app's wait for one Redis round trip ends (a 503, not the shutdown's doing):
        # on a loaded machine the shutdown may begin later, and the request must still finish.
        release_by = held_since + REDIS_ROUND_TRIP_TIMEOUT * 0.75
        while not refuses_connections(port) and time.monotonic() < release_by:
            time.sleep(0.05)
        assert in_flight.is_alive() and not answers  # the request is still waiting
        relay.release()
        in_flight.join(request_timeout)

        assert answers and answers[0][0] == 200 and answers[0][2] == {"status": "ready"}
        # Exited by itself within its graceful timeout (the request timeout), not killed.
        assert web.wait(timeout=request_timeout) == 0
    finally:
        relay.close()


def test_passing_liveness_checks_stay_out_of_the_access_log(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    # The load balancer and ECS ask /livez every few seconds on every task.
    web, port = start_web(app_env, tmp_path, processes)
    for _ in range(5):
        assert call(port, "GET", "/livez")[0] == 200
    assert call(port, "GET", "/readyz")[0] == 200
    wait_for(lambda: '"GET /readyz HTTP/1.1" 200' in web.logs(), 30, what="the access log")
    assert '"GET /livez' not in web.logs()
