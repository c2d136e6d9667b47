"""Start and stop the app's processes the way ECS does (local stack and tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The container commands (see infra/ for the task definitions), runnable from a checkout.
WEB_ARGV = ("gunicorn", "--config", "python:app.gunicorn_conf", "app.web:create_app()")
BEAT_ARGV = ("celery", "--app", "app.celery_app", "beat")


def worker_argv(name: str, queues: str, concurrency: int) -> list[str]:
    return [
        "celery", "--app", "app.celery_app", "worker",
        "--queues", queues,
        "--concurrency", str(concurrency),
        "--hostname", f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
    ]


def python_argv(argv: Sequence[str]) -> list[str]:
    """Run a console script of this interpreter's environment as a module."""
    return [sys.executable, "-m", *argv]


@dataclass
class AppProcess:
    """One process of the app (worker, beat, web...), its output kept in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill_all(self) -> None:
        """SIGKILL the process and its children at once, as when a container dies."""
        with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self, timeout: float) -> int:
        """Stop the way ECS does: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
        return int(self.process.returncode)


def start_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> AppProcess:
    """Start ``argv`` in a session of its own, logging to ``log_dir/<name>.log``.

    A session of its own: the process and its children can be killed together, like a
    container, and a Ctrl-C in the terminal reaches only the parent, which stops them in order.
    """
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        list(argv), env=dict(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return AppProcess(name, process, log_path)
