"""Stand-ins of AWS's APIs, for the tests, the ECS twin and the benches.

- ``AwsStandIn``: moto's server (``moto[server]``), a real HTTP implementation of the AWS APIs
  the project calls (Secrets Manager: the web's API keys; CloudWatch: the workers' queue
  metrics), in a process of its own. ``environment`` points a process's AWS SDK at it,
  ``client`` makes a botocore client of it, ``put_secret`` puts a secret at a given ARN.
- ``HungEndpoint``: accepts connections and never answers, as an endpoint behind a broken
  network path does.
- ``ThrottlingEndpoint``: answers every request as CloudWatch does when throttling (HTTP 400,
  ``Throttling``), in the JSON protocol botocore speaks to CloudWatch.

Why a process per stand-in: moto keeps what it stores in module-level backends, one set per
Python process, which every ``ThreadedMotoServer`` of that process shares (moto docs, "Non-Python
SDK's / Server Mode": the threaded server and the decorators "act on the same state"). A process
of its own gives each stand-in its own state (a test never reads another's datapoints or
secrets), keeps its request handling off the caller's interpreter (the bench times tasks in
that one), and binds any address: the twin's bridge address, where containers in their own
network namespaces reach it. It binds port 0 and reports the port the kernel chose, so two
stand-ins started at once never race for a port.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import botocore.session

from celery_ecs.settings import SECRET_ARN
from testkit.processes import ROOT

#: Credentials the stand-in accepts (moto takes any); on ECS the task role's come from the agent.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "stand-in", "AWS_SECRET_ACCESS_KEY": "stand-in"}
#: The region of the stand-in's clients and of the processes given one (any region works).
REGION = "us-east-1"
#: Seconds moto's server may take to import and listen (about 1 s on an idle machine).
START_TIMEOUT = 60.0


def sdk_environment(endpoint_url: str, region: str | None = REGION) -> dict[str, str]:
    """What points a process's AWS SDK at ``endpoint_url`` for every service: the endpoint
    (``AWS_ENDPOINT_URL``, AWS SDKs and Tools Reference Guide, "Service-specific endpoints"),
    stand-in credentials and, unless None, ``region`` as the task's (``AWS_REGION``, as Fargate
    sets it). Without a region a worker publishes no metrics (``celery_ecs.cloudwatch``)."""
    environment = {"AWS_ENDPOINT_URL": endpoint_url, **CREDENTIALS}
    if region is not None:
        environment["AWS_REGION"] = region
    return environment


class AwsStandIn:
    """moto's server on ``http://<host>:<a free port>``, in a process of its own, until
    ``stop()``. Raises ``RuntimeError`` if it does not listen within ``START_TIMEOUT``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        # A session of its own: a Ctrl+C at the terminal is the caller's to handle (the local
        # stack stops its tasks first), not a signal to the server. stdin: the server exits when
        # it reads end-of-file, so it never outlives the caller. stderr: inherited, so moto's
        # errors show where the caller's output goes.
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, host],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        port = _read_line(self._process.stdout.fileno(), START_TIMEOUT)
        if not port.isdigit():
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"moto's server did not start on {host} (exit code "
                               f"{self._process.returncode}, said {port!r})")  # fmt: skip
        self.url = f"http://{host}:{port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._process.pid

    def environment(self, region: str | None = REGION) -> dict[str, str]:
        """What a process needs to call the stand-in with botocore (``sdk_environment``)."""
        return sdk_environment(self.url, region)

    def client(self, service: str, region: str = REGION) -> Any:
        """A botocore client of ``service`` on the stand-in (its methods are made from AWS's
        API model at run time: no static type lists them)."""
        return botocore.session.get_session().create_client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def put_secret(self, arn: str, value: str) -> None:
        """Make ``value`` the current value of the secret at ``arn`` (created if need be), as
        ``aws secretsmanager put-secret-value`` does. moto finds a secret by the last part of an
        ARN, its name, in the region and account of the request (moto/secretsmanager/models.py,
        ``SecretsStore``)."""
        match = SECRET_ARN.fullmatch(arn)
        if match is None:
            raise ValueError(f"not a Secrets Manager secret ARN: {arn!r}")
        client = self.client("secretsmanager", match["region"])
        try:
            client.describe_secret(SecretId=arn)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(Name=arn.rsplit(":", 1)[1], SecretString=value)
            return
        client.put_secret_value(SecretId=arn, SecretString=value)

    def stop(self) -> None:
        """Stop the server (nothing it stored is kept); idempotent."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


def _read_line(fd: int, timeout: float) -> str:
    """The first line written to ``fd`` (without its newline), or what came before end-of-file
    or ``timeout``."""
    deadline = time.monotonic() + timeout
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        received += chunk
    return received.split(b"\n", 1)[0].decode(errors="replace")


def _serve(host: str) -> None:
    """The stand-in's process: serve on ``host``, print the port, exit at end-of-file on stdin
    (``AwsStandIn.stop`` or the caller gone) or at SIGTERM."""
    from moto.server import ThreadedMotoServer

    # Werkzeug logs every request at INFO: a line per metrics round or key read would bury the
    # caller's output. Its errors (WARNING and up) still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # ThreadedMotoServer binds in its thread and waits for it without a timeout: a bind that
    # fails (an address not on this machine) would leave the process waiting for ever.
    threading.excepthook = _exit_on_thread_error
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    threading.excepthook = threading.__excepthook__  # serving: a request's error is its own
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.buffer.read()


def _exit_on_thread_error(error: threading.ExceptHookArgs) -> None:
    threading.__excepthook__(error)
    os._exit(1)


# --- endpoints that fail as AWS's do -------------------------------------------------------------


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


if __name__ == "__main__":
    _serve(sys.argv[1])
