"""The twin's control endpoint: what an operator does to the stack with the AWS CLI, over HTTP.

    GET  /status                            services, deployments and tasks, as a text table
    POST /rules/<name>/fire[?slot=...&times=N]   EventBridge invokes the rule's target (N times)
    POST /services/<name>/deploy            a new revision of the task definition, rolled out
    POST /services/<name>/desired/<count>   the desired count (as Application Auto Scaling sets it)

Listens on loopback only.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from devtools.twin.deployed_stack import TwinCluster


class ControlEndpoint:
    def __init__(self, cluster: TwinCluster) -> None:
        self.cluster = cluster
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path == "/status":
                    endpoint._answer(self, 200, cluster.status() + "\n", "text/plain")
                else:
                    endpoint._answer(self, 404, {"error": f"no {self.path}"})

            def do_POST(self) -> None:
                status, body = endpoint._post(self.path)
                endpoint._answer(self, status, body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the twin prints what each request does."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _post(self, path: str) -> tuple[int, object]:
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        query = parse_qs(parts.query)
        cluster = self.cluster
        try:
            if len(segments) == 3 and segments[0] == "rules" and segments[2] == "fire":
                slot = datetime.fromisoformat(query["slot"][0]) if "slot" in query else None
                times = int(query.get("times", ["1"])[0])
                tasks = [cluster.fire(segments[1], slot) for _ in range(times)]
                return 202, {"tasks": [task.id for task in tasks]}
            if len(segments) == 3 and segments[0] == "services" and segments[2] == "deploy":
                revision = cluster.deploy(segments[1])
                return 202, {"taskDefinition": revision.arn}
            if len(segments) == 4 and segments[0] == "services" and segments[2] == "desired":
                cluster.services[segments[1]].set_desired_count(int(segments[3]))
                return 202, {"desiredCount": int(segments[3])}
        except KeyError as error:
            return 404, {"error": f"unknown {error.args[0]}"}
        except ValueError as error:
            return 400, {"error": str(error)}
        return 404, {"error": f"no {parts.path}"}

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler, status: int, body: object, kind: str = "application/json"
    ) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
