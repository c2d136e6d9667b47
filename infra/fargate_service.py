"""A Fargate service: the task role, the task definition of one hardened container, and the ECS
service that runs it. Web, worker pools and beat are each one, with their differences as
arguments; the EventBridge enqueue task uses the task definition alone.

The shape follows Pulumi's own component library, awsx ``ecs.FargateService``
(pulumi/pulumi-awsx ``awsx/ecs/fargateService.ts``): one component whose children are the task
definition and the service, on the FARGATE launch type unless a capacity provider strategy is
given, waiting for steady state. What every service shares lives in the cluster
(``infra/cluster.py``): the execution role and the log groups, one per service, since the
execution role's policy names each of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pulumi
import pulumi_aws as aws

from celery_ecs.settings import BROKER_URL
from infra.budget import FARGATE_STOP_TIMEOUT_CAP
from infra.cluster import Cluster
from infra.config_tables import FARGATE_MEMORY
from infra.containers import TMP_VOLUME, ContainerSpec, container_definition

COMPONENT_TYPE = "celery-ecs:infra:FargateService"
#: A task definition family: "Up to 255 letters (uppercase and lowercase), numbers, underscores,
#: and hyphens are allowed" (Amazon ECS API Reference, RegisterTaskDefinition, ``family``).
FAMILY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,255}")
#: The deployment percentages this component takes: at most the desired count stays up (100),
#: at most twice it runs during a deployment (ECS's default maximum, 200).
MINIMUM_HEALTHY_RANGE = range(0, 101)
MAXIMUM_RANGE = range(100, 201)


@dataclass(frozen=True)
class TaskPlacement:
    """Where a service's tasks run (the awsvpc network configuration)."""

    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    assign_public_ip: bool


@dataclass(frozen=True)
class ContainerInputs:
    """What a service's single container needs beyond the fixed hardening
    (``infra.containers.container_definition``)."""

    name: str
    image: pulumi.Input[str]
    command: Sequence[str]
    #: Values may be Outputs (a resource's ARN); never secrets (those arrive as ``secrets``).
    environment: Mapping[str, pulumi.Input[str]]
    #: Seconds between SIGTERM and SIGKILL, 1..120 (Fargate's cap).
    stop_timeout: int
    port: int | None = None
    health_check: Mapping[str, object] | None = field(default=None)


def fargate_task_definition(
    name: str,
    *,
    cluster: Cluster,
    service: str,
    family: str,
    cpu: int,
    memory: int,
    container: ContainerInputs,
    task_role: aws.iam.Role,
    parent: pulumi.Resource,
    aliases: Sequence[pulumi.Alias] = (),
) -> aws.ecs.TaskDefinition:
    """A Fargate task definition with one container; the broker URL arrives as a secret.

    ``service`` names the cluster log group the container writes to. ``aliases``: where the
    task definition was before (``pulumi.ResourceOptions``).
    """
    if memory not in FARGATE_MEMORY.get(cpu, ()):
        raise ValueError(f"cpu/memory: {cpu}/{memory} is not a Fargate size")
    if service not in cluster.log_groups:
        raise ValueError(f"service: the cluster has no log group for {service!r}")
    log_group = cluster.log_groups[service]

    def render(values: list[Any]) -> str:
        image, environment, secret_arn, log_group_name, region = values
        spec = ContainerSpec(
            name=container.name,
            image=image,
            command=container.command,
            environment=environment,
            secrets={BROKER_URL: secret_arn},
            log_group=log_group_name,
            region=region,
            stop_timeout=container.stop_timeout,
            port=container.port,
            health_check=container.health_check,
        )
        return json.dumps([container_definition(spec)])

    definitions = pulumi.Output.all(
        container.image,
        pulumi.Output.from_input(dict(container.environment)),
        cluster.broker_secret_arn,
        log_group.name,
        cluster.context.region,
    ).apply(render)
    return aws.ecs.TaskDefinition(
        name,
        family=family,
        cpu=str(cpu),
        memory=str(memory),
        network_mode="awsvpc",
        requires_compatibilities=["FARGATE"],
        runtime_platform={
            "operating_system_family": "LINUX",
            "cpu_architecture": cluster.cpu_architecture,
        },
        execution_role_arn=cluster.execution_role.arn,
        task_role_arn=task_role.arn,
        # Fargate ephemeral storage: the writable /tmp of a read-only root filesystem.
        volumes=[{"name": TMP_VOLUME}],
        container_definitions=definitions,
        tags={"Service": service},
        opts=pulumi.ResourceOptions(parent=parent, aliases=list(aliases) or None),
    )


