"""Run a throwaway ``redis-server`` on a free loopback port (local stack and tests)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

#: Seconds a restart's ``down_until`` may keep the server down after its downtime.
DOWN_UNTIL_LIMIT = 60.0


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
    argv: Sequence[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(
        self, downtime: float = 1.0, timeout: float = 10.0,
        down_until: Callable[[], bool] | None = None, keep_data: bool = True,
    ) -> None:  # fmt: skip
        """Restart the server as a maintenance restart does: every connection drops, the port
        refuses connections for ``downtime`` seconds, and the data comes back (saved to disk on
        shutdown, loaded at start), as ElastiCache keeps it across a node restart.
        ``down_until``: stay down longer, until it returns True (at most 60 s more).
        ``keep_data=False``: it comes back empty, as a node without persistence or replica does
        (ElastiCache has no AOF; the dev stack has no replica), and without its script cache."""
        client = redis.Redis(port=self.port, socket_connect_timeout=2)
        # The server closes the connection as it exits: that error is the expected answer.
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(save=keep_data, nosave=not keep_data)
        self.process.wait(timeout=timeout)
        if not keep_data:  # nor what an earlier restart saved
            (self.workdir / "dump.rdb").unlink(missing_ok=True)
        time.sleep(downtime)
        deadline = time.monotonic() + DOWN_UNTIL_LIMIT
        while down_until is not None and not down_until():
            if time.monotonic() > deadline:
                raise TimeoutError(f"down_until still False {DOWN_UNTIL_LIMIT:.0f} s after")
            time.sleep(0.1)
        self.process = _launch(self.argv)
        _wait_until_answering(self, timeout)

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _launch(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Not in the terminal's process group: a Ctrl-C must not stop Redis before the
        # processes using it; whoever started it stops it, last.
        start_new_session=True,
    )


def _wait_until_answering(server: RedisServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis(port=server.port, socket_connect_timeout=0.5)
    while True:
        if server.process.poll() is not None:
            err = server.process.stderr.read().decode() if server.process.stderr else ""
            raise RedisUnavailable(f"redis-server exited with {server.process.returncode}: {err}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"redis-server did not answer on port {server.port}"
                ) from None
            time.sleep(0.05)


def start_redis(
    executable: str = "redis-server", timeout: float = 10.0, bind: Sequence[str] = ("127.0.0.1",)
) -> RedisServer:
    """Start redis-server with the broker's settings (``noeviction``, no periodic snapshots).

    ``bind``: the addresses it listens on (the ECS twin's tasks reach it on the twin's bridge).
    Only this machine and its tasks can reach those, so protected mode is off.
    """
    binary = shutil.which(executable)
    if binary is None:
        raise RedisUnavailable(
            f"{executable} not found on PATH: install it (Debian/Ubuntu: apt-get install "
            "redis-server; macOS: brew install redis) or give a broker URL"
        )
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="celery-ecs-redis-"))
    argv = [
        binary,
        "--port", str(port),
        "--bind", *bind,
        "--protected-mode", "no",
        "--save", "",
        "--appendonly", "no",
        "--maxmemory-policy", "noeviction",
        "--dir", str(workdir),
    ]  # fmt: skip
    server = RedisServer(_launch(argv), port, workdir, argv)
    try:
        _wait_until_answering(server, timeout)
    except RedisUnavailable:
        server.stop()
        raise
    return server


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
