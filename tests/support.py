"""Helpers for tests: the Pulumi program rendered under mocks (fresh, or shared among tests
that only read it), and the app's real processes against a real Redis."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TypeVar

import pulumi
import pytest
from flask.testing import FlaskClient

from app.api_keys import keys_document
from devtools import render
from infra.containers import worker_command
from testkit.processes import ROOT, AppProcess, python_argv, start_process

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
    us-east-1, building from ``fixture_build_context()`` unless told otherwise: a fresh run
    each call (``shared_run`` shares one among tests that only read it)."""
    return render.run_program(
        config,
        stack=STACK,
        project_root=project_root or fixture_build_context(),
        mocks=mocks,
        transformations=transformations,
    )


#: (stack, region, project directory, config as canonical JSON) -> that program run, pickled:
#: what ``shared_run`` and ``stack_run`` hand out, one copy per call. One cache per test process
#: (each xdist worker has its own).
_SHARED_RUNS: dict[tuple[str, str, str, str], bytes] = {}


def _shared(
    config: Mapping[str, object] | None, *, stack: str, region: str, project_root: Path
) -> render.ProgramRun:
    """A copy of the run of ``config`` with its project directory, rendered on the first call."""
    key = (stack, region, str(project_root), json.dumps(config or {}, sort_keys=True))
    if key not in _SHARED_RUNS:
        run = render.run_program(config, stack=stack, region=region, project_root=project_root)
        # A pickle, not the run: unpickling makes a deep copy in a third of deepcopy's time.
        _SHARED_RUNS[key] = pickle.dumps(run)
    copy: render.ProgramRun = pickle.loads(_SHARED_RUNS[key])
    return copy


def shared_run(
    config: Mapping[str, object] | None = None,
    *,
    stack: str = STACK,
    region: str = render.DEFAULT_REGION,
) -> render.ProgramRun:
    """``run_program(config)`` for a test that only reads the run: the program runs once per test
    process for each stack, region and config, and every call gets a copy of its own (so a test
    that changes what it got changes nothing for the next one). A test that needs the program
    to run now calls ``run_program``: one that passes its own mocks or transformations, changes
    the program or its environment first (monkeypatch), or compares two runs of one config.
    A run that raises is not kept: each call raises afresh."""
    return _shared(config, stack=stack, region=region, project_root=fixture_build_context())


def stack_run(
    config: Mapping[str, object] | None = None,
    *,
    stack: str,
    region: str = render.DEFAULT_REGION,
) -> render.ProgramRun:
    """The program run of a stack as ``pulumi up`` runs it, in the project directory (the image
    built from the project's own Dockerfile): what ``make plan``, the stack snapshot and the
    docs' generator render. Shared like ``shared_run``: once per test process for each stack,
    region and config, a copy for each call."""
    with contextlib.chdir(ROOT):
        return _shared(config, stack=stack, region=region, project_root=ROOT)


@contextlib.contextmanager
def shared_stack_runs() -> Iterator[None]:
    """Inside it, ``make plan`` (``devtools.plan.report``: ``make_plan``, ``main``), the stack
    snapshot (``devtools.stack_snapshot.render``) and the docs' generator (``devtools.docs``)
    render through ``stack_run``: a stack config that several tests plan, snapshot or document
    renders once per test process, not once per call. A render they ask with transformations
    or mocks of its own, in another project directory, or from another working directory runs
    afresh, as does everything outside it: a test that changes the program first (monkeypatch)
    must not use it."""
    from devtools import docs, stack_snapshot
    from devtools.plan import report

    def run_program(
        config: Mapping[str, object] | None = None,
        *,
        stack: str,
        region: str = render.DEFAULT_REGION,
        project_root: Path = render.ROOT,
        mocks: render.RecordingMocks | None = None,
        transformations: Sequence[pulumi.ResourceTransformation] = (),
        entry_point: Path | None = None,
    ) -> render.ProgramRun:
        in_project = project_root == ROOT and Path.cwd() == ROOT
        if in_project and mocks is None and not transformations and entry_point is None:
            return stack_run(config, stack=stack, region=region)
        return render.run_program(
            config,
            stack=stack,
            region=region,
            project_root=project_root,
            mocks=mocks,
            transformations=transformations,
            entry_point=entry_point,
        )

    with pytest.MonkeyPatch.context() as patch:
        for module in (report, stack_snapshot, docs):
            patch.setattr(module, "run_program", run_program)
        yield


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
