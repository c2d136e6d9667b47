"""The ECS agent's task scale-in protection endpoint, as tasks reach it at ``$ECS_AGENT_URI``.

ECS gives every container ``ECS_AGENT_URI`` (``http://169.254.170.2/api/<task>``); a task sets its
protection with ``PUT $ECS_AGENT_URI/task-protection/v1/state`` and reads it with ``GET``. The
twin serves the same paths and shapes on the bridge's address, one URI per task, so the app's
own client (``celery_ecs.protection``) runs unchanged. Shapes and limits from the ECS developer
guide, "Amazon ECS task scale-in protection endpoint":

- ``PUT {"ProtectionEnabled": true, "ExpiresInMinutes": 1..2880}`` (default 120 minutes) and
  ``PUT {"ProtectionEnabled": false}`` answer ``{"protection": {"ExpirationDate",
  "ProtectionEnabled", "TaskArn"}}``;
- a request the API refuses answers ``{"error": {"Arn", "Code", "Message"}}`` with HTTP 400.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

STATE_PATH = "/task-protection/v1/state"
DEFAULT_EXPIRES_IN_MINUTES = 120
MAX_EXPIRES_IN_MINUTES = 2880


class ProtectedTask(Protocol):
    @property
    def arn(self) -> str: ...

    #: When protection expires (``time.time()`` seconds), or None when it is off.
    protected_until: float | None


class AgentEndpoint:
    """An HTTP server for every task's ``$ECS_AGENT_URI``; ``uri_for`` gives a task its URI."""

    def __init__(self, host: str, tasks: Callable[[str], ProtectedTask | None]) -> None:
        self._tasks = tasks
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint._handle(self, None)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                endpoint._handle(self, self.rfile.read(length))

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the twin reports protection changes itself."""

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # the bound socket's address (typeshed allows bytes)
        return f"http://{host}:{port}"

    def uri_for(self, task_id: str) -> str:
        return f"{self.base_url}/api/{task_id}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler, body: bytes | None) -> None:
        prefix, _, task_id_and_path = request.path.partition("/api/")
        task_id, _, path = task_id_and_path.partition("/")
        task = self._tasks(task_id) if not prefix and path == STATE_PATH.lstrip("/") else None
        if task is None:
            _answer(request, 404, {"error": {"Code": "NotFound", "Message": request.path}})
            return
        if body is not None:
            error = self._update(task, body)
            if error is not None:
                _answer(request, 400, {"error": {"Arn": task.arn, **error}})
                return
        _answer(request, 200, {"protection": _protection(task)})

    def _update(self, task: ProtectedTask, body: bytes) -> dict[str, str] | None:
        try:
            request = json.loads(body)
        except ValueError:
            return {"Code": "InvalidParameterException", "Message": "the body is not JSON"}
        enabled = request.get("ProtectionEnabled") if isinstance(request, dict) else None
        if not isinstance(enabled, bool):
            return {"Code": "InvalidParameterException",
                    "Message": "ProtectionEnabled is required (true or false)"}  # fmt: skip
        minutes = request.get("ExpiresInMinutes", DEFAULT_EXPIRES_IN_MINUTES)
        if enabled and (
            isinstance(minutes, bool)
            or not isinstance(minutes, int)
            or not 1 <= minutes <= MAX_EXPIRES_IN_MINUTES
        ):
            return {"Code": "InvalidParameterException",
                    "Message": f"ExpiresInMinutes must be 1..{MAX_EXPIRES_IN_MINUTES}"}  # fmt: skip
        with self._lock:
            task.protected_until = time.time() + minutes * 60 if enabled else None
        return None


def _protection(task: ProtectedTask) -> dict[str, Any]:
    until = task.protected_until
    enabled = until is not None and until > time.time()
    expiration = (
        datetime.fromtimestamp(until, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if enabled and until is not None
        else None
    )
    return {"ExpirationDate": expiration, "ProtectionEnabled": enabled, "TaskArn": task.arn}


def _answer(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    try:
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        return  # the task went away mid-answer: nobody to tell
