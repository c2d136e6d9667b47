"""Alarms an operator can act on, one per failure that users would otherwise notice first.

Each alarm notifies ``actions`` (an SNS topic, or nothing) when it goes into ALARM and when it is
OK again. Thresholds come from the pool settings and the timeout budget where they decide them,
from ``alerts.*`` where nothing does. The README's "Alarms" section says, for each, what to do.

Every alarm's name starts with the stack's prefix: the notification topic admits only those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from celery_ecs.names import (
    BEAT_HEARTBEAT_METRIC,
    OLDEST_AGE_METRIC,
    POOL_DIMENSION,
    QUEUE_DIMENSION,
    WORKERS_METRIC,
)
from infra.config import AlertsConfig, WorkerPool
from infra.scaling import across

#: Period of the operator alarms, seconds: AWS metrics (ECS, ELB, ElastiCache) are one-minute.
PERIOD = 60
#: Minutes of a queue older than its pool's latency target before the alarm fires: long enough
#: that a message restored at the head of its queue (it keeps its first publish time) and
#: consumed at once does not page anyone.
QUEUE_AGE_MINUTES = 2
#: Minutes a pool may run fewer tasks than its minimum: a crashed task is replaced in about one,
#: a rolling deployment never goes below it.
TASKS_BELOW_MIN_MINUTES = 5
#: Minutes without a beat heartbeat: a beat deployment (old one stopped, new one started and
#: holding the lock) takes one or two.
BEAT_SILENT_MINUTES = 5
#: The load balancer's 5xx rate is computed only over minutes with at least this many requests:
#: one failure out of three requests is noise, not a rate.
MIN_REQUESTS_FOR_RATE = 20
#: The 5xx alarms fire when this many of the last ``HTTP_EVALUATION_MINUTES`` are above the rate.
HTTP_BREACHING_MINUTES = 3
HTTP_EVALUATION_MINUTES = 5
#: Minutes the broker may stay above its memory or connection threshold: three, then act.
BROKER_MINUTES = 3
#: Minutes of engine CPU above the threshold: a burst of publishes may saturate it briefly.
BROKER_CPU_MINUTES = 5
#: Schedule failures are counted over this many seconds (EventBridge and SQS report per minute).
SCHEDULE_PERIOD = 300


@dataclass(frozen=True)
class PoolService:
    pool: WorkerPool
    #: The ECS service's name.
    service_name: pulumi.Input[str]


@dataclass(frozen=True)
class AlarmsArgs:
    """Arguments of ``Alarms``.

    - ``prefix``: every alarm is named ``<prefix>-<what>``. Required.
    - ``namespace``: CloudWatch namespace of the app's metrics. Required.
    - ``cluster_name``: the ECS cluster. Required.
    - ``pools``: each worker pool with its service's name. Required, non-empty.
    - ``load_balancer``: the ALB's ``arn_suffix`` (``LoadBalancer`` dimension). Required.
    - ``broker_nodes``: cache cluster ids of every node of the replication group. Required.
    - ``alerts``: the thresholds nothing else decides. Required.
    - ``beat``: beat runs (``scheduler: beat``): alarm on its heartbeat. Default False.
    - ``rules``: entry name -> EventBridge rule name (``scheduler: eventbridge``). Default none.
    - ``dead_letter_queue``: the schedule's dead-letter queue name. Default None.
    - ``actions``: ARNs notified on ALARM and on OK (an SNS topic). Default none.
    """

    prefix: str
    namespace: str
    cluster_name: pulumi.Input[str]
    pools: Sequence[PoolService]
    load_balancer: pulumi.Input[str]
    broker_nodes: Sequence[pulumi.Input[str]]
    alerts: AlertsConfig
    beat: bool = False
    rules: Mapping[str, pulumi.Input[str]] | None = None
    dead_letter_queue: pulumi.Input[str] | None = None
    actions: Sequence[pulumi.Input[str]] = ()


def metric(
    query_id: str,
    namespace: str,
    name: str,
    dimensions: Mapping[str, pulumi.Input[str]],
    stat: str,
    period: int = PERIOD,
) -> aws.cloudwatch.MetricAlarmMetricQueryArgsDict:
    """One metric of an alarm's metric math (not returned: an expression uses it)."""
    return {
        "id": query_id,
        "return_data": False,
        "metric": {
            "namespace": namespace,
            "metric_name": name,
            "dimensions": dict(dimensions),
            "stat": stat,
            "period": period,
        },
    }


