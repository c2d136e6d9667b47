"""The ECS cluster and what every service shares: log groups, the execution role, IAM and
Fargate helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from celery_ecs.settings import BROKER_URL
from infra.config import FARGATE_MEMORY
from infra.containers import TMP_VOLUME, ContainerSpec, container_definition


@dataclass(frozen=True)
class AwsContext:
    """Partition, region and account of the deployment, for ARNs built by hand."""

    partition: pulumi.Output[str]
    region: pulumi.Output[str]
    account_id: pulumi.Output[str]

    @staticmethod
    def lookup() -> AwsContext:
        return AwsContext(
            partition=aws.get_partition_output().partition,
            region=aws.get_region_output().region,
            account_id=aws.get_caller_identity_output().account_id,
        )

    def arn(self, service: str, resource: pulumi.Input[str]) -> pulumi.Output[str]:
        """ARN of a regional resource of this account."""
        return pulumi.Output.concat(
            "arn:",
            self.partition,
            ":",
            service,
            ":",
            self.region,
            ":",
            self.account_id,
            ":",
            resource,
        )


def policy_document(statements: Sequence[Mapping[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy JSON from statements whose values may be Outputs."""
    return pulumi.Output.from_input(
        {"Version": "2012-10-17", "Statement": [dict(s) for s in statements]}
    ).apply(lambda document: json.dumps(document, sort_keys=True))


