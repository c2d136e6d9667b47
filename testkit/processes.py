"""Run the app's processes directly, outside the twin: for tests of the app's own behaviour
(Celery, Redis, the web API), where the container is not what is tested (``devtools.twin`` runs
containers). Stopping follows ECS: SIGTERM, a timeout, SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent



def _console_scripts() -> dict[str, str]:
    """Console scripts the container commands start -> the module that runs each as
    ``python -m <module>``: Celery's and gunicorn's, and the runtime's own (``pyproject.toml``'s
    ``[project.scripts]``, not installed in a source checkout)."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        scripts: dict[str, str] = tomllib.load(file)["project"]["scripts"]
    return {"celery": "celery", "gunicorn": "gunicorn"} | {
        name: target.partition(":")[0] for name, target in scripts.items()
    }


CONSOLE_SCRIPTS = _console_scripts()


def python_argv(command: Sequence[str]) -> list[str]:
    """A container command (``infra.containers``), runnable here with this interpreter:
    ``celery …``/``celery-ecs-health …`` become ``<python> -m celery …``/``<python> -m
    celery_ecs.health …``, ``python …`` uses this one."""
    program, *args = command
    if program in CONSOLE_SCRIPTS:
        return [sys.executable, "-m", CONSOLE_SCRIPTS[program], *args]
    if program == "python":
        return [sys.executable, *args]
    raise ValueError(f"no local equivalent for the container's program {program!r}")


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
