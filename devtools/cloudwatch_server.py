"""Stand-ins for the CloudWatch API, for the tests and the bench of the metrics publisher.

- ``start_moto``: moto's server (``moto[server]``), a real HTTP implementation of the CloudWatch
  API that stores what ``PutMetricData`` sends and answers ``GetMetricData`` and ``ListMetrics``.
  Point a client at it with ``AWS_ENDPOINT_URL``.
- ``HungEndpoint``: accepts connections and never answers, as an endpoint behind a broken
  network path does.
- ``ThrottlingEndpoint``: answers every request as CloudWatch does when throttling (HTTP 400,
  ``Throttling``), in the JSON protocol botocore speaks to CloudWatch.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from devtools.redis_server import free_port

#: Credentials a stand-in accepts (moto takes any); the region of every test client.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
TEST_REGION = "us-east-1"


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def environment(self) -> dict[str, str]:
        """What a process needs to publish to this server: endpoint, region, credentials."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_REGION": TEST_REGION, **TEST_CREDENTIALS}


def start_moto(log_dir: Path, host: str = "127.0.0.1", timeout: float = 30.0) -> MotoServer:
    """Start moto's server on a free port of ``host``; raises if it does not listen in time."""
    port = free_port()
    log = (log_dir / f"moto-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return MotoServer(f"http://{host}:{port}", process)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto's server did not listen on {host}:{port}") from None
            time.sleep(0.05)


class HungEndpoint:
    """A TCP endpoint that accepts every connection and never sends a byte back."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            self._held.append(connection)

    def __enter__(self) -> HungEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()
        self._thread.join(timeout=5)


class _Throttling(BaseHTTPRequestHandler):
    server: _ThrottlingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests += 1
        body = json.dumps({"__type": "Throttling", "message": "Rate exceeded"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-query-error", "Throttling;Sender")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read the client's logs, not the server's."""


class _ThrottlingServer(ThreadingHTTPServer):
    requests = 0


class ThrottlingEndpoint:
    """An HTTP endpoint answering every request with CloudWatch's throttling error."""

    def __init__(self) -> None:
        self._server = _ThrottlingServer(("127.0.0.1", 0), _Throttling)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> int:
        return self._server.requests

    def __enter__(self) -> ThrottlingEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