def assume_role_policy(
    service: str, context: AwsContext, *, source_account_guard: bool = True
) -> pulumi.Output[str]:
    """Trust policy for an AWS service principal; with the guard, only on behalf of this
    account (confused-deputy protection)."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if source_account_guard:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": context.account_id}}
    return policy_document([statement])


def role_with_policy(
    name: str,
    *,
    service: str,
    statements: Sequence[Mapping[str, Any]],
    context: AwsContext,
    parent: pulumi.Resource,
    source_account_guard: bool = True,
) -> aws.iam.Role:
    """An IAM role for ``service`` with exactly ``statements`` (none: a role with no rights)."""
    trust = assume_role_policy(service, context, source_account_guard=source_account_guard)
    role = aws.iam.Role(name, assume_role_policy=trust, opts=pulumi.ResourceOptions(parent=parent))
    if statements:
        aws.iam.RolePolicy(
            name,
            role=role.id,
            policy=policy_document(statements),
            opts=pulumi.ResourceOptions(parent=parent),
        )
    return role


@dataclass(frozen=True)
class ClusterArgs:
    """Arguments of ``Cluster``.

    - ``cluster_name``: logical name of the ECS cluster (its physical name adds a random
      suffix). Required.
    - ``services``: names of the services (web, worker-<pool>, beat, enqueue); each gets one
      log group. Required, non-empty, unique.
    - ``log_group_prefix``: log groups are ``<prefix>/<service>``. Required.
    - ``log_retention_days``: days CloudWatch keeps the logs. Default 30.
    - ``broker_secret_arn``: the one secret tasks may read (the broker URL). Required.
    - ``broker_secret_version``: the secret's current version; every service redeploys when it
      changes, so its tasks read the new broker URL. Required.
    - ``pull_repository_arns``: ECR repositories the image comes from (empty for a public
      image). Default none.
    - ``container_insights``: Container Insights' per-service metrics (task counts, CPU,
      memory), billed as custom metrics; nothing the program needs reads them unless the
      stack asks (``containerInsights``). Default False.
    - ``cpu_architecture``: ``X86_64`` or ``ARM64``, of every task definition. Default X86_64.
    - ``capacity_providers``: Fargate capacity providers associated with the cluster, needed by
      services with a capacity provider strategy (``FARGATE``, ``FARGATE_SPOT``). Default none.
    - ``aws``: partition/region/account. Required.
    """

    cluster_name: str
    services: Sequence[str]
    log_group_prefix: str
    broker_secret_arn: pulumi.Input[str]
    broker_secret_version: pulumi.Input[str]
    aws: AwsContext
    log_retention_days: int = 30
    pull_repository_arns: Sequence[pulumi.Input[str]] = ()
    container_insights: bool = False
    cpu_architecture: str = "X86_64"
    capacity_providers: Sequence[str] = ()


class Cluster(pulumi.ComponentResource):
    cluster: aws.ecs.Cluster
    execution_role: aws.iam.Role
    log_groups: dict[str, aws.cloudwatch.LogGroup]
    context: AwsContext
    broker_secret_arn: pulumi.Output[str]
    broker_secret_version: pulumi.Output[str]
    cpu_architecture: str
    #: The cluster's capacity providers, once associated (None without capacity providers).
    capacity_providers: aws.ecs.ClusterCapacityProviders | None

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Cluster", name, None, opts)
        args = self._normalize(args)
        child = pulumi.ResourceOptions(parent=self)
        self.context = args.aws
        self.broker_secret_arn = pulumi.Output.from_input(args.broker_secret_arn)
        self.broker_secret_version = pulumi.Output.from_input(args.broker_secret_version)
        self.cpu_architecture = args.cpu_architecture
        self.cluster = aws.ecs.Cluster(
            args.cluster_name,
            settings=[
                {
                    "name": "containerInsights",
                    "value": "enabled" if args.container_insights else "disabled",
                }
            ],
            opts=child,
        )
        self.capacity_providers = (
            aws.ecs.ClusterCapacityProviders(
                f"{name}-capacity-providers",
                cluster_name=self.cluster.name,
                capacity_providers=list(args.capacity_providers),
                opts=child,
            )
            if args.capacity_providers
            else None
        )
        self.log_groups = {
            service: aws.cloudwatch.LogGroup(
                f"{name}-{service}",
                name=f"{args.log_group_prefix}/{service}",
                retention_in_days=args.log_retention_days,
                opts=child,
            )
            for service in args.services
        }
        self.execution_role = role_with_policy(
            f"{name}-execution",
            service="ecs-tasks.amazonaws.com",
            statements=self._execution_statements(args),
            context=args.aws,
            parent=self,
            # AWS documents the source-account guard for task roles, not for the execution
            # role the agent assumes; a refused assumption would stop every task from starting.
            source_account_guard=False,
        )
        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "clusterArn": self.cluster.arn,
                "executionRoleArn": self.execution_role.arn,
            }
        )

    @staticmethod
    def _normalize(args: ClusterArgs) -> ClusterArgs:
        if not args.services or len(set(args.services)) != len(args.services):
            raise ValueError(f"services: need unique names, got {list(args.services)}")
        if not args.log_group_prefix.startswith("/"):
            raise ValueError("log_group_prefix: must start with '/'")
        return args

    def _execution_statements(self, args: ClusterArgs) -> list[dict[str, Any]]:
        """Start a task: pull the image, write its logs, read the broker URL. Nothing else."""
        statements: list[dict[str, Any]] = [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [
                    pulumi.Output.concat(group.arn, ":*") for group in self.log_groups.values()
                ],
            },
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [args.broker_secret_arn],
            },
        ]
        if args.pull_repository_arns:
            statements += [
                # The registry login itself has no resource-level permissions.
                {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": [
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                    ],
                    "Resource": list(args.pull_repository_arns),
                },
            ]
        return statements

    def task_arn_pattern(self) -> pulumi.Output[str]:
        """ARN of any task of this cluster (scope of task-level permissions)."""
        return self.context.arn("ecs", pulumi.Output.concat("task/", self.cluster.name, "/*"))

    def task_role(
        self, name: str, statements: Sequence[Mapping[str, Any]], parent: pulumi.Resource
    ) -> aws.iam.Role:
        return role_with_policy(
            name,
            service="ecs-tasks.amazonaws.com",
            statements=statements,
            context=self.context,
            parent=parent,
        )


@dataclass(frozen=True)
class TaskPlacement:
    """Where a service's tasks run (the awsvpc network configuration)."""

    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    assign_public_ip: bool


