"""One CloudWatch dashboard per stack: what the alarms watch, on one page.

The body is plain data built by ``dashboard_body`` from resolved names, so tests read the
widgets as the console will; ``Dashboard`` resolves the stack's names and creates it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from celery_ecs.names import (
    BACKLOG_METRIC,
    BEAT_HEARTBEAT_METRIC,
    OLDEST_AGE_METRIC,
    POOL_DIMENSION,
    QUEUE_DIMENSION,
    WORKERS_METRIC,
)
from infra.config import AlertsConfig, WorkerPool
from infra.scaling import HIGH_RESOLUTION_PERIOD, SCALE_OUT_THRESHOLD, across

WIDTH, HEIGHT = 12, 6
CONTAINER_INSIGHTS = "ECS/ContainerInsights"
ELB = "AWS/ApplicationELB"
ELASTICACHE = "AWS/ElastiCache"


def dashboard_url(region: str, name: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#dashboards/dashboard/{name}"
    )


@dataclass(frozen=True)
class DashboardSpec:
    """Everything the dashboard shows, resolved to plain strings."""

    region: str
    namespace: str
    cluster_name: str
    pools: Sequence[WorkerPool]
    #: Pool name -> its ECS service's name.
    service_names: Mapping[str, str]
    load_balancer: str
    broker_nodes: Sequence[str]
    alerts: AlertsConfig
    alarm_arns: Sequence[str]
    scaling_alarm_arns: Sequence[str]
    beat: bool = False
    rules: Mapping[str, str] = field(default_factory=dict)
    dead_letter_queue: str | None = None
    #: The cluster has Container Insights: its desired and running task counts are shown too.
    container_insights: bool = False


def horizontal(*lines: tuple[str, float], right: bool = False) -> dict[str, Any]:
    return {
        "horizontal": [
            {"label": label, "value": value, **({"yAxis": "right"} if right else {})}
            for label, value in lines
        ]
    }


def metric_widget(
    title: str,
    region: str,
    metrics: list[list[Any]],
    *,
    period: int = 60,
    stat: str = "Maximum",
    annotations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "title": title,
        "region": region,
        "view": "timeSeries",
        "stacked": False,
        "period": period,
        "stat": stat,
        "metrics": metrics,
    }
    if annotations:
        properties["annotations"] = annotations
    return {"type": "metric", "properties": properties}


def pool_widgets(spec: DashboardSpec, pool: WorkerPool) -> list[dict[str, Any]]:
    ns, region = spec.namespace, spec.region
    service = {"ClusterName": spec.cluster_name, "ServiceName": spec.service_names[pool.name]}
    queue_ids = [f"b{index}" for index in range(len(pool.queues))]
    total = across("SUM", queue_ids)
    return [
        metric_widget(
            f"Pool {pool.name}: waiting messages and oldest message age",
            region,
            [
                *[
                    [ns, BACKLOG_METRIC, QUEUE_DIMENSION, q, {"label": f"Backlog {q}"}]
                    for q in pool.queues
                ],
                *[
                    [
                        ns,
                        OLDEST_AGE_METRIC,
                        QUEUE_DIMENSION,
                        q,
                        {"label": f"Oldest message age {q} (s)", "yAxis": "right"},
                    ]
                    for q in pool.queues
                ],
            ],
            period=HIGH_RESOLUTION_PERIOD,
            annotations=horizontal(("maxQueueSeconds", pool.max_queue_seconds), right=True),
        ),
        metric_widget(
            f"Pool {pool.name}: tasks",
            region,
            [
                *(
                    [
                        [CONTAINER_INSIGHTS, name, *_flat(service), {"label": label}]
                        for name, label in (
                            ("DesiredTaskCount", "Desired"),
                            ("RunningTaskCount", "Running"),
                        )
                    ]
                    if spec.container_insights
                    else []
                ),
                [
                    ns,
                    WORKERS_METRIC,
                    POOL_DIMENSION,
                    pool.name,
                    {"label": "Workers publishing (10 s)", "period": HIGH_RESOLUTION_PERIOD},
                ],
            ],
            annotations=horizontal(("minCount", pool.min_count), ("maxCount", pool.max_count)),
        ),
        metric_widget(
            f"Pool {pool.name}: scaling (waiting messages per worker)",
            region,
            [
                *[
                    [ns, BACKLOG_METRIC, QUEUE_DIMENSION, q, {"id": i, "visible": False}]
                    for i, q in zip(queue_ids, pool.queues, strict=True)
                ],
                [ns, WORKERS_METRIC, POOL_DIMENSION, pool.name, {"id": "w", "visible": False}],
                [
                    {
                        "expression": f"{total} / w",
                        "label": "Waiting messages per worker",
                        "id": "perworker",
                    }
                ],
            ],
            period=HIGH_RESOLUTION_PERIOD,
            annotations=horizontal(
                ("Target (backlogPerTask)", pool.backlog_per_task),
                ("Step scale-out from", SCALE_OUT_THRESHOLD * pool.backlog_per_task),
            ),
        ),
    ]


def web_widgets(spec: DashboardSpec) -> list[dict[str, Any]]:
    balancer = ["LoadBalancer", spec.load_balancer]
    return [
        metric_widget(
            "Web: requests and latency",
            spec.region,
            [
                [ELB, "RequestCount", *balancer, {"stat": "Sum", "label": "Requests"}],
                [
                    ELB,
                    "TargetResponseTime",
                    *balancer,
                    {"stat": "p50", "label": "Latency p50 (s)", "yAxis": "right"},
                ],
                [
                    ELB,
                    "TargetResponseTime",
                    *balancer,
                    {"stat": "p99", "label": "Latency p99 (s)", "yAxis": "right"},
                ],
            ],
        ),
        metric_widget(
            "Web: 5xx answers",
            spec.region,
            [
                [ELB, "HTTPCode_ELB_5XX_Count", *balancer, {"label": "By the load balancer"}],
                [ELB, "HTTPCode_Target_5XX_Count", *balancer, {"label": "By the web tasks"}],
            ],
            stat="Sum",
        ),
    ]


def broker_widgets(spec: DashboardSpec) -> list[dict[str, Any]]:
    alerts = spec.alerts

    def per_node(name: str, label: str, **options: Any) -> list[list[Any]]:
        return [
            [ELASTICACHE, name, "CacheClusterId", node, {"label": f"{label} {node}", **options}]
            for node in spec.broker_nodes
        ]

    return [
        metric_widget(
            "Broker: memory and engine CPU (%)",
            spec.region,
            [
                *per_node("DatabaseMemoryUsagePercentage", "Memory"),
                *per_node("EngineCPUUtilization", "Engine CPU"),
            ],
            annotations=horizontal(
                ("Memory alarm", alerts.broker_memory_percent),
                ("CPU alarm", alerts.broker_cpu_percent),
            ),
        ),
        metric_widget(
            "Broker: client connections",
            spec.region,
            per_node("CurrConnections", "Connections"),
            annotations=horizontal(("Connections alarm", alerts.broker_connections)),
        ),
    ]


def schedule_widgets(spec: DashboardSpec) -> list[dict[str, Any]]:
    if spec.beat:
        return [
            metric_widget(
                "Schedule: beat heartbeats per minute",
                spec.region,
                [[spec.namespace, BEAT_HEARTBEAT_METRIC, "Service", "beat"]],
                stat="Sum",
                annotations=horizontal(("Alarm below", 1)),
            )
        ]
    metrics: list[list[Any]] = []
    for entry, rule in spec.rules.items():
        metrics.append(["AWS/Events", "Invocations", "RuleName", rule, {"label": f"{entry} runs"}])
        metrics.append(
            ["AWS/Events", "FailedInvocations", "RuleName", rule, {"label": f"{entry} failed"}]
        )
    if spec.dead_letter_queue is not None:
        metrics.append(
            [
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "QueueName",
                spec.dead_letter_queue,
                {"stat": "Maximum", "label": "Dead letters", "yAxis": "right"},
            ]
        )
    return [metric_widget("Schedule: EventBridge invocations", spec.region, metrics, stat="Sum")]


def _flat(dimensions: Mapping[str, str]) -> list[str]:
    return [part for pair in dimensions.items() for part in pair]


def dashboard_body(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard: alarm states on top, then each pool, the web, the broker, the schedule."""
    widgets: list[dict[str, Any]] = [
        {
            "type": "alarm",
            "properties": {"title": "Alarms", "alarms": sorted(spec.alarm_arns)},
        },
        {
            "type": "alarm",
            "properties": {
                "title": "Scaling activity (scale-out alarms)",
                "alarms": sorted(spec.scaling_alarm_arns),
            },
        },
    ]
    for pool in spec.pools:
        widgets += pool_widgets(spec, pool)
    widgets += web_widgets(spec) + broker_widgets(spec) + schedule_widgets(spec)
    # Two widgets a row, in order.
    for index, widget in enumerate(widgets):
        widget.update(x=(index % 2) * WIDTH, y=(index // 2) * HEIGHT, width=WIDTH, height=HEIGHT)
    return {"widgets": widgets}


@dataclass(frozen=True)
class DashboardArgs:
    """Arguments of ``Dashboard``: ``DashboardSpec``'s fields, Outputs allowed, plus the
    dashboard's name (letters, digits, ``-`` and ``_``)."""

    name: str
    inputs: Mapping[str, Any]


class Dashboard(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: DashboardArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Dashboard", name, None, opts)
        resolved = pulumi.Output.from_input(dict(args.inputs))
        body = resolved.apply(lambda values: json.dumps(dashboard_body(DashboardSpec(**values))))
        aws.cloudwatch.Dashboard(
            name,
            dashboard_name=args.name,
            dashboard_body=body,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.url = resolved.apply(lambda values: dashboard_url(values["region"], args.name))
        self.register_outputs({"url": self.url})
