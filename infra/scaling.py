"""Auto scaling of one ECS service between a minimum and a maximum task count.

Workers scale on backlog per task: the waiting messages of the pool's queues (the workers
publish a ``Backlog`` metric per queue every 60 s, embedded metric format) divided by the
service's running tasks (Container Insights). The web scales on CPU and, optionally, on
load-balancer requests per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

BACKLOG_METRIC = "Backlog"
QUEUE_DIMENSION = "Queue"
CONTAINER_INSIGHTS_NAMESPACE = "ECS/ContainerInsights"
#: Seconds between scale-out steps: a growing backlog is acted on within about a minute.
SCALE_OUT_COOLDOWN = 60
#: Seconds between scale-in steps: longer, so a burst does not make the pool flap (and workers
#: shutting down cancel or finish tasks, which costs more than an idle minute).
SCALE_IN_COOLDOWN = 300


@dataclass(frozen=True)
class BacklogTarget:
    """Waiting messages per running task to hold.

    - ``namespace``: CloudWatch namespace of the ``Backlog`` metric (CELERY_METRICS_NAMESPACE).
    - ``queues``: the pool's queues; their backlogs are summed.
    - ``per_task``: target value, messages per running task (>= 1).
    """

    namespace: str
    queues: Sequence[str]
    per_task: int


@dataclass(frozen=True)
class ServiceScalingArgs:
    """Arguments of ``ServiceScaling``.

    - ``cluster_name``, ``service_name``: the ECS service. Required.
    - ``min_count``/``max_count``: task count bounds (1 <= min <= max). Required.
    - ``backlog``: backlog-per-task policy. Default None.
    - ``cpu_percent``: average CPU utilisation to hold, percent. Default None.
    - ``requests_per_task``: ALB requests per task and minute to hold; needs
      ``request_count_label``. Default None.
    At least one policy is required.
    """

    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    min_count: int
    max_count: int
    backlog: BacklogTarget | None = None
    cpu_percent: int | None = None
    requests_per_task: int | None = None
    request_count_label: pulumi.Input[str] | None = None


def backlog_metric_queries(
    target: BacklogTarget, cluster_name: pulumi.Input[str], service_name: pulumi.Input[str]
) -> list[dict[str, Any]]:
    """Metric math: SUM(Backlog of each queue, Maximum) / RunningTaskCount.

    Maximum, because every pool consuming a queue publishes its backlog: the copies agree.
    """
    queries: list[dict[str, Any]] = []
    queue_ids = []
    for index, queue in enumerate(target.queues):
        query_id = f"backlog{index}"
        queue_ids.append(query_id)
        queries.append(
            {
                "id": query_id,
                "label": f"Backlog of {queue}",
                "return_data": False,
                "metric_stat": {
                    "stat": "Maximum",
                    "metric": {
                        "namespace": target.namespace,
                        "metric_name": BACKLOG_METRIC,
                        "dimensions": [{"name": QUEUE_DIMENSION, "value": queue}],
                    },
                },
            }
        )
    queries.append(
        {
            "id": "tasks",
            "label": "Running tasks",
            "return_data": False,
            "metric_stat": {
                "stat": "Average",
                "metric": {
                    "namespace": CONTAINER_INSIGHTS_NAMESPACE,
                    "metric_name": "RunningTaskCount",
                    "dimensions": [
                        {"name": "ClusterName", "value": cluster_name},
                        {"name": "ServiceName", "value": service_name},
                    ],
                },
            },
        }
    )
    backlog = queue_ids[0] if len(queue_ids) == 1 else f"SUM([{', '.join(queue_ids)}])"
    queries.append(
        {
            "id": "backlog_per_task",
            "label": "Waiting messages per running task",
            "expression": f"{backlog} / tasks",
            "return_data": True,
        }
    )
    return queries


class ServiceScaling(pulumi.ComponentResource):
    target: aws.appautoscaling.Target

    def __init__(
        self, name: str, args: ServiceScalingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:ServiceScaling", name, None, opts)
        args = self._normalize(args)
        child = pulumi.ResourceOptions(parent=self)
        self.target = aws.appautoscaling.Target(
            name,
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", args.service_name),
            min_capacity=args.min_count,
            max_capacity=args.max_count,
            opts=child,
        )
        if args.backlog is not None:
            self._policy(
                f"{name}-backlog",
                args.backlog.per_task,
                {
                    "customized_metric_specification": {
                        "metrics": backlog_metric_queries(
                            args.backlog, args.cluster_name, args.service_name
                        )
                    },
                },
            )
        if args.cpu_percent is not None:
            self._policy(
                f"{name}-cpu",
                args.cpu_percent,
                {
                    "predefined_metric_specification": {
                        "predefined_metric_type": "ECSServiceAverageCPUUtilization"
                    },
                },
            )
        if args.requests_per_task is not None:
            self._policy(
                f"{name}-requests",
                args.requests_per_task,
                {
                    "predefined_metric_specification": {
                        "predefined_metric_type": "ALBRequestCountPerTarget",
                        "resource_label": args.request_count_label,
                    },
                },
            )
        self.register_outputs({"resourceId": self.target.resource_id})

    def _policy(self, name: str, target_value: float, metric: dict[str, Any]) -> None:
        aws.appautoscaling.Policy(
            name,
            policy_type="TargetTrackingScaling",
            service_namespace=self.target.service_namespace,
            scalable_dimension=self.target.scalable_dimension,
            resource_id=self.target.resource_id,
            target_tracking_scaling_policy_configuration={
                "target_value": target_value,
                "scale_in_cooldown": SCALE_IN_COOLDOWN,
                "scale_out_cooldown": SCALE_OUT_COOLDOWN,
                **metric,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    @staticmethod
    def _normalize(args: ServiceScalingArgs) -> ServiceScalingArgs:
        if not 1 <= args.min_count <= args.max_count:
            raise ValueError(
                f"min_count/max_count: need 1 <= min <= max, got {args.min_count}/{args.max_count}"
            )
        if args.backlog is None and args.cpu_percent is None and args.requests_per_task is None:
            raise ValueError("at least one of backlog, cpu_percent, requests_per_task is needed")
        if args.backlog is not None and (not args.backlog.queues or args.backlog.per_task < 1):
            raise ValueError("backlog: needs queues and per_task >= 1")
        if args.requests_per_task is not None and args.request_count_label is None:
            raise ValueError("request_count_label: required with requests_per_task")
        return args
