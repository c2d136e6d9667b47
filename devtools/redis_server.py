"""Run a throwaway ``redis-server`` on a free loopback port (local stack and tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisUnavailable(RuntimeError):
    """redis-server is missing or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(executable: str = "redis-server", timeout: float = 10.0) -> RedisServer:
    """Start redis-server with the broker's settings (``noeviction``, no persistence)."""
    binary = shutil.which(executable)
    if binary is None:
        raise RedisUnavailable(
            f"{executable} not found on PATH: install it (Debian/Ubuntu: apt-get install "
            "redis-server; macOS: brew install redis) or give a broker URL"
        )
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="celery-ecs-redis-"))
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--dir", str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Not in the terminal's process group: a Ctrl-C must not stop Redis before the
        # processes using it; whoever started it stops it, last.
        start_new_session=True,
    )
    server = RedisServer(process, port, workdir)
    deadline = time.monotonic() + timeout
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            server.stop()
            raise RedisUnavailable(f"redis-server exited with {process.returncode}: {err}")
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.stop()
                raise RedisUnavailable(f"redis-server did not answer on port {port}") from None
            time.sleep(0.05)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
