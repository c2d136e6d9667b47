"""The twin of a deployed stack: the services, load balancer and schedule the program renders,
running on this machine as ECS would run them.

``TwinCluster.from_program(run, ...)`` takes what the Pulumi program registers under mocks
(``devtools.render``): each ECS service with its task definition, desired count, deployment
settings, circuit breaker and health-check grace; the web's target group and listener; the
EventBridge rules and targets. A control loop (ECS's service scheduler, every ``TICK`` seconds)
keeps every service at its desired count and rolls deployments; ``deploy`` registers a new
revision of a service's task definition and updates the service; ``fire`` runs a rule's target
for a schedule slot. ``status()`` is a table of what runs.

Secrets a container reads itself at run time (an environment variable holding a secret's ARN,
e.g. the web's ``WEB_API_KEYS_SECRET_ARN``) are served by a stand-in of AWS's APIs
(``testkit.aws_standin``, moto's server) on the bridge, holding what the program wrote into
them; the containers' AWS SDK is pointed at it, with no region: the twin has no CloudWatch to
publish metrics to (``celery_ecs.cloudwatch`` writes them to stdout instead). Secrets ECS injects at
start (a definition's ``secrets``, the broker URL) get local values instead
(``TaskOptions.secrets``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from app.api_keys import parse_keys
from celery_ecs.settings import WEB_API_KEYS_SECRET_ARN
from devtools.twin.agent import AgentEndpoint
from devtools.twin.awsvpc import HOST_ADDRESS, ensure_bridge
from devtools.twin.dockerfile_image import Image, ImageError, built_image
from devtools.twin.events import Rule, eventbridge_fire_times
from devtools.twin.loadbalancer import LoadBalancer, TargetGroupSettings
from devtools.twin.service import Rollout, Service
from devtools.twin.task import Revision, Status, Task, TaskOptions
from policy.invariants import aws_types
from testkit.aws_standin import AwsStandIn

#: Seconds between two passes of the service scheduler.
TICK = 0.2
#: Lines of a failed task's output ``failed_to_start`` quotes.
FAILURE_OUTPUT_LINES = 8


class Registration(Protocol):
    type: str
    name: str
    inputs: dict[str, Any]


class ProgramRun(Protocol):
    """What ``devtools.render.run_program`` returns (the parts the twin reads)."""

    resources: list[Any]

    def of_type(self, typ: str) -> list[Any]: ...


@dataclass
class TwinCluster:
    services: dict[str, Service]
    rules: dict[str, Rule]
    revisions: dict[str, Revision]  # by family: the latest registered
    options: TaskOptions
    agent: AgentEndpoint
    #: AWS's APIs (Secrets Manager: the secrets containers read themselves).
    aws: AwsStandIn
    load_balancer: LoadBalancer | None
    on_event: Callable[[str], None]
    #: Every task started, by id (the agent endpoint finds tasks here).
    tasks_by_id: dict[str, Task]
    standalone: list[Task] = field(default_factory=list)
    #: The first API key the web accepts, as the program wrote it into the keys secret (None
    #: without a web); ``aws.put_secret`` rotates it.
    api_key: str | None = None
    #: The ARN of that secret.
    api_keys_secret_arn: str | None = None
    #: When the rules were created (``rate()`` rules count from then).
    created: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    #: Each rule's last slot fired on its schedule.
    _fired: dict[str, datetime] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # --- construction ----------------------------------------------------------------------

    @staticmethod
    def from_program(
        run: ProgramRun,
        *,
        broker_url: str,
        state_root: Path,
        front_door_port: int = 0,
        time_scale: float = 1.0,
        image: Image | None = None,
        on_event: Callable[[str], None] = print,
        only: Collection[str] | None = None,
        environment_overrides: Mapping[str, str] | None = None,
    ) -> TwinCluster:
        """The twin of ``run``. ``broker_url``: what the broker URL secret resolves to (reachable
        from tasks, i.e. on the bridge's address); ``time_scale`` shortens health-check intervals,
        start periods and the deregistration delay (not stop timeouts: those come from the
        budget); ``only``: the services to run (default all); ``environment_overrides``: set
        over every container's environment (``TaskOptions``)."""
        ensure_bridge()
        tasks_by_id: dict[str, Task] = {}
        agent = AgentEndpoint(HOST_ADDRESS, tasks_by_id.get)
        aws = AwsStandIn(HOST_ADDRESS)
        options = TaskOptions(
            state_root=state_root,
            secrets={"CELERY_BROKER_URL": broker_url},
            image=image or program_image(run),
            agent_uri=agent.uri_for,
            health_check_scale=time_scale,
            environment_overrides=dict(environment_overrides or {}),
            aws_environment=aws.environment(region=None),
        )
        revisions = {
            definition["family"]: Revision(definition["family"], 1, definition)
            for definition in map(_definition, run.of_type(aws_types.ECS_TASK_DEFINITION))
        }
        load_balancer = None
        target_groups = run.of_type(aws_types.LB_TARGET_GROUP)
        if target_groups:
            (group,) = target_groups
            settings = TargetGroupSettings.of(group.inputs, time_scale)
            load_balancer = LoadBalancer(settings, front_door_port)
        cluster = TwinCluster(
            services={}, rules={}, revisions=revisions, options=options, agent=agent,
            aws=aws, load_balancer=load_balancer, on_event=on_event,
            tasks_by_id=tasks_by_id,
        )  # fmt: skip
        cluster._serve_read_secrets(run)
        for registration in run.of_type(aws_types.ECS_SERVICE):
            inputs = registration.inputs
            name = inputs["tags"]["Service"]
            if only is not None and name not in only:
                continue
            family = _family_of(inputs["taskDefinition"])
            breaker = inputs.get("deploymentCircuitBreaker") or {}
            cluster.services[name] = Service(
                name=name,
                revision=revisions[family],
                desired_count=int(inputs["desiredCount"]),
                launch=cluster._launch,
                minimum_healthy_percent=int(inputs.get("deploymentMinimumHealthyPercent", 100)),
                maximum_percent=int(inputs.get("deploymentMaximumPercent", 200)),
                circuit_breaker=bool(breaker.get("enable")),
                rollback=bool(breaker.get("rollback")),
                target_group=load_balancer if inputs.get("loadBalancers") else None,
                health_check_grace=float(inputs.get("healthCheckGracePeriodSeconds") or 0)
                * time_scale,
                on_event=on_event,
            )
        rules = {rule.name: rule for rule in run.of_type(aws_types.CLOUDWATCH_EVENT_RULE)}
        for target in run.of_type(aws_types.CLOUDWATCH_EVENT_TARGET):
            (rule,) = [r for r in rules.values() if r.physical_name == target.inputs["rule"]]
            cluster.rules[rule.name] = Rule.of(rule.inputs, target.inputs, rule.name)
        return cluster

    def _serve_read_secrets(self, run: ProgramRun) -> None:
        """Put in the stand-in every secret a container environment names by its ARN, with the
        value the program wrote; note the web's API key."""
        written = {
            version.inputs["secretId"]: version.inputs["secretString"]
            for version in run.of_type(aws_types.SECRETSMANAGER_SECRET_VERSION)
        }
        for revision in self.revisions.values():
            for item in revision.container.get("environment") or []:
                value = written.get(item["value"])
                if value is None:
                    continue
                self.aws.put_secret(item["value"], value)
                if item["name"] == WEB_API_KEYS_SECRET_ARN:
                    self.api_keys_secret_arn = item["value"]
                    self.api_key = parse_keys(value)[0].decode()

    # --- running ---------------------------------------------------------------------------

    def start(self) -> TwinCluster:
        self._thread = threading.Thread(target=self._schedule, name="twin-scheduler", daemon=True)
        self._thread.start()
        return self

    def service(self, name: str) -> Service:
        return self.services[name]

    def steady(self) -> bool:
        return all(service.steady() for service in self.services.values())

    def wait_steady(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.steady():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not steady after {timeout:.0f} s:\n{self.status()}")
            time.sleep(0.1)

    def failed_to_start(self) -> list[str]:
        """A report per service whose first deployment failed (its circuit breaker tripped with
        no earlier deployment to roll back to): nothing of it runs, and ECS would try no more.
        Each names the service, the failed tasks' reason and command, and the last lines of
        the latest one's output (e.g. the ``ModuleNotFoundError`` ending Celery's traceback for
        a ``celeryApp`` the image does not hold, which no offline check can see)."""
        reports = []
        for name, service in sorted(self.services.items()):
            deployments = service.deployments
            if deployments[0].rollout != Rollout.FAILED or any(
                d.rollout == Rollout.COMPLETED for d in deployments
            ):
                continue
            failed = [task for task in self.tasks_by_id.values()
                      if task.group == f"service:{name}" and task.failed
                      and task.status == Status.STOPPED]  # fmt: skip
            last = max(failed, key=lambda task: task.started_at or 0.0, default=None)
            if last is None:
                continue
            output = last.logs().strip().splitlines()[-FAILURE_OUTPUT_LINES:]
            command = " ".join(last.revision.container.get("command") or [])
            reports.append(
                f"service {name} cannot start: {deployments[0].failed_tasks} tasks failed, the "
                f"last with: {last.stopped_reason}. Its command: {command}. Its last output:\n"
                + "\n".join(f"    {line}" for line in output)
            )
        return reports

    def deploy(
        self, service: str, edit: Callable[[dict[str, Any]], None] | None = None
    ) -> Revision:
        """Register a new revision of ``service``'s task definition (``edit`` changes its single
        container definition in place) and update the service to it."""
        current = self.services[service].revision
        definition = json.loads(json.dumps(current.definition))
        if edit is not None:
            edit(definition["containerDefinitions"][0])
        revision = Revision(current.family, self.revisions[current.family].number + 1, definition)
        self.revisions[current.family] = revision
        self.services[service].update(revision)
        return revision

    def fire(self, rule: str, slot: datetime | None = None) -> Task:
        """EventBridge invokes ``rule``'s target for the event of ``slot`` (default: now):
        a standalone task of the target's task definition with the transformed overrides."""
        target = self.rules[rule]
        slot = slot or datetime.now(UTC).replace(microsecond=0)
        revision = self.revisions[_family_of(target.task_definition_arn)]
        task = Task(revision, f"family:{revision.family}", self.options,
                    command=target.command(slot))  # fmt: skip
        self.tasks_by_id[task.id] = task
        self.on_event(f"(rule {rule}) RunTask {task.id[:8]} for {slot.isoformat()}")
        task.start()
        self.standalone.append(task)
        return task

    def fire_due(
        self, now: datetime | None = None, only: Collection[str] | None = None
    ) -> list[Task]:
        """Fire every rule whose next slot (after the last one fired, or the rules' creation)
        has come, once per slot, as EventBridge's scheduler does; ``only``: these rules alone
        (the others' slots depend on the time of day)."""
        now = now or datetime.now(UTC)
        started = []
        for name, rule in self.rules.items():
            if only is not None and name not in only:
                continue
            after = self._fired.get(name, self.created)
            slot = next(eventbridge_fire_times(rule.expression, after, created=self.created))
            if slot <= now:
                self._fired[name] = slot
                started.append(self.fire(name, slot))
        return started

    def stop_scheduling(self) -> None:
        """Stop the service scheduler: nothing is started or replaced any more."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def stop(self) -> None:
        """Stop every task, producers first (the web, then beat), then the workers, as a
        service deletion does (draining, SIGTERM, stop timeout, SIGKILL); then ``close``."""
        self.stop_scheduling()
        order = sorted(self.services, key=lambda name: (not name.startswith("web"),
                                                         not name.startswith("beat")))  # fmt: skip
        for name in order:
            service = self.services[name]
            drain = service.target_group.drain if service.target_group is not None else None
            tasks = [t for t in service.tasks() if t.status != Status.STOPPED]
            for task in tasks:
                task.stop("service deleted", drain)
            for task in tasks:
                task.wait_stopped()
        for task in self.standalone:
            task.stop("cluster stopped")
            task.wait_stopped()
        self.close()

    def close(self) -> None:
        """Close the front door, the agent endpoint and the stand-in of AWS's APIs (after the
        tasks have stopped)."""
        if self.load_balancer is not None:
            self.load_balancer.close()
        self.agent.close()
        self.aws.stop()

    def status(self) -> str:
        """One line per service, then one per task."""
        lines = []
        for name, service in sorted(self.services.items()):
            deployments = ", ".join(f"{d.id}:{d.revision.number}:{d.rollout.value}"
                                    for d in service.deployments)  # fmt: skip
            lines.append(f"{name:<20} desired {service.desired_count}  running "
                         f"{len(service.running())}  deployments [{deployments}]")  # fmt: skip
            targets = self.load_balancer.states() if self.load_balancer else {}
            for task in service.tasks():
                target = targets.get(task.id, "") if service.target_group is not None else ""
                lines.append(
                    f"    {task.id[:8]} rev {task.revision.number} {task.status.value:<12} "
                    f"{task.health.value:<9} {'protected' if task.protected else '':<9} "
                    f"{task.address or '':<13} {target}"
                )
        return "\n".join(lines)

    # --- internals -------------------------------------------------------------------------

    def _launch(self, service: Service, revision: Revision) -> Task:
        task = Task(revision, f"service:{service.name}", self.options)
        self.tasks_by_id[task.id] = task
        task.start()
        return task

    def _schedule(self) -> None:
        while not self._stopping.wait(TICK):
            for service in list(self.services.values()):
                service.reconcile()
            self.fire_due()


def program_image(run: ProgramRun) -> Image:
    """The image the program builds (the stack's ``image.context`` and ``image.dockerfile``):
    every task runs it. A prebuilt ``image.uri`` cannot be pulled here."""
    built = run.of_type(aws_types.DOCKER_BUILD_IMAGE)
    if not built:
        raise ImageError(
            "image.uri: the twin runs images it builds from a Dockerfile (image.context, "
            "image.dockerfile); it cannot pull a prebuilt one"
        )
    (image,) = built
    return built_image(image.inputs)


def _definition(registration: Registration) -> dict[str, Any]:
    """RegisterTaskDefinition's input from the program's inputs (containers as a list)."""
    inputs = dict(registration.inputs)
    containers = inputs["containerDefinitions"]
    if isinstance(containers, str):
        inputs["containerDefinitions"] = json.loads(containers)
    return inputs


def _family_of(task_definition_arn: str) -> str:
    return task_definition_arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


