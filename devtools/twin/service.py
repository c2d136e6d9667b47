"""An ECS service of the twin: desired count, replacement, rolling deployments, circuit breaker,
scale-in protection. What it follows, from the ECS documentation:

- **Desired count.** The service keeps ``desiredCount`` tasks of its primary deployment; a task
  whose essential container exits, or that turns UNHEALTHY (container health check, or its load
  balancer target after the service's health-check grace period), is stopped and replaced.
- **Rolling deployments** (ECS API, ``DeploymentConfiguration``): at most ``maximumPercent`` of
  the desired count (rounded down) may be RUNNING or PENDING at once, and at least
  ``minimumHealthyPercent`` (rounded up) must stay RUNNING and healthy. Tasks that are draining
  or stopping count toward neither: with beat's 0 % / 100 %, ECS may start the new beat while
  the old one is still stopping (its Redis lock keeps the new one waiting).
- **Deployment circuit breaker** (ECS developer guide, "How the Amazon ECS deployment circuit
  breaker detects failures"): a deployment fails once as many of its tasks have failed to start
  or turned unhealthy as its threshold, half the desired count, at least 3 and at most 200; with
  rollback, the last deployment that completed is deployed again.
- **Scale-in protection** (ECS developer guide, "Protect your Amazon ECS tasks from being
  terminated by scale-in events"): neither scale-in nor a deployment stops a protected task;
  they wait for its protection to be turned off or to expire.
"""

from __future__ import annotations

import enum
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from devtools.twin.task import Health, Revision, Status, Task

#: The circuit breaker's threshold bounds (ECS developer guide).
BREAKER_MIN, BREAKER_MAX = 3, 200