@dataclass(frozen=True)
class ContainerInputs:
    """What a service's single container needs beyond the fixed hardening."""

    name: str
    image: pulumi.Input[str]
    command: Sequence[str]
    #: Values may be Outputs (a resource's ARN); never secrets (those arrive as ``secrets``).
    environment: Mapping[str, pulumi.Input[str]]
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
) -> aws.ecs.TaskDefinition:
    """A Fargate task definition with one container; the broker URL arrives as a secret.

    ``service`` names the cluster log group the container writes to.
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
        opts=pulumi.ResourceOptions(parent=parent),
    )


def fargate_service(
    name: str,
    *,
    cluster: Cluster,
    service: str,
    task_definition: aws.ecs.TaskDefinition,
    placement: TaskPlacement,
    desired_count: int,
    deployment_timeout: int,
    parent: pulumi.Resource,
    autoscaled: bool,
    minimum_healthy_percent: int = 100,
    maximum_percent: int = 200,
    load_balancers: Sequence[aws.ecs.ServiceLoadBalancerArgsDict] = (),
    health_check_grace_period: int | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
    capacity_provider_strategy: Sequence[aws.ecs.ServiceCapacityProviderStrategyArgsDict] = (),
) -> aws.ecs.Service:
    """A Fargate service on the latest platform version that rolls back failed deployments.

    ``pulumi up`` waits until the deployment reaches steady state, for up to
    ``deployment_timeout`` seconds (from the budget), and fails if it rolled back instead (see
    ``fail_if_rolled_back``).

    ``autoscaled``: the desired count belongs to Application Auto Scaling once the service
    exists, so later updates leave it alone. ``capacity_provider_strategy``: where the tasks
    run (``FARGATE``, ``FARGATE_SPOT``) instead of the FARGATE launch type; the cluster must
    have the capacity providers.
    """
    if capacity_provider_strategy:
        if cluster.capacity_providers is None:
            raise ValueError("capacity_provider_strategy: the cluster has no capacity providers")
        depends_on = [*depends_on, cluster.capacity_providers]
    timeout = f"{deployment_timeout}s"
    ecs_service = aws.ecs.Service(
        name,
        cluster=cluster.cluster.arn,
        task_definition=task_definition.arn,
        desired_count=desired_count,
        # The API takes one or the other: a launch type, or a capacity provider strategy.
        launch_type=None if capacity_provider_strategy else "FARGATE",
        capacity_provider_strategies=(
            [item.copy() for item in capacity_provider_strategy] or None
        ),
        platform_version="LATEST",
        network_configuration={
            "subnets": list(placement.subnet_ids),
            "security_groups": [placement.security_group_id],
            "assign_public_ip": placement.assign_public_ip,
        },
        load_balancers=[balancer.copy() for balancer in load_balancers] or None,
        health_check_grace_period_seconds=health_check_grace_period,
        deployment_minimum_healthy_percent=minimum_healthy_percent,
        deployment_maximum_percent=maximum_percent,
        deployment_circuit_breaker={"enable": True, "rollback": True},
        # Without it, up reports success while tasks crash-loop.
        wait_for_steady_state=True,
        # ECS reads the broker URL secret when a task starts: a new URL (a rotated token) must
        # start new tasks, although the task definition is the same.
        triggers={"brokerUrlVersion": cluster.broker_secret_version},
        force_new_deployment=True,
        # ECS Exec needs a writable root filesystem for its agent; the containers have none.
        enable_execute_command=False,
        enable_ecs_managed_tags=True,
        propagate_tags="SERVICE",
        tags={"Service": service},
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            ignore_changes=["desired_count"] if autoscaled else None,
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout, delete=timeout),
        ),
    )
    fail_if_rolled_back(service, ecs_service, task_definition)
    return ecs_service


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
