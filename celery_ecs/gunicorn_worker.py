"""gunicorn's threaded (gthread) worker, with the API's JSON error shape.

gunicorn answers the requests it cannot hand to the app (an over-long request line, too many or
too large headers, a request that is not HTTP, a transfer coding other than chunked) itself,
with an HTML page. This worker keeps everything gunicorn decides for such a request (the status,
the log lines, the access log) and replaces only what goes on the wire with the documented
``{"error": {"code", "message"}}`` and ``Content-Type: application/json``.

The worker class of ``celery_ecs.gunicorn_conf``, with its logger class (``HealthChecksUnlogged``);
the gunicorn master imports it, so no Flask or Celery.
"""

from __future__ import annotations

import json
import socket
from http import HTTPStatus
from typing import Any, cast

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from celery_ecs.names import LIVENESS_PATH

INTERNAL_ERROR = "the server failed to handle the request"


class _Recorder:
    """Stands in for the client socket: keeps what is sent, passes everything else through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def status(self) -> tuple[int, str]:
        """The status code and reason of the response sent, or 500 if there is none."""
        version, _, rest = bytes(self.sent).partition(b"\r\n")[0].decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        if version.startswith("HTTP/") and code.isdigit():
            return int(code), reason
        return 500, HTTPStatus.INTERNAL_SERVER_ERROR.phrase


def json_error_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP response carrying ``{"error": {"code", "message"}}``."""
    # The codes of Werkzeug's errors in app.web: the status phrase in snake case.
    code = (
        "internal_error" if status == 500 else HTTPStatus(status).phrase.lower().replace(" ", "_")
    )
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorWorker(ThreadWorker):
    """A gthread worker whose own error responses are JSON."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        # Overriding only the output keeps gunicorn's mapping of its parser's exceptions to
        # statuses, which changes between releases (23.0 added ObsoleteFolding), in one place.
        recorder = _Recorder(client)
        # The recorder stands in for the socket (it passes on all but sendall).
        super().handle_error(req, cast(socket.socket, recorder), addr, exc)
        status, reason = recorder.status()
        # gunicorn's messages for the requests it refuses say what was wrong (e.g. "Request Line
        # is too large (3000 > 2048)"); a 500 is the server's failure, not to be described.
        message = INTERNAL_ERROR if status == 500 else str(exc)
        try:
            util.write_nonblock(client, json_error_response(status, reason, message))
        except OSError as error:  # the client is gone or not reading: nobody to tell
            self.log.debug("Failed to send error message: %s", error)


class HealthChecksUnlogged(Logger):
    """gunicorn's logger, without an access-log line for each passing liveness check.

    The load balancer and the container health check ask ``/livez`` every few seconds on every
    task: logged, those lines would drown the requests in CloudWatch (and cost its ingestion).
    A failing check is still logged.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if req.path == LIVENESS_PATH and resp.status_code == 200:
            return
        super().access(resp, req, environ, request_time)
