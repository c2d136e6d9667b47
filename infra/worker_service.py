"""One worker pool: an ECS service of Celery workers consuming the pool's queues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.cluster import Cluster
from infra.config import WorkerPool
from infra.config_tables import DEFAULT_CELERY_APP
from infra.containers import health_check, worker_command
from infra.fargate_service import (
    ContainerInputs,
    FargateService,
    FargateServiceArgs,
    TaskPlacement,
)

CONTAINER_NAME = "worker"
#: The capacity providers every pool may use. The cluster always has both, so turning a pool's
#: ``fargateSpot`` on or off changes nothing but the pool's strategy (and ECS refuses to take a
#: provider off a cluster while a service still uses it).
CAPACITY_PROVIDERS = ("FARGATE", "FARGATE_SPOT")
#: Where a regular pool's tasks run. A strategy rather than the FARGATE launch type: the AWS
#: provider replaces a service whose ``launch_type`` changes (ForceNew), but updates its
#: ``capacity_provider_strategy`` in place with ``force_new_deployment`` (terraform-provider-aws
#: internal/service/ecs/service.go; see the README's ``workers[].fargateSpot``).
REGULAR_STRATEGY: tuple[aws.ecs.ServiceCapacityProviderStrategyArgsDict, ...] = (
    {"capacity_provider": "FARGATE", "weight": 1},
)
#: Where a Fargate Spot pool's tasks run: the first on regular Fargate, so the pool's queues
#: keep a consumer when Spot capacity runs out; every other on Spot.
SPOT_STRATEGY: tuple[aws.ecs.ServiceCapacityProviderStrategyArgsDict, ...] = (
    {"capacity_provider": "FARGATE", "base": 1, "weight": 0},
    {"capacity_provider": "FARGATE_SPOT", "weight": 1},
)
#: What a worker needs to hold scale-in protection while it runs tasks (cold-shutdown pools).
TASK_PROTECTION_ACTIONS = ("ecs:GetTaskProtection", "ecs:UpdateTaskProtection")
#: What a worker needs to publish its queue metrics (``celery_ecs.cloudwatch``).
PUT_METRIC_DATA_ACTION = "cloudwatch:PutMetricData"
#: The condition key that scopes it: PutMetricData has no resource-level permissions, only
#: this key (Service Authorization Reference, "Actions, resources, and condition keys for
#: Amazon CloudWatch"; CloudWatch User Guide, "Using condition keys to limit access to
#: CloudWatch namespaces").
NAMESPACE_CONDITION_KEY = "cloudwatch:namespace"


def put_metric_data_statement(namespace: str) -> dict[str, Any]:
    """Publish metrics into ``namespace`` and no other. ``Resource: "*"`` because the action
    has no resource type to name; the condition is what scopes it."""
    return {
        "Effect": "Allow",
        "Action": [PUT_METRIC_DATA_ACTION],
        "Resource": "*",
        "Condition": {"StringEquals": {NAMESPACE_CONDITION_KEY: namespace}},
    }


@dataclass(frozen=True)
class WorkerArgs:
    """Arguments of ``Worker``.

    - ``pool``: the validated pool (queues, concurrency, counts, size, timeout budget).
      Required.
    - ``cluster``: the ECS cluster with a log group for ``service``. Required.
    - ``service``: the service's name in the cluster's log groups. Required.
    - ``family``: task definition family. Required.
    - ``image``: image reference. Required.
    - ``environment``: container environment (no secrets). Required.
    - ``placement``: subnets, the background security group, public IP or not. Required.
    - ``metrics_namespace``: the CloudWatch namespace the workers publish their queue metrics
      to (``CELERY_METRICS_NAMESPACE``); the task role may put metrics there only. Empty: no
      metrics, no permission. Default empty.
    - ``celery_app``: the ``celery -A`` target. Default the example's, ``app.celery_app``.
    """

    pool: WorkerPool
    cluster: Cluster
    service: str
    family: str
    image: pulumi.Input[str]
    environment: Mapping[str, str]
    placement: TaskPlacement
    metrics_namespace: str = ""
    celery_app: str = DEFAULT_CELERY_APP


class Worker(pulumi.ComponentResource):
    service: aws.ecs.Service

    def __init__(
        self, name: str, args: WorkerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Worker", name, None, opts)
        args = self._normalize(args)
        pool = args.pool
        statements: list[dict[str, Any]] = []
        if pool.budget.task_protection:
            statements.append(
                {
                    "Effect": "Allow",
                    "Action": list(TASK_PROTECTION_ACTIONS),
                    "Resource": [args.cluster.task_arn_pattern()],
                }
            )
        if args.metrics_namespace:
            statements.append(put_metric_data_statement(args.metrics_namespace))
        fargate = FargateService(
            name,
            FargateServiceArgs(
                cluster=args.cluster,
                service=args.service,
                family=args.family,
                cpu=pool.cpu,
                memory=pool.memory,
                container=ContainerInputs(
                    name=CONTAINER_NAME,
                    image=args.image,
                    command=worker_command(
                        pool.name, pool.queues, pool.concurrency, args.celery_app
                    ),
                    environment=args.environment,
                    stop_timeout=pool.budget.stop_timeout,
                    health_check=health_check("worker"),
                ),
                placement=args.placement,
                desired_count=pool.min_count,
                deployment_timeout=pool.budget.deployment_timeout,
                task_role_statements=statements,
                autoscaled=True,
                capacity_provider_strategy=(
                    SPOT_STRATEGY if pool.fargate_spot else REGULAR_STRATEGY
                ),
                moved_from=self,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.service = fargate.service
        self.register_outputs({"serviceName": self.service.name})

    @staticmethod
    def _normalize(args: WorkerArgs) -> WorkerArgs:
        if args.pool.min_count < 1:
            raise ValueError("pool.min_count: a queue must never sit without a consumer")
        return args