@dataclass(frozen=True)
class FargateServiceArgs:
    """Arguments of ``FargateService``. ``FargateService.normalize`` checks every one before
    anything is registered; a wrong one raises ``ValueError`` naming it and what is allowed.

    - ``cluster``: the cluster: its execution role, its log group for ``service``, the broker
      secret, its capacity providers. Required.
    - ``service``: the service's name among the cluster's log groups, and its ``Service`` tag
      (web, worker-<pool>, beat). Required.
    - ``family``: task definition family, 1..255 letters, digits, ``_``, ``-``. Required.
    - ``cpu``: task CPU, Fargate units (1024 = one vCPU). Required.
    - ``memory``: task memory, MiB; with ``cpu`` one of Fargate's sizes. Required.
    - ``container``: the one container (name, image, command, environment, stop timeout in
      seconds 1..120, port, health check); the hardening is fixed. Required.
    - ``placement``: subnets (at least one), security group, public IP or not. Required.
    - ``desired_count``: tasks when the service is created, >= 0. Required.
    - ``deployment_timeout``: seconds ``up`` waits for a deployment to reach steady state (the
      service's create, update and delete timeouts), > 0. Required.
    - ``task_role_statements``: the IAM statements of the task role, the rights of the task's
      own code; named actions only (no ``*``). Default none: a role with no rights.
    - ``autoscaled``: Application Auto Scaling owns the desired count once the service exists,
      so ``up`` leaves it alone. Default False.
    - ``minimum_healthy_percent``: percent of the desired count that stays running during a
      deployment, 0..100. Default 100.
    - ``maximum_percent``: percent of the desired count that may run during a deployment,
      100..200. Default 200 (new tasks start before old ones stop). With the minimum they must
      let ECS replace a task at the desired count: min 0 / max 100 stops the old task before it
      starts the new one (a singleton such as beat).
    - ``capacity_provider_strategy``: where the tasks run, by the cluster's capacity providers
      (``FARGATE``, ``FARGATE_SPOT``). Default none: the FARGATE launch type.
    - ``target_group_arns``: target groups the container's port registers in. Default none;
      given, the container needs a port.
    - ``health_check_grace_period``: seconds ECS ignores failing health checks of a new task,
      >= 0. Default None (ECS's 0).
    - ``depends_on``: resources the service waits for (the web: its listeners, since ECS
      refuses a target group no listener uses). Default none.
    - ``moved_from``: the component whose direct children the role, task definition and service
      were before this component existed (web, worker and beat built them themselves). Each
      carries an alias to its URN there, so a deployed stack adopts it instead of replacing it
      (Pulumi docs, "Resource option: aliases"). Default None: nothing moved.
    """

    cluster: Cluster
    service: str
    family: str
    cpu: int
    memory: int
    container: ContainerInputs
    placement: TaskPlacement
    desired_count: int
    deployment_timeout: int
    task_role_statements: Sequence[Mapping[str, Any]] = ()
    autoscaled: bool = False
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    capacity_provider_strategy: Sequence[aws.ecs.ServiceCapacityProviderStrategyArgsDict] = ()
    target_group_arns: Sequence[pulumi.Input[str]] = ()
    health_check_grace_period: int | None = None
    depends_on: Sequence[pulumi.Resource] = ()
    moved_from: pulumi.Resource | None = None


