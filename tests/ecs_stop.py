"""Run a worker exactly as its rendered ECS task definition says, and stop it as ECS does.

The worker task definition the Pulumi program renders under mocks (``devtools.render``) runs
on the ECS twin (``devtools.twin``) as Fargate runs it; only the broker URL secret resolves to
the local Redis. Stopping follows ECS: SIGTERM, wait the rendered ``stopTimeout``, SIGKILL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app import settings as env_names
from devtools.render import RenderedTaskDefinition
from devtools.twin.container import Container, plan_container, start_container
from devtools.twin.image import Image, parse_image
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


@cache
def image() -> Image:
    return parse_image()


def start_rendered_worker(
    worker: WorkerDefinition,
    broker_url: str,
    workdir: Path,
    name: str,
    ready_timeout: float = 60.0,
) -> Container:
    """Start the pool's container on the twin; return once it passes its health check (its
    consumer runs). On this machine's network, so a loopback Redis is reachable."""
    plan = plan_container(
        image(), worker.rendered.inputs, worker.rendered.container,
        secrets={env_names.BROKER_URL: broker_url}, hostname=f"ip-{name}",
        state_dir=workdir / name,
    )  # fmt: skip
    container = start_container(plan)

    def consuming() -> bool:
        if not container.alive():
            raise AssertionError(f"{name} exited early:\n{container.logs()}")
        return container.health()[0]

    wait_for(consuming, ready_timeout, interval=0.5, what=f"{name} to start consuming")
    return container


@dataclass(frozen=True)
class StopOutcome:
    exit_code: int
    #: Seconds from SIGTERM until the container was gone.
    elapsed: float


def ecs_stop(container: Container) -> StopOutcome:
    """SIGTERM, wait the rendered stopTimeout, SIGKILL: what ECS does to a stopping task."""
    started = time.monotonic()
    exit_code = container.stop()
    return StopOutcome(exit_code, time.monotonic() - started)
