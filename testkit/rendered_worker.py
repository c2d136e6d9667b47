"""Run a worker exactly as its rendered ECS task definition says, and stop it as ECS does.

The worker task definition the Pulumi program renders under mocks (``devtools.render``) runs
on the ECS twin (``devtools.twin``) as Fargate runs it; only the broker URL secret resolves to
a local Redis. Stopping follows ECS: SIGTERM, wait the rendered ``stopTimeout``, SIGKILL; a
crash is the whole container SIGKILLed at once (``Container.kill``). The ECS stop tests and the
bench (``bench.worker_budget``) start their workers here, so both run them one way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from celery_ecs import settings as env_names
from devtools.render import ProgramRun, RenderedTaskDefinition
from devtools.twin.awsvpc import TaskNetwork
from devtools.twin.container import Container, plan_container, start_container, with_overrides
from devtools.twin.dockerfile_image import Image, parse_image

#: The services the program names ``worker-<pool>``.
WORKER_SERVICE_PREFIX = "worker-"


@dataclass(frozen=True)
class WorkerDefinition:
    """The worker task definition of one pool, as rendered (or derived from one)."""

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


def worker_definitions(run: ProgramRun) -> dict[str, WorkerDefinition]:
    """Pool name -> its worker task definition, from one run of the program."""
    prefix = WORKER_SERVICE_PREFIX
    return {
        service[len(prefix) :]: WorkerDefinition(service[len(prefix) :], rendered)
        for service, rendered in run.task_definitions().items()
        if service.startswith(prefix)
    }


@cache
def image() -> Image:
    return parse_image()


def start_worker_container(
    worker: WorkerDefinition,
    broker_url: str,
    workdir: Path,
    name: str,
    *,
    network: TaskNetwork | None = None,
    command: Sequence[str] | None = None,
    environment_overrides: Mapping[str, str] | None = None,
    container_image: Image | None = None,
) -> Container:
    """Start the pool's container on the twin and return at once (it may not consume yet).

    ``network``: the task's own namespace and address on the twin's bridge, as awsvpc gives
    (the broker must then listen on the bridge); None: this machine's network, where a loopback
    Redis is reachable. ``command``/``environment_overrides``: a RunTask ``containerOverrides``.
    ``container_image``: the image the definition's ``image`` stands for (default: the
    project's Dockerfile)."""
    plan = plan_container(
        container_image or image(), worker.rendered.inputs,
        with_overrides(worker.rendered.container, command=command,
                       environment=environment_overrides),
        secrets={env_names.BROKER_URL: broker_url},
        hostname=network.hostname if network else f"ip-{name}",
        state_dir=workdir / name,
        network_namespace=network.namespace_path if network else None,
    )  # fmt: skip
    return start_container(plan)


def start_rendered_worker(
    worker: WorkerDefinition,
    broker_url: str,
    workdir: Path,
    name: str,
    ready_timeout: float = 60.0,
) -> Container:
    """Start the pool's container on the twin, on this machine's network (a loopback Redis is
    reachable); return once it passes its health check (its consumer runs)."""
    container = start_worker_container(worker, broker_url, workdir, name)
    deadline = time.monotonic() + ready_timeout
    while True:
        if not container.alive():
            raise AssertionError(f"{name} exited early:\n{container.logs()}")
        if container.health()[0]:
            return container
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {ready_timeout}s waiting for {name} to start consuming"
            )
        time.sleep(0.5)


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