class FargateService(pulumi.ComponentResource):
    """``<name>-task`` (the task role and its policy, and the task definition) and
    ``<name>-service`` (the ECS service): a Fargate service on the latest platform version that
    rolls back failed deployments, and makes ``up`` fail when it did."""

    service: aws.ecs.Service
    task_definition: aws.ecs.TaskDefinition
    task_role: aws.iam.Role

    def __init__(
        self, name: str, args: FargateServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # Checked before the component registers: wrong arguments leave nothing behind.
        args = self.normalize(args)
        super().__init__(COMPONENT_TYPE, name, None, opts)
        aliases = [pulumi.Alias(parent=args.moved_from)] if args.moved_from is not None else []
        container = args.container
        self.task_role = args.cluster.task_role(
            f"{name}-task", args.task_role_statements, parent=self, aliases=aliases
        )
        self.task_definition = fargate_task_definition(
            f"{name}-task",
            cluster=args.cluster,
            service=args.service,
            family=args.family,
            cpu=args.cpu,
            memory=args.memory,
            container=container,
            task_role=self.task_role,
            parent=self,
            aliases=aliases,
        )
        strategy = args.capacity_provider_strategy
        depends_on = list(args.depends_on)
        if strategy and args.cluster.capacity_providers is not None:
            depends_on.append(args.cluster.capacity_providers)
        # The container's port registers in each target group (normalize: given one, it has one).
        port = container.port
        load_balancers: list[aws.ecs.ServiceLoadBalancerArgsDict] = [
            {"target_group_arn": arn, "container_name": container.name, "container_port": port}
            for arn in args.target_group_arns
            if port is not None
        ]
        timeout = f"{args.deployment_timeout}s"
        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=args.cluster.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=args.desired_count,
            # The API takes one or the other: a launch type, or a capacity provider strategy.
            launch_type=None if strategy else "FARGATE",
            capacity_provider_strategies=[item.copy() for item in strategy] or None,
            platform_version="LATEST",
            network_configuration={
                "subnets": list(args.placement.subnet_ids),
                "security_groups": [args.placement.security_group_id],
                "assign_public_ip": args.placement.assign_public_ip,
            },
            load_balancers=load_balancers or None,
            health_check_grace_period_seconds=args.health_check_grace_period,
            deployment_minimum_healthy_percent=args.minimum_healthy_percent,
            deployment_maximum_percent=args.maximum_percent,
            deployment_circuit_breaker={"enable": True, "rollback": True},
            # Without it, up reports success while tasks crash-loop.
            wait_for_steady_state=True,
            # ECS reads the broker URL secret when a task starts: a new URL (a rotated token)
            # must start new tasks, although the task definition is the same.
            triggers={"brokerUrlVersion": args.cluster.broker_secret_version},
            force_new_deployment=True,
            # ECS Exec needs a writable root filesystem for its agent; the containers have none.
            enable_execute_command=False,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            tags={"Service": args.service},
            opts=pulumi.ResourceOptions(
                parent=self,
                aliases=aliases or None,
                depends_on=depends_on,
                ignore_changes=["desired_count"] if args.autoscaled else None,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=timeout, update=timeout, delete=timeout
                ),
            ),
        )
        fail_if_rolled_back(args.service, self.service, self.task_definition)
        self.register_outputs(
            {
                "serviceName": self.service.name,
                "taskDefinitionArn": self.task_definition.arn,
                "taskRoleArn": self.task_role.arn,
            }
        )

    @staticmethod
    def normalize(args: FargateServiceArgs) -> FargateServiceArgs:
        """``args`` checked, with its sequences as tuples; raises ``ValueError`` naming the
        argument and what it allows."""
        cpu, memory = args.cpu, args.memory
        if cpu not in FARGATE_MEMORY:
            _refuse("cpu", cpu, ", ".join(map(str, FARGATE_MEMORY)) + " (Fargate units)")
        if memory not in FARGATE_MEMORY[cpu]:
            sizes = ", ".join(map(str, FARGATE_MEMORY[cpu]))
            _refuse("memory", memory, f"with cpu {cpu}: {sizes} (MiB)")
        if args.service not in args.cluster.log_groups:
            _refuse(
                "service",
                args.service,
                "a service the cluster has a log group for: " + ", ".join(args.cluster.log_groups),
            )
        if not FAMILY_PATTERN.fullmatch(args.family):
            _refuse("family", args.family, "1..255 letters, digits, '_' and '-'")
        container = args.container
        if not 1 <= container.stop_timeout <= FARGATE_STOP_TIMEOUT_CAP:
            _refuse(
                "container.stop_timeout",
                container.stop_timeout,
                f"1..{FARGATE_STOP_TIMEOUT_CAP} seconds (Fargate's cap)",
            )
        if not args.placement.subnet_ids:
            _refuse("placement.subnet_ids", [], "at least one subnet")
        if args.desired_count < 0:
            _refuse("desired_count", args.desired_count, "an integer >= 0 (tasks)")
        if args.deployment_timeout <= 0:
            _refuse("deployment_timeout", args.deployment_timeout, "an integer > 0 (seconds)")
        for index, statement in enumerate(args.task_role_statements):
            actions = statement.get("Action", [])
            for action in [actions] if isinstance(actions, str) else actions:
                if isinstance(action, str) and "*" in action:
                    _refuse(
                        f"task_role_statements[{index}].Action",
                        action,
                        "named actions only (least privilege)",
                    )
        _check_deployment(args)
        for index, item in enumerate(args.capacity_provider_strategy):
            provider = item.get("capacity_provider")
            if provider not in args.cluster.capacity_provider_names:
                _refuse(
                    f"capacity_provider_strategy[{index}].capacity_provider",
                    provider,
                    "a capacity provider of the cluster: "
                    + (", ".join(args.cluster.capacity_provider_names) or "none"),
                )
        if args.target_group_arns and container.port is None:
            _refuse("target_group_arns", "given", "only with container.port (what registers)")
        if args.health_check_grace_period is not None and args.health_check_grace_period < 0:
            _refuse(
                "health_check_grace_period",
                args.health_check_grace_period,
                "an integer >= 0 (seconds), or None",
            )
        return dataclasses.replace(
            args,
            task_role_statements=tuple(args.task_role_statements),
            capacity_provider_strategy=tuple(args.capacity_provider_strategy),
            target_group_arns=tuple(args.target_group_arns),
            depends_on=tuple(args.depends_on),
        )


