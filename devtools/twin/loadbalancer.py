"""The web's front door: an Application Load Balancer listener and its target group.

It listens on a local port and routes each request (HTTP/1.1, keep-alive per client connection)
to one healthy registered target, round robin, as the ALB does; the targets are the web tasks'
addresses on the twin's bridge. From the ELB documentation ("Health checks for Application Load
Balancer target groups", "Deregistration delay"):

- a new target is ``initial`` and gets no traffic until ``healthyThreshold`` consecutive checks
  of the target group's path pass (every ``interval``, each within ``timeout``, status
  ``matcher``); ``unhealthyThreshold`` consecutive failures make it ``unhealthy``;
- with no healthy target the load balancer answers 503; a target that fails a request it was
  sent (refused, reset) makes it answer 502;
- a deregistered target is ``draining``: it gets no new request, its requests in flight finish,
  and deregistration completes when none is left or after the deregistration delay.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.twin.task import Status, Task

#: Request headers a proxy must not forward (RFC 9110, hop-by-hop).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"}  # fmt: skip


@dataclass(frozen=True)
class TargetGroupSettings:
    """The rendered target group (``aws:lb/targetGroup:TargetGroup``) and listener."""

    port: int
    path: str
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    matcher: str
    deregistration_delay: float

    @staticmethod
    def of(target_group_inputs: dict[str, Any], scale: float = 1.0) -> TargetGroupSettings:
        """From the program's inputs; ``scale`` shortens intervals and delays (tests)."""
        check = target_group_inputs["healthCheck"]
        return TargetGroupSettings(
            port=int(target_group_inputs["port"]),
            path=check["path"],
            interval=float(check["interval"]) * scale,
            timeout=float(check["timeout"]),
            healthy_threshold=int(check["healthyThreshold"]),
            unhealthy_threshold=int(check["unhealthyThreshold"]),
            matcher=str(check.get("matcher", "200")),
            deregistration_delay=float(target_group_inputs["deregistrationDelay"]) * scale,
        )


@dataclass
class Target:
    task: Task
    state: str = "initial"  # initial | healthy | unhealthy | draining
    passes: int = 0
    failures: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LoadBalancer:
    """A listener on ``127.0.0.1:<listen_port>`` (0: a free port) in front of a target group."""

    def __init__(self, settings: TargetGroupSettings, listen_port: int = 0) -> None:
        self.settings = settings
        self._targets: dict[str, Target] = {}
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._closing = threading.Event()
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _proxy(self) -> None:
                balancer._forward(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _proxy

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the web's own access log says what it served."""

        self.server = ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._check_health, name="alb-health", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()

    # --- the target group's side of ECS (devtools.twin.service.TargetGroup) ------------------

    def register(self, task: Task) -> None:
        with self._lock:
            self._targets[task.id] = Target(task)

    def healthy(self, task: Task) -> bool:
        target = self._targets.get(task.id)
        return target is not None and target.state == "healthy"

    def unhealthy(self, task: Task) -> bool:
        target = self._targets.get(task.id)
        return target is not None and target.state == "unhealthy"

    def drain(self, task: Task) -> None:
        """Deregister: no new requests; return when those in flight are done or after the
        deregistration delay."""
        target = self._targets.get(task.id)
        if target is None:
            return
        target.state = "draining"
        deadline = time.monotonic() + self.settings.deregistration_delay
        while target.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            self._targets.pop(task.id, None)

    def states(self) -> dict[str, str]:
        with self._lock:
            return {task_id: target.state for task_id, target in self._targets.items()}

    # --- routing ---------------------------------------------------------------------------

    def _pick(self) -> Target | None:
        with self._lock:
            healthy = [t for t in self._targets.values() if t.state == "healthy"]
            if not healthy:
                return None
            target = healthy[next(self._turn) % len(healthy)]
            with target.lock:
                target.in_flight += 1
            return target

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        target = self._pick()
        if target is None:
            _answer(request, 503, b"no healthy target")
            return
        try:
            status, reason, headers, payload = self._send(target, request, body)
        except (OSError, http.client.HTTPException):
            _answer(request, 502, b"the target did not answer")
            return
        finally:
            with target.lock:
                target.in_flight -= 1
        request.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)

    def _send(
        self, target: Target, request: BaseHTTPRequestHandler, body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        address = target.task.address
        if address is None:
            raise OSError("the target has no address")
        connection = http.client.HTTPConnection(address, self.settings.port, timeout=120)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["X-Forwarded-For"] = request.client_address[0]
            headers["X-Forwarded-Proto"] = "http"
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            connection.close()

    # --- health checks ---------------------------------------------------------------------

    def _check_health(self) -> None:
        settings = self.settings
        while not self._closing.wait(settings.interval):
            with self._lock:
                targets = [t for t in self._targets.values() if t.state != "draining"]
            for target in targets:
                if target.task.status != Status.RUNNING or target.task.address is None:
                    continue
                if self._probe(target.task.address):
                    target.passes, target.failures = target.passes + 1, 0
                    new_state = "healthy" if target.passes >= settings.healthy_threshold else None
                else:
                    target.passes, target.failures = 0, target.failures + 1
                    failed = target.failures >= settings.unhealthy_threshold
                    new_state = "unhealthy" if failed else None
                if new_state is not None and target.state != "draining":
                    target.state = new_state

    def _probe(self, address: str) -> bool:
        connection = http.client.HTTPConnection(
            address, self.settings.port, timeout=self.settings.timeout
        )
        try:
            connection.request("GET", self.settings.path)
            return str(connection.getresponse().status) in self.settings.matcher.split(",")
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()


def _answer(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    request.send_response(status)
    request.send_header("Content-Type", "text/plain")
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)
