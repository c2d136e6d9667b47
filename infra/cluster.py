"""The ECS cluster and what every service shares: log groups, the execution role, the broker
secret, capacity providers, and the IAM helpers (``infra/fargate_service.py`` builds a service
on it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws


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
    aliases: Sequence[pulumi.Alias] = (),
) -> aws.iam.Role:
    """An IAM role for ``service`` with exactly ``statements`` (none: a role with no rights).
    ``aliases``: where the role and its policy were before (``pulumi.ResourceOptions``)."""
    trust = assume_role_policy(service, context, source_account_guard=source_account_guard)
    opts = pulumi.ResourceOptions(parent=parent, aliases=list(aliases) or None)
    role = aws.iam.Role(name, assume_role_policy=trust, opts=opts)
    if statements:
        aws.iam.RolePolicy(name, role=role.id, policy=policy_document(statements), opts=opts)
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
    #: Their names (``FARGATE``, ``FARGATE_SPOT``): what a service's strategy may name.
    capacity_provider_names: tuple[str, ...]

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
        self.capacity_provider_names = tuple(args.capacity_providers)
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
        self,
        name: str,
        statements: Sequence[Mapping[str, Any]],
        parent: pulumi.Resource,
        aliases: Sequence[pulumi.Alias] = (),
    ) -> aws.iam.Role:
        """The role a task's own code runs as, with exactly ``statements``."""
        return role_with_policy(
            name,
            service="ecs-tasks.amazonaws.com",
            statements=statements,
            context=self.context,
            parent=parent,
            aliases=aliases,
        )