def expression(expr: str, label: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgsDict:
    return {"id": "result", "expression": expr, "label": label, "return_data": True}


class Alarms(pulumi.ComponentResource):
    #: Alarm name -> alarm, for the dashboard's status widget.
    alarms: dict[str, aws.cloudwatch.MetricAlarm]

    def __init__(
        self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Alarms", name, None, opts)
        self.args = self._normalize(args)
        self.alarms = {}
        for service in args.pools:
            self._pool_alarms(service)
        if args.beat:
            self._beat_alarm()
        self._schedule_alarms()
        self._web_alarms()
        self._broker_alarms()
        self.register_outputs({"alarmNames": sorted(self.alarms)})

    def _schedule_alarms(self) -> None:
        args = self.args
        for entry, rule in (args.rules or {}).items():
            self._add(
                f"schedule-failed-{entry}",
                f"EventBridge could not start the enqueue task of schedule entry {entry} (after "
                "its retries): the slot was not enqueued. See the dead-letter queue.",
                [
                    metric(
                        "failed",
                        "AWS/Events",
                        "FailedInvocations",
                        {"RuleName": rule},
                        "Sum",
                        SCHEDULE_PERIOD,
                    ),
                    expression("failed", "Failed invocations"),
                ],
                threshold=1,
                breaching=1,
                evaluated=1,
                # EventBridge reports the metric only when it is not zero.
                missing="notBreaching",
            )
        if args.dead_letter_queue is not None:
            self._add(
                "schedule-dead-letters",
                "Schedule slots are waiting in the dead-letter queue: run each by hand with its "
                "rule's command and --slot, then delete the message (README: what landed in the "
                "dead-letter queue).",
                [
                    metric(
                        "letters",
                        "AWS/SQS",
                        "ApproximateNumberOfMessagesVisible",
                        {"QueueName": args.dead_letter_queue},
                        "Maximum",
                        SCHEDULE_PERIOD,
                    ),
                    expression("letters", "Messages in the dead-letter queue"),
                ],
                threshold=1,
                breaching=1,
                evaluated=1,
                missing="notBreaching",
            )

    def _add(
        self,
        what: str,
        description: str,
        queries: list[aws.cloudwatch.MetricAlarmMetricQueryArgsDict],
        *,
        threshold: float,
        breaching: int,
        evaluated: int,
        missing: str,
        comparison: str = "GreaterThanOrEqualToThreshold",
    ) -> None:
        alarm_name = f"{self.args.prefix}-{what}"
        self.alarms[alarm_name] = aws.cloudwatch.MetricAlarm(
            f"alarm-{what}",
            name=alarm_name,
            alarm_description=description,
            comparison_operator=comparison,
            threshold=threshold,
            datapoints_to_alarm=breaching,
            evaluation_periods=evaluated,
            metric_queries=queries,
            treat_missing_data=missing,
            alarm_actions=list(self.args.actions),
            ok_actions=list(self.args.actions),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _pool_alarms(self, service: PoolService) -> None:
        args, pool = self.args, service.pool
        age_ids = [f"age{index}" for index in range(len(pool.queues))]
        ages = [
            metric(
                query_id,
                args.namespace,
                OLDEST_AGE_METRIC,
                {QUEUE_DIMENSION: queue},
                "Maximum",
            )
            for query_id, queue in zip(age_ids, pool.queues, strict=True)
        ]
        self._add(
            f"queue-age-{pool.name}",
            f"Pool {pool.name}: a message of {', '.join(pool.queues)} has waited longer than "
            f"maxQueueSeconds ({pool.max_queue_seconds} s) for {QUEUE_AGE_MINUTES} minutes. "
            "Are the tasks running (pool at maxCount? tasks failing to start)? Raise maxCount "
            "or lower backlogPerTask.",
            [*ages, expression(across("MAX", age_ids), "Oldest message age")],
            threshold=pool.max_queue_seconds,
            breaching=QUEUE_AGE_MINUTES,
            evaluated=QUEUE_AGE_MINUTES,
            comparison="GreaterThanThreshold",
            # No worker publishes: the pool's task alarm says why.
            missing="missing",
        )
        self._add(
            f"tasks-below-min-{pool.name}",
            f"Pool {pool.name}: fewer than minCount ({pool.min_count}) workers running and "
            f"publishing for {TASKS_BELOW_MIN_MINUTES} minutes: tasks fail to start or keep "
            "stopping, or cannot reach Redis. See the service's events, the stopped tasks' "
            "reasons and the worker logs.",
            [
                # The workers' own count (celery_ecs.metrics), not Container Insights'
                # RunningTaskCount: the same alarm whether or not the cluster pays for Container
                # Insights, and a task counts only once its worker runs and reaches Redis.
                metric(
                    "workers",
                    self.args.namespace,
                    WORKERS_METRIC,
                    {POOL_DIMENSION: pool.name},
                    "Maximum",
                ),
                expression("workers", "Workers publishing"),
            ],
            threshold=pool.min_count,
            breaching=TASKS_BELOW_MIN_MINUTES,
            evaluated=TASKS_BELOW_MIN_MINUTES,
            comparison="LessThanThreshold",
            # No worker publishes: no better than zero tasks.
            missing="breaching",
        )

    def _beat_alarm(self) -> None:
        self._add(
            "beat-silent",
            f"Beat has not ticked for {BEAT_SILENT_MINUTES} minutes: periodic tasks are not "
            "sent. See the beat service's events and logs (a lock it waits for, a crash loop).",
            [
                metric(
                    "beats", self.args.namespace, BEAT_HEARTBEAT_METRIC, {"Service": "beat"}, "Sum"
                ),
                expression("beats", "Beat heartbeats"),
            ],
            threshold=1,
            breaching=BEAT_SILENT_MINUTES,
            evaluated=BEAT_SILENT_MINUTES,
            comparison="LessThanThreshold",
            # The point of the alarm: a beat that stopped writes nothing at all.
            missing="breaching",
        )

    def _web_alarms(self) -> None:
        args = self.args
        balancer = {"LoadBalancer": args.load_balancer}
        for what, metric_name, source in (
            (
                "web-elb-5xx",
                "HTTPCode_ELB_5XX_Count",
                "the load balancer itself (no healthy "
                "target, a target that timed out or closed the connection)",
            ),
            ("web-target-5xx", "HTTPCode_Target_5XX_Count", "the web tasks"),
        ):
            rate = f"IF(requests >= {MIN_REQUESTS_FOR_RATE}, 100 * FILL(errors, 0) / requests, 0)"
            self._add(
                what,
                f"More than {args.alerts.http_5xx_percent} % of requests answered 5xx by "
                f"{source} in {HTTP_BREACHING_MINUTES} of {HTTP_EVALUATION_MINUTES} minutes.",
                [
                    metric("errors", "AWS/ApplicationELB", metric_name, balancer, "Sum"),
                    metric("requests", "AWS/ApplicationELB", "RequestCount", balancer, "Sum"),
                    expression(rate, "Percent of requests answered 5xx"),
                ],
                threshold=args.alerts.http_5xx_percent,
                breaching=HTTP_BREACHING_MINUTES,
                evaluated=HTTP_EVALUATION_MINUTES,
                comparison="GreaterThanThreshold",
                # No requests, no errors.
                missing="notBreaching",
            )

    def _broker_alarms(self) -> None:
        args, alerts = self.args, self.args.alerts
        for what, metric_name, threshold, minutes, description in (
            (
                "broker-memory",
                "DatabaseMemoryUsagePercentage",
                alerts.broker_memory_percent,
                BROKER_MINUTES,
                f"Broker memory above {alerts.broker_memory_percent} % of maxmemory. With "
                "noeviction every publish fails at 100 %: find what fills it (a queue nobody "
                "consumes, results never expiring) or move to a larger node type.",
            ),
            (
                "broker-cpu",
                "EngineCPUUtilization",
                alerts.broker_cpu_percent,
                BROKER_CPU_MINUTES,
                f"The Redis engine thread above {alerts.broker_cpu_percent} % CPU: commands queue "
                "up and every publish and fetch slows down. Look for connection storms "
                "(NewConnections), slow commands; move to a larger node type.",
            ),
            (
                "broker-connections",
                "CurrConnections",
                alerts.broker_connections,
                BROKER_MINUTES,
                f"More than {alerts.broker_connections} client connections (ElastiCache refuses "
                "new ones at 65000): a connection leak, or far more tasks than planned.",
            ),
        ):
            node_ids = [f"node{index}" for index in range(len(args.broker_nodes))]
            nodes = [
                metric(
                    query_id,
                    "AWS/ElastiCache",
                    metric_name,
                    {"CacheClusterId": node},
                    "Maximum",
                )
                for query_id, node in zip(node_ids, args.broker_nodes, strict=True)
            ]
            self._add(
                what,
                description,
                [*nodes, expression(across("MAX", node_ids), metric_name)],
                threshold=threshold,
                breaching=minutes,
                evaluated=minutes,
                comparison="GreaterThanThreshold",
                missing="missing",
            )

    @staticmethod
    def _normalize(args: AlarmsArgs) -> AlarmsArgs:
        if not args.pools:
            raise ValueError("pools: at least one worker pool")
        if not args.broker_nodes:
            raise ValueError("broker_nodes: at least one node")
        if args.beat and args.rules:
            raise ValueError("beat and rules: one schedule source at a time")
        return args
