"""The HTTP front of the task queue: enqueue allowlisted tasks and read their results.

    POST /tasks/<name>   JSON object of keyword arguments -> 202 {"id", "task", "status_url"}
    GET  /tasks/<id>     -> 200 {"id", "state", "result"} (+ "error" when the task failed)
    GET  /livez          the process answers (no broker call)
    GET  /readyz         the broker (and the result store, if separate) answers a PING
    GET  /openapi.json   the API as an OpenAPI 3.1 document (``app.openapi``)

Every request but the last three (``OPEN_ENDPOINTS``) carries an API key,
``Authorization: Bearer <key>`` (``app.api_keys``); without one of the accepted keys it gets
401 ``unauthorized`` with ``WWW-Authenticate: Bearer``, before anything else is looked at.

The arguments of each task are validated with its JSON Schema (``app.arguments``). Every error,
including Werkzeug's own (404, 405, 413...), is a JSON body
``{"error": {"code", "message", "details"?}}`` (gunicorn's own: ``celery_ecs.gunicorn_worker``); bad
input never yields a 500.

Run by gunicorn (``celery_ecs.gunicorn_conf``): ``gunicorn --config python:celery_ecs.gunicorn_conf
"app.web:create_app()"``. Flask and gunicorn's threaded workers suit this app: the Celery client
is synchronous (one blocking publish per request), and gunicorn's graceful shutdown lets the
requests in flight at SIGTERM finish.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import redis
from celery import Task, states
from celery.backends.base import KeyValueStoreBackend
from flask import Flask, Request, Response, jsonify, request
from jsonschema import Draft202012Validator
from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.exceptions import (
    ClientDisconnected,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
)
from werkzeug.routing import BaseConverter
from werkzeug.wsgi import get_input_stream

from app import api_keys, arguments, openapi, tasks
from app.celery_app import app as celery_app
from celery_ecs import publish_only
from celery_ecs.names import LIVENESS_PATH
from celery_ecs.settings import ApiKeysSettings, Settings, WebSettings

log = logging.getLogger(__name__)

#: Longest wait, in seconds, for one Redis round trip (a connect or a command).
REDIS_ROUND_TRIP_TIMEOUT = 2.0
#: What 503 responses tell clients to wait before retrying, in seconds.
RETRY_AFTER_SECONDS = 5
#: Back-off between publish attempts, in seconds (kombu's retry policy keys).
PUBLISH_RETRY_INTERVALS = {"interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}
#: Cap on publish attempts. The deadline bounds the time; this bounds a run of instant failures.
PUBLISH_MAX_RETRIES = 10

#: Celery's task ids: lowercase UUIDs.
TASK_ID = re.compile(openapi.TASK_ID)
#: The endpoints anyone may call: the health checks (the load balancer's and ECS's carry no
#: key) and the API's description. Every other endpoint needs an API key.
OPEN_ENDPOINTS = frozenset({"livez", "readyz", "openapi_document"})
#: The ``WWW-Authenticate`` challenge of a 401 (RFC 6750, section 3).
AUTH_REALM = "celery-ecs"


# --- Errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the app refuses, rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    details: object = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    error: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


# --- Authentication ----------------------------------------------------------------------------


def authenticate(req: Request, keys: api_keys.AcceptedKeys) -> None:
    """Return if ``req`` carries an accepted key; raise the 401 (or 503) ApiError otherwise."""
    credentials = req.authorization
    if credentials is None or credentials.type != "bearer" or not credentials.token:
        # RFC 6750, section 3.1: no error code when the request carried no credentials.
        raise ApiError(
            401,
            "unauthorized",
            "this endpoint needs an API key: send the header Authorization: Bearer <key>",
            headers={"WWW-Authenticate": f'Bearer realm="{AUTH_REALM}"'},
        )
    try:
        accepted = keys.accepts(credentials.token)
    except api_keys.KeysUnavailable:
        # The keys cannot be read: refuse everyone (never accept unchecked), and say it passes.
        raise unavailable(
            "auth_unavailable", "API keys cannot be checked now; retry later"
        ) from None
    if not accepted:
        raise ApiError(
            401,
            "unauthorized",
            "the API key is not one of the accepted keys",
            headers={
                "WWW-Authenticate": f'Bearer realm="{AUTH_REALM}", error="invalid_token"'
            },
        )


# --- Arguments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowedTask:
    """A task the web may enqueue, and the JSON Schema of the keyword arguments it accepts."""

    task: Task[Any, Any]
    arguments: Mapping[str, Any]
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "validator", arguments.validator_for(self.arguments))

    def problems(self, kwargs: Mapping[str, object]) -> list[dict[str, str]]:
        """One ``{"field", "message"}`` per unknown, missing or invalid argument."""
        return arguments.problems(self.validator, kwargs)


#: HTTP name -> task. Nothing else can be enqueued over HTTP.
ALLOWED_TASKS: dict[str, AllowedTask] = {
    "apply_credit": AllowedTask(tasks.apply_credit, arguments.APPLY_CREDIT),
    "generate_report": AllowedTask(tasks.generate_report, arguments.GENERATE_REPORT),
    "purge_expired_records": AllowedTask(
        tasks.purge_expired_records, arguments.PURGE_EXPIRED_RECORDS
    ),
    "noop": AllowedTask(tasks.noop, arguments.NOOP),
}


# POST /tasks/<name> and GET /tasks/<id> share a path template. Each rule leaves out the other's
# segments, so /tasks/apply_credit is a resource for POST alone and /tasks/<id> one for GET alone:
# their 405s and OPTIONS list exactly the methods the OpenAPI document gives them.


class TaskNameSegment(BaseConverter):
    """A path segment that is not a task id."""

    regex = f"(?!{openapi.TASK_ID})[^/]+"


class TaskIdSegment(BaseConverter):
    """A path segment that is not the name of an allowed task."""

    regex = f"(?!{arguments.whole('|'.join(map(re.escape, ALLOWED_TASKS)))})[^/]+"


class _NotJson(ValueError):
    """Valid JSON syntax this API refuses: duplicate keys, NaN and Infinity."""


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON leaves duplicate keys undefined; taking the last one would hide a client's mistake.
    obj = dict(pairs)
    if len(obj) < len(pairs):
        counts = Counter(key for key, _ in pairs)
        duplicates = ", ".join(json.dumps(key) for key, n in sorted(counts.items()) if n > 1)
        raise _NotJson(f"duplicate keys {duplicates}")
    return obj


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not JSON")


def _number(text: str) -> int | float:
    # JSON has one number type: 25.0 is the integer 25 (JSON Schema's "integer" agrees), and the
    # task gets an int, as if the client had written 25 (Redis's HINCRBY refuses "25.0").
    number = float(text)
    return int(number) if number.is_integer() else number


def read_body(req: Request) -> bytes:
    """The body, or RequestEntityTooLarge (413) if it is longer than ``max_content_length``.

    Werkzeug checks a Content-Length against the limit, but stops reading a body without one
    (``Transfer-Encoding: chunked``) at the limit and returns what it read: an oversized body
    would arrive cut short. Reading up to one byte more tells a body at the limit from a longer one.
    """
    limit = req.max_content_length
    if limit is None:
        return req.get_data(cache=False)
    try:
        body = get_input_stream(req.environ, max_content_length=limit + 1).read()
    except ClientDisconnected:  # what Werkzeug makes of any error reading from the server
        raise ApiError(
            400, "bad_request", "the body ended early or its chunked coding is malformed"
        ) from None
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def json_object_body(req: Request) -> dict[str, Any]:
    """The body as a JSON object, or the ApiError (400/413/415/422) that says why not."""
    if not req.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json), got "
            + (json.dumps(req.mimetype) if req.mimetype else "no Content-Type"),
        )
    try:
        # JSON between systems is UTF-8 (RFC 8259); json.loads would also guess UTF-16 or 32.
        text = read_body(req).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "malformed_json", f"the body is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        body = json.loads(
            text,
            object_pairs_hook=_refuse_duplicate_keys,
            parse_constant=_refuse_constant,
            parse_float=_number,
        )
    except (json.JSONDecodeError, _NotJson) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except ValueError:  # an integer longer than Python's int_max_str_digits
        raise ApiError(400, "malformed_json", "the body holds a number too long to read") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "invalid_arguments",
            "the body must be a JSON object of keyword arguments, got " + arguments.describe(body),
        )
    return body


# --- Broker and result store -------------------------------------------------------------------


@dataclass(frozen=True)
class WaitLimits:
    """How long a request may wait on Redis, in seconds, so it ends within the request timeout.

    ``publish`` bounds a publish with its retries; the attempt in flight at the deadline may add
    a few round trips, which the other half of the request timeout covers.
    """

    round_trip: float
    publish: float

    @classmethod
    def for_request_timeout(cls, request_timeout: float) -> WaitLimits:
        return cls(
            round_trip=min(REDIS_ROUND_TRIP_TIMEOUT, request_timeout / 8),
            publish=request_timeout / 2,
        )


class BrokerUnavailable(Exception):
    """The broker did not take the message before the publish deadline."""


class TaskPublisher:
    """Publishes tasks over a pool of broker connections with bounded waits."""

    def __init__(self, broker_url: str, limits: WaitLimits, pool_size: int) -> None:
        self.limits = limits
        self.broker = maybe_sanitize_url(broker_url)
        connection: Connection = celery_app.connection_for_write(
            url=broker_url,
            transport_options={
                "socket_timeout": limits.round_trip,
                "socket_connect_timeout": limits.round_trip,
                # One connect attempt when a channel is opened; the publish retry policy below
                # (with its deadline) decides about any further attempt.
                "max_retries": 0,
            },
        )
        # One connection per request thread: a kombu connection is not thread-safe.
        self.pool = connection.Pool(limit=pool_size)

    def publish(self, task: Task[Any, Any], kwargs: Mapping[str, object]) -> str:
        """Send ``task`` with ``kwargs``; return its id or raise BrokerUnavailable."""
        deadline = time.monotonic() + self.limits.publish

        def give_up_at_deadline(exc: Exception, interval: float) -> None:
            if time.monotonic() + interval >= deadline:
                raise exc
            log.warning("publishing %s: %s; retrying in %.1fs", task.name, exc, interval)

        try:
            with self.pool.acquire(block=True, timeout=self.limits.publish) as connection:
                # celery-types leaves out the options apply_async hands on to send_task.
                result = task.apply_async(  # type: ignore[call-arg]
                    kwargs=dict(kwargs),
                    connection=connection,
                    retry=True,
                    retry_policy={
                        **PUBLISH_RETRY_INTERVALS,
                        "max_retries": PUBLISH_MAX_RETRIES,
                        "errback": give_up_at_deadline,
                    },
                )
        except (OperationalError, redis.RedisError, OSError) as exc:
            # An error here may follow a write the broker received but did not confirm, so the
            # task may still run: callers retry with the same idempotency key.
            log.error("could not publish %s to %s: %s", task.name, self.broker, exc)
            raise BrokerUnavailable(str(exc)) from exc
        return str(result.id)


def redis_client(url: str, limits: WaitLimits) -> redis.Redis:
    # One retry on a fresh connection covers a pooled connection the server has closed
    # (restart, failover); more would stretch the wait past the request's budget.
    return redis.Redis.from_url(
        url,
        socket_timeout=limits.round_trip,
        socket_connect_timeout=limits.round_trip,
        retry=Retry(NoBackoff(), 1),
    )


def exception_summary(stored: object) -> dict[str, str]:
    """Type and message of an exception as Celery stores it (JSON), without the traceback."""
    if not isinstance(stored, Mapping):
        return {"type": "Error", "message": str(stored)}
    args = stored.get("exc_message")
    if isinstance(args, list | tuple):
        message = str(args[0]) if len(args) == 1 else ", ".join(map(str, args))
    else:
        message = "" if args is None else str(args)
    return {"type": str(stored.get("exc_type", "Error")), "message": message}


class TaskResults:
    """Reads task states from the result backend without Celery's result machinery.

    The web's own client has bounded timeouts; Celery's result backend client would wait up
    to ``redis_socket_timeout`` (120 s by default) on an unresponsive server.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def status(self, task_id: str) -> dict[str, object]:
        # Celery's Redis backend (celery_ecs.settings), for its keys and decoding only: its own
        # connection is never used. redis-py types a reply for its synchronous and asyncio
        # clients alike.
        backend = cast(KeyValueStoreBackend, celery_app.backend)
        raw = cast(bytes | None, self.client.get(backend.get_key_for_task(task_id)))
        # No record: queued, unknown or expired (after CELERY_RESULT_EXPIRES) look the same.
        if raw is None:
            return {"id": task_id, "state": states.PENDING, "result": None}
        meta = backend.decode(raw)
        state = str(meta.get("status", states.PENDING))
        body: dict[str, object] = {
            "id": task_id,
            "state": state,
            "result": meta.get("result") if state == states.SUCCESS else None,
        }
        if state in states.EXCEPTION_STATES:
            body["error"] = exception_summary(meta.get("result"))
        return body


