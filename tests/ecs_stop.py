"""Run a worker exactly as its rendered ECS task definition says, and stop it as ECS does.

The command, environment and ``stopTimeout`` come from the worker task definition the Pulumi
program renders under mocks (``devtools.render``). Only what cannot exist on this machine
is replaced:

- the broker URL, which ECS injects from the task definition's ``secrets``, becomes the local
  Redis URL (any other secret is an error: the harness would not know what to put there);
- ``CELERY_HEARTBEAT_DIR`` points at a directory of the worker's own, as each container has
  its own ``/tmp``;
- argv[0] ``celery`` / ``gunicorn`` / ``python`` becomes this interpreter (``python -m ...``).

Stopping follows ECS: SIGTERM, wait the rendered ``stopTimeout``, then SIGKILL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app import settings as env_names
from devtools.processes import ROOT, AppProcess, python_argv, start_process
from devtools.render import RenderedTaskDefinition
from tests.support import run_program, wait_for


@dataclass(frozen=True)
class WorkerDefinition:
    """The worker task definition of one pool, as rendered."""

    pool: str
    rendered: RenderedTaskDefinition

    @property
    def command(self) -> list[str]:
        return self.rendered.command

    @property
    def environment(self) -> dict[str, str]:
        return self.rendered.environment

    @property
    def stop_timeout(self) -> int:
        return int(self.rendered.container["stopTimeout"])


def render_workers(stack_config: Mapping[str, object]) -> dict[str, WorkerDefinition]:
    """Pool name -> its worker task definition, for a stack configuration."""
    prefix = "worker-"
    return {
        service[len(prefix) :]: WorkerDefinition(service[len(prefix) :], rendered)
        for service, rendered in run_program(stack_config).task_definitions().items()
        if service.startswith(prefix)
    }


def local_environment(
    worker: WorkerDefinition, broker_url: str, heartbeat_dir: Path
) -> dict[str, str]:
    """The container's environment with the broker secret resolved to ``broker_url``."""
    unknown = sorted(set(worker.rendered.secrets) - {env_names.BROKER_URL})
    if unknown:
        raise ValueError(f"{worker.pool}: no local value for the secrets {unknown}")
    if env_names.BROKER_URL not in worker.rendered.secrets:
        raise ValueError(f"{worker.pool}: the broker URL is not among the secrets")
    # This process's variables minus anything the app or Celery would read: the container
    # starts with only what the task definition gives it.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CELERY_", "WEB_", "APP_", "ECS_")) and name != "REMAP_SIGTERM"
    }
    env.update(worker.environment)
    env.update(
        {
            env_names.BROKER_URL: broker_url,
            env_names.HEARTBEAT_DIR: str(heartbeat_dir),
            # The image's working directory and module path: the checkout.
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_rendered_worker(
    worker: WorkerDefinition,
    broker_url: str,
    workdir: Path,
    name: str,
    ready_timeout: float = 30.0,
) -> AppProcess:
    """Start the pool's container command; return once its consumer runs (heartbeat file)."""
    heartbeat_dir = workdir / name
    heartbeat_dir.mkdir()
    process = start_process(
        name,
        python_argv(worker.command),
        local_environment(worker, broker_url, heartbeat_dir),
        workdir,
    )

    def consuming() -> bool:
        if not process.alive():
            raise AssertionError(f"{name} exited early:\n{process.logs()}")
        return (heartbeat_dir / "celery-worker.heartbeat").exists()

    wait_for(consuming, ready_timeout, what=f"{name} to start consuming")
    return process


@dataclass(frozen=True)
class StopOutcome:
    exit_code: int
    #: Seconds from SIGTERM until the process was gone.
    elapsed: float


def ecs_stop(process: AppProcess, worker: WorkerDefinition) -> StopOutcome:
    """SIGTERM, wait the rendered stopTimeout, SIGKILL: what ECS does to a stopping task."""
    started = time.monotonic()
    exit_code = process.stop(worker.stop_timeout)
    return StopOutcome(exit_code, time.monotonic() - started)