def _check_deployment(args: FargateServiceArgs) -> None:
    """ECS keeps at least ceil(desired x minimum / 100) tasks running and at most
    floor(desired x maximum / 100) (Amazon ECS API Reference, DeploymentConfiguration): unless
    the second exceeds the first, a deployment can replace no task and never ends."""
    low, high = args.minimum_healthy_percent, args.maximum_percent
    if low not in MINIMUM_HEALTHY_RANGE:
        _refuse("minimum_healthy_percent", low, "0..100")
    if high not in MAXIMUM_RANGE:
        _refuse("maximum_percent", high, "100..200")
    count = args.desired_count
    if count and math.floor(count * high / 100) <= math.ceil(count * low / 100):
        _refuse(
            "minimum_healthy_percent/maximum_percent",
            f"{low}/{high}",
            f"percentages that let ECS replace one of {count} tasks, e.g. 100/200, or "
            "0/100 for a singleton",
        )


def _refuse(argument: str, value: object, allowed: str) -> NoReturn:
    raise ValueError(f"{argument}: {value!r} is not allowed; allowed: {allowed}")


class DeploymentRolledBack(pulumi.RunError):
    """The service is steady, but on another task definition than the one just registered."""


def fail_if_rolled_back(
    service: str, ecs_service: aws.ecs.Service, task_definition: aws.ecs.TaskDefinition
) -> None:
    """Make ``up`` fail when ECS's circuit breaker rolled the deployment back.

    ``wait_for_steady_state`` alone reports success then: the service is steady again, on the
    previous task definition (hashicorp/terraform-provider-aws#20858). After the update the
    service's ``task_definition`` is read back from ECS; if it is not the one registered, the
    new revision never took over.
    """

    def check(arns: list[str]) -> None:
        running, registered = arns
        if running != registered and not pulumi.runtime.is_dry_run():
            raise DeploymentRolledBack(
                f"service {service}: the deployment of {registered} was rolled back by ECS's "
                f"circuit breaker; the service runs {running}. See its events (aws ecs "
                "describe-services) and the stopped tasks' reasons; fix, then run up again."
            )

    pulumi.Output.all(ecs_service.task_definition, task_definition.arn).apply(check)