# --- The app -----------------------------------------------------------------------------------


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    """The web app, configured from ``env`` (default: the process environment).

    The broker and result store are reached with the URLs read here, not with the Celery
    app's import-time configuration: the factory owns its configuration, like any Flask app.
    """
    settings = Settings.from_env(env)
    web = WebSettings.from_env(env)
    limits = WaitLimits.for_request_timeout(web.request_timeout)

    publish_only()

    keys = api_keys.AcceptedKeys(api_keys.source_for(ApiKeysSettings.from_env(env)))
    publisher = TaskPublisher(settings.broker_url, limits, pool_size=web.threads)
    results_client = redis_client(settings.result_backend, limits)
    readiness: dict[str, redis.Redis] = {"broker": redis_client(settings.broker_url, limits)}
    if settings.result_backend != settings.broker_url:
        readiness["result_backend"] = results_client
    results = TaskResults(results_client)

    app = Flask(__name__)
    app.url_map.converters.update(task_name=TaskNameSegment, task_id=TaskIdSegment)
    app.config["MAX_CONTENT_LENGTH"] = web.max_body_bytes
    document = openapi.document(
        {name: allowed.arguments for name, allowed in ALLOWED_TASKS.items()}, web.max_body_bytes
    )

    @app.before_request
    def require_api_key() -> None:
        # Every endpoint but the open ones; a request no route matches (endpoint None) goes on
        # to its 404 or 405, which tells nothing.
        if request.endpoint is not None and request.endpoint not in OPEN_ENDPOINTS:
            authenticate(request, keys)

    @app.post("/tasks/<task_name:name>")
    def submit_task(name: str) -> Response:
        allowed = ALLOWED_TASKS.get(name)
        if allowed is None:
            raise ApiError(
                404,
                "unknown_task",
                f"no task named {json.dumps(name)} can be enqueued",
                details={"allowed": sorted(ALLOWED_TASKS)},
            )
        kwargs = json_object_body(request)
        problems = allowed.problems(kwargs)
        if problems:
            fields = ", ".join(problem["field"] for problem in problems)
            raise ApiError(422, "invalid_arguments", f"invalid arguments: {fields}", problems)
        try:
            task_id = publisher.publish(allowed.task, kwargs)
        except BrokerUnavailable:
            raise unavailable(
                "broker_unavailable",
                "the task could not be queued; retry later (with the same idempotency key)",
            ) from None
        status_url = f"/tasks/{task_id}"
        response = jsonify(id=task_id, task=name, status_url=status_url)
        response.status_code = 202
        response.headers["Location"] = status_url
        return response

    @app.get("/tasks/<task_id:task_id>")
    def task_status(task_id: str) -> Response:
        if not TASK_ID.fullmatch(task_id):
            raise ApiError(
                404, "not_found", f"{json.dumps(task_id)} is not a task id (a lowercase UUID)"
            )
        try:
            return jsonify(results.status(task_id))
        except redis.RedisError as exc:
            log.error("could not read the state of task %s: %s", task_id, exc)
            raise unavailable(
                "result_backend_unavailable", "task states cannot be read now"
            ) from None

    @app.get("/openapi.json")
    def openapi_document() -> Response:
        return jsonify(document)

    @app.get(LIVENESS_PATH)
    def livez() -> Response:
        return jsonify(status="alive")

    @app.get("/readyz")
    def readyz() -> Response:
        unreachable = {}
        for name, client in readiness.items():
            try:
                client.ping()
            except redis.RedisError as exc:
                unreachable[name] = str(exc)
        try:
            keys.current()
        except api_keys.KeysUnavailable as exc:
            unreachable["api_keys"] = str(exc)
        if unreachable:
            log.warning("not ready: %s", unreachable)
            raise unavailable("not_ready", f"unreachable: {', '.join(unreachable)}")
        return jsonify(status="ready")

    register_error_handlers(app)
    return app


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Werkzeug's own errors (no route, wrong method, body too large...), with their headers
        # (Allow on a 405), as JSON.
        status = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, code, exc.description or exc.name, headers=headers)

    @app.errorhandler(InternalServerError)
    def internal_error(exc: InternalServerError) -> Response:
        # Flask has logged the exception with its traceback before calling this; the client
        # learns nothing about the internals.
        return error_response(500, "internal_error", "the server failed to handle the request")