class Rollout(enum.Enum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


_deployment_ids = itertools.count(1)


@dataclass
class Deployment:
    revision: Revision
    id: int = field(default_factory=lambda: next(_deployment_ids))
    tasks: list[Task] = field(default_factory=list)
    failed_tasks: int = 0
    rollout: Rollout = Rollout.IN_PROGRESS
    #: A deployment started by the circuit breaker's rollback.
    rollback: bool = False

    def live(self) -> list[Task]:
        """Tasks not yet asked to stop."""
        return [task for task in self.tasks if task.status in (Status.PROVISIONING, Status.RUNNING)
                and not task._stop_requested.is_set()]  # fmt: skip


class TargetGroup(Protocol):
    """What a service needs of its load balancer (``devtools.twin.loadbalancer``)."""

    def register(self, task: Task) -> None: ...
    def healthy(self, task: Task) -> bool: ...
    def unhealthy(self, task: Task) -> bool: ...
    def drain(self, task: Task) -> None: ...


@dataclass
class Service:
    """One service. ``launch`` starts a task of a revision for this service."""

    name: str
    revision: Revision
    desired_count: int
    launch: Callable[[Service, Revision], Task]
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    circuit_breaker: bool = True
    rollback: bool = True
    target_group: TargetGroup | None = None
    #: Seconds after a task starts during which its load balancer health does not count.
    health_check_grace: float = 0.0
    on_event: Callable[[str], None] = print
    deployments: list[Deployment] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.deployments = [Deployment(self.revision)]
        self.event(f"deployment {self.deployments[0].id} started: {self.revision.arn}")

    # --- what a user (or Application Auto Scaling) does -------------------------------------

    def update(self, revision: Revision) -> None:
        """``UpdateService`` with a new task definition: a new primary deployment."""
        with self._lock:
            self.revision = revision
            self.deployments.insert(0, Deployment(revision))
            self.event(f"deployment {self.deployments[0].id} started: {revision.arn}")

    def set_desired_count(self, count: int) -> None:
        with self._lock:
            self.desired_count = count
            self.event(f"desired count {count}")

    # --- what the user sees ----------------------------------------------------------------

    @property
    def primary(self) -> Deployment:
        return self.deployments[0]

    def tasks(self) -> list[Task]:
        return [task for deployment in self.deployments for task in deployment.tasks]

    def running(self) -> list[Task]:
        return [task for task in self.tasks() if task.status == Status.RUNNING]

    def steady(self) -> bool:
        """One deployment, completed: every desired task running and healthy."""
        with self._lock:
            return len(self.deployments) == 1 and self.primary.rollout == Rollout.COMPLETED

    def event(self, message: str) -> None:
        self.on_event(f"(service {self.name}) {message}")

    # --- the scheduler ---------------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass of ECS's service scheduler."""
        with self._lock:
            self._collect_stopped()
            self._replace_unhealthy()
            self._trip_breaker()
            self._start_tasks()
            self._stop_tasks()
            self._retire_deployments()

    def _healthy(self, task: Task) -> bool:
        if task.status != Status.RUNNING or task._stop_requested.is_set():
            return False
        container = task.container
        if container is not None and container.plan.health_check and task.health != Health.HEALTHY:
            return False
        return self.target_group is None or self.target_group.healthy(task)

    def _collect_stopped(self) -> None:
        for deployment in self.deployments:
            for task in [t for t in deployment.tasks if t.status == Status.STOPPED]:
                deployment.tasks.remove(task)
                if task.failed:
                    self.event(f"task {task.id[:8]} stopped: {task.stopped_reason}")
                    if deployment.rollout == Rollout.IN_PROGRESS:
                        deployment.failed_tasks += 1

    def _replace_unhealthy(self) -> None:
        for task in [t for d in self.deployments for t in d.live()]:
            if task.status != Status.RUNNING:
                continue
            if task.health == Health.UNHEALTHY:
                self._stop(task, "Task failed container health checks", failed=True)
                continue
            in_grace = time.time() - (task.started_at or 0) < self.health_check_grace
            if self.target_group is not None and not in_grace and self.target_group.unhealthy(task):
                self._stop(task, "Task failed ELB health checks", failed=True)

    def _trip_breaker(self) -> None:
        primary = self.primary
        threshold = min(BREAKER_MAX, max(BREAKER_MIN, math.ceil(0.5 * self.desired_count)))
        if (
            not self.circuit_breaker
            or primary.rollout != Rollout.IN_PROGRESS
            or primary.failed_tasks < threshold
        ):
            return
        primary.rollout = Rollout.FAILED
        self.event(f"deployment {primary.id} failed: {primary.failed_tasks} tasks failed "
                   f"(circuit breaker threshold {threshold})")  # fmt: skip
        completed = next(
            (d for d in self.deployments[1:] if d.rollout == Rollout.COMPLETED), None
        )
        if self.rollback and completed is not None:
            self.revision = completed.revision
            self.deployments.insert(0, Deployment(completed.revision, rollback=True))
            self.event(f"rolling back to {completed.revision.arn} "
                       f"(deployment {self.primary.id})")  # fmt: skip

    def _start_tasks(self) -> None:
        upper = math.floor(self.desired_count * self.maximum_percent / 100)
        active = sum(len(d.live()) for d in self.deployments)
        wanted = self.desired_count - len(self.primary.live())
        if self.primary.rollout == Rollout.FAILED:
            return
        for _ in range(max(0, min(wanted, upper - active))):
            task = self.launch(self, self.primary.revision)
            self.primary.tasks.append(task)
            if self.target_group is not None:
                self.target_group.register(task)
            self.event(f"started task {task.id[:8]} ({self.primary.revision.arn})")

    def _stop_tasks(self) -> None:
        lower = math.ceil(self.desired_count * self.minimum_healthy_percent / 100)
        healthy = sum(1 for d in self.deployments for t in d.live() if self._healthy(t))
        # Old deployments' tasks go first, unhealthy ones before healthy ones; then the primary's
        # beyond the desired count (scale-in). Protected tasks are never picked.
        old = [t for d in self.deployments[1:] for t in d.live()]
        surplus = self.primary.live()[self.desired_count :]
        for task in sorted(old, key=self._healthy) + surplus:
            if task.protected:
                continue
            if self._healthy(task):
                if healthy - 1 < lower:
                    continue
                healthy -= 1
            reason = "scaling activity" if task in surplus else "deployment"
            self._stop(task, f"{reason}: stopped by the service scheduler")

    def _retire_deployments(self) -> None:
        for deployment in self.deployments[1:]:
            if not deployment.tasks:
                self.deployments.remove(deployment)
        primary = self.primary
        if (
            primary.rollout == Rollout.IN_PROGRESS
            and len(self.deployments) == 1
            and len(primary.live()) == self.desired_count
            and all(self._healthy(task) for task in primary.live())
        ):
            primary.rollout = Rollout.COMPLETED
            self.event(f"deployment {primary.id} completed: has reached a steady state")

    def _stop(self, task: Task, reason: str, *, failed: bool = False) -> None:
        """Stop ``task``; ``failed`` counts it toward the circuit breaker."""
        task.failed = task.failed or failed
        drain = self.target_group.drain if self.target_group is not None else None
        task.stop(reason, drain)
        self.event(f"stopping task {task.id[:8]}: {reason}")
