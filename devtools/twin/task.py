"""One ECS task of the twin: its network, its container, its health and its scale-in protection.

A task is started from a task definition revision (one container, as every task definition of
this project has), gets a network namespace and address of its own (``devtools.twin.awsvpc``),
an ``ECS_AGENT_URI`` served by the twin (``devtools.twin.agent``), and runs its container under
Fargate's contract (``devtools.twin.container``). Its container health check runs as ECS runs it
(ECS API, ``HealthCheck``): every ``interval`` seconds, each attempt limited to ``timeout``; the
container is HEALTHY after one success, UNHEALTHY after ``retries`` consecutive failures, and
failures during ``startPeriod`` do not count. A task stops as ECS stops it: SIGTERM, the
container's ``stopTimeout``, SIGKILL.
"""

from __future__ import annotations

import enum
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.twin.awsvpc import TaskNetwork, allocate
from devtools.twin.container import Container, plan_container, start_container, with_overrides
from devtools.twin.dockerfile_image import Image


@dataclass(frozen=True)
class Revision:
    """A registered task definition (RegisterTaskDefinition's input) and its revision number."""

    family: str
    number: int
    definition: Mapping[str, Any]
    region: str = "us-east-1"
    account: str = "123456789012"

    @property
    def arn(self) -> str:
        prefix = f"arn:aws:ecs:{self.region}:{self.account}"
        return f"{prefix}:task-definition/{self.family}:{self.number}"

    @property
    def container(self) -> Mapping[str, Any]:
        container: Mapping[str, Any]
        (container,) = self.definition["containerDefinitions"]
        return container


class Status(enum.Enum):
    """ECS's ``lastStatus`` of a task, the ones the twin passes through."""

    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    DEACTIVATING = "DEACTIVATING"  # draining from the load balancer before SIGTERM
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class Health(enum.Enum):
    UNKNOWN = "UNKNOWN"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


@dataclass
class TaskOptions:
    """How the twin runs tasks (not part of any definition).

    - ``state_root``: where tasks keep their root filesystem, volumes and output.
    - ``secrets``: environment variable -> local value for the definitions' ``secrets``.
    - ``image``: the image the definitions' ``image`` stands for.
    - ``agent_uri``: task id -> its ``ECS_AGENT_URI``; None: no agent endpoint.
    - ``health_check_scale``: multiplies health checks' interval and start period (1 = as
      defined; tests shorten them). Timeouts and retries are kept.
    - ``environment_overrides``: variables set over every container's ``environment``, as a
      RunTask ``containerOverrides`` environment is (the local stack turns on per-task logs).
    - ``aws_environment``: what lets the AWS SDK in a container reach the twin's stand-in of
      AWS's APIs (its endpoint, and credentials standing in for the task role's, which ECS
      hands out through ``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``).
    """

    state_root: Path
    secrets: Mapping[str, str]
    image: Image
    agent_uri: Callable[[str], str] | None = None
    health_check_scale: float = 1.0
    environment_overrides: Mapping[str, str] = field(default_factory=dict)
    aws_environment: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Task:
    revision: Revision
    group: str  # "service:<name>" or "family:<family>" (a standalone RunTask)
    options: TaskOptions
    command: list[str] | None = None  # a RunTask containerOverride
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: Status = Status.PROVISIONING
    health: Health = Health.UNKNOWN
    #: When scale-in protection expires (``time.time()``), None when off.
    protected_until: float | None = None
    started_at: float | None = None
    stopped_reason: str = ""
    #: Stopped by its own failure (exit, health), not by a deployment or scale-in.
    failed: bool = False
    exit_code: int | None = None
    network: TaskNetwork | None = None
    container: Container | None = None
    _stop_requested: threading.Event = field(default_factory=threading.Event)
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def arn(self) -> str:
        revision = self.revision
        return f"arn:aws:ecs:{revision.region}:{revision.account}:task/twin/{self.id}"

    @property
    def protected(self) -> bool:
        return self.protected_until is not None and self.protected_until > time.time()

    @property
    def address(self) -> str | None:
        return self.network.address if self.network else None

    def start(self) -> None:
        """Provision (network, container) and run: returns once the container is started."""
        self.network = allocate()
        definition = with_overrides(self.revision.container, command=self.command,
                                    environment=self.options.environment_overrides)  # fmt: skip
        agent = self.options.agent_uri
        extra_env = {**self.options.aws_environment}
        if agent:
            extra_env["ECS_AGENT_URI"] = agent(self.id)
        plan = plan_container(
            self.options.image, self.revision.definition, definition,
            secrets=self.options.secrets, hostname=self.network.hostname,
            state_dir=self.options.state_root / self.id,
            network_namespace=self.network.namespace_path, extra_env=extra_env,
        )  # fmt: skip
        self.container = start_container(plan)
        self.started_at = time.time()
        self.status = Status.RUNNING
        if plan.health_check is not None:
            threading.Thread(target=self._monitor_health, name=f"health-{self.id[:8]}",
                             daemon=True).start()  # fmt: skip
        threading.Thread(target=self._watch_exit, name=f"exit-{self.id[:8]}", daemon=True).start()

    def stop(self, reason: str, drain: Callable[[Task], None] | None = None) -> None:
        """Stop in the background as ECS does: ``drain`` first (deregistration), then SIGTERM,
        ``stopTimeout``, SIGKILL. Idempotent."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        self.stopped_reason = reason
        threading.Thread(target=self._stop, args=(drain,), name=f"stop-{self.id[:8]}",
                         daemon=True).start()  # fmt: skip

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def logs(self) -> str:
        return self.container.logs() if self.container else ""

    # --- internals -------------------------------------------------------------------------

    def _stop(self, drain: Callable[[Task], None] | None) -> None:
        if self.status == Status.RUNNING and drain is not None:
            self.status = Status.DEACTIVATING
            drain(self)
        self.status = Status.STOPPING
        if self.container is not None:
            self.container.stop()

    def _watch_exit(self) -> None:
        assert self.container is not None
        self.exit_code = self.container.wait()
        if not self._stop_requested.is_set():
            self.stopped_reason = f"Essential container in task exited ({self.exit_code})"
            self.failed = True
            self._stop_requested.set()
        self.status = Status.STOPPED
        if self.network is not None:
            self.network.release()
        self._stopped.set()

    def _monitor_health(self) -> None:
        assert self.container is not None
        check = self.container.plan.health_check or {}
        scale = self.options.health_check_scale
        interval = float(check.get("interval", 30)) * scale
        start_period = float(check.get("startPeriod", 0)) * scale
        retries = int(check.get("retries", 3))
        failures = 0
        while not self._stop_requested.wait(interval):
            if self.status != Status.RUNNING:
                return
            healthy, _output = self.container.health()
            if healthy:
                failures = 0
                self.health = Health.HEALTHY
                continue
            in_start_period = time.time() - (self.started_at or 0) < start_period
            if in_start_period and self.health != Health.HEALTHY:
                continue  # failures while starting do not count
            failures += 1
            if failures >= retries:
                self.health = Health.UNHEALTHY
