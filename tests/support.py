"""Helpers for tests that run the app's real processes against a real Redis."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TypeVar

import pulumi
from flask.testing import FlaskClient

from app.api_keys import keys_document
from devtools import render
from devtools.processes import ROOT, AppProcess, python_argv, start_process
from infra.containers import worker_command

__all__ = ["ROOT", "AppProcess", "start_process"]
T = TypeVar("T")
#: Builds a test client of the web app: ``make(**environment_overrides)``.
ClientFactory = Callable[..., FlaskClient]
#: The stack the tests render: task definition families and log groups carry its name.
STACK = "test"
#: The API key the tests' web apps accept (``app_environment`` writes the keys file).
API_KEY = "test-api-key-0123456789abcdefghijklmnopqrstuvwxyz"
#: The header that carries it.
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}
#: The keys file's name in a test's working directory.
API_KEYS_FILE = "api-keys.json"


@cache
def fixture_build_context() -> Path:
    """A tiny Docker build context, so tests that render the program neither need nor hash the
    real project. One per test process, removed when it exits."""
    directory = Path(tempfile.mkdtemp(prefix="celery-ecs-context-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "Dockerfile").write_text("FROM scratch\n")
    return directory


def run_program(
    config: Mapping[str, object] | None = None,
    *,
    project_root: Path | None = None,
    mocks: render.RecordingMocks | None = None,
    transformations: Sequence[pulumi.ResourceTransformation] = (),
) -> render.ProgramRun:
    """The program rendered under mocks (``devtools.render``) as the stack ``test`` in
    us-east-1, building from ``fixture_build_context()`` unless told otherwise."""
    return render.run_program(
        config,
        stack=STACK,
        project_root=project_root or fixture_build_context(),
        mocks=mocks,
        transformations=transformations,
    )


def wait_for(
    condition: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def app_environment(broker_url: str, workdir: Path, **overrides: str) -> dict[str, str]:
    """The environment a process of the app gets: the parent's, plus the app's variables. The
    web accepts ``API_KEY``, from a keys file in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "WEB_"))}
    keys_file = workdir / API_KEYS_FILE
    keys_file.write_text(keys_document(API_KEY))
    env.update(
        {
            "WEB_API_KEYS_FILE": str(keys_file),
            "CELERY_BROKER_URL": broker_url,
            "CELERY_HEARTBEAT_DIR": str(workdir),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def start_worker(
    env: Mapping[str, str],
    workdir: Path,
    *,
    name: str = "worker",
    queues: Sequence[str] = ("default", "long"),
    concurrency: int = 1,
    extra: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> AppProcess:
    """Start a worker like the ECS task definition does and wait until it consumes."""
    heartbeat = Path(env["CELERY_HEARTBEAT_DIR"]) / "celery-worker.heartbeat"
    heartbeat.unlink(missing_ok=True)
    argv = python_argv([*worker_command(name, queues, concurrency), *extra])
    worker = start_process(name, argv, env, workdir)

    def ready() -> bool:
        if not worker.alive():
            raise AssertionError(f"{name} exited early:\n{worker.logs()}")
        return heartbeat.exists()

    wait_for(ready, ready_timeout, what=f"{name} to start consuming")
    return worker


def send_task(broker_url: str, name: str, **options: object) -> str:
    """Publish a task from this process to ``broker_url``; return its id.

    The in-process app was imported before the test broker existed, so the connection is
    explicit and no result subscription is made (tests read effects from Redis).
    """
    from app.celery_app import app

    with app.connection_for_write(broker_url) as connection:
        return app.send_task(name, connection=connection, ignore_result=True, **options).id
