"""Auto scaling of one ECS service between a minimum and a maximum task count.

Workers scale on backlog per task, with two policies on the same target ``T``:

- **Target tracking** on one-minute data: ``SUM(Backlog of the pool's queues) / tasks``. It
  scales out slowly and owns scale-in (15 minutes below target, 300 s cooldown). ``tasks`` is
  Container Insights' ``DesiredTaskCount`` where the cluster has it (tasks another policy has
  just asked for, still starting, count at once and are not asked for twice), else the
  workers' own ``Workers`` (those running; ``bench.scaling_sim`` prices the difference).
- **Step scaling** on a high-resolution alarm: ``SUM(Backlog) / Workers`` in 10-second periods
  (both published by the workers themselves, ``celery_ecs.metrics``: an alarm's metrics must share
  one period, and Container Insights has none shorter than a minute). Two breaching periods at
  ``SCALE_OUT_THRESHOLD`` x T and it adds capacity in proportion to the breach, never more
  than the metric asks for. Scale-out only: scale-in stays with target tracking.

Application Auto Scaling target tracking takes no metric period for ECS (its
``TargetTrackingMetricStat`` is metric, statistic and unit), so only a step policy can act on
10-second data. The web scales on CPU and, optionally, on load-balancer requests per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# pulumi-aws's argument shapes (TypedDicts: plain dicts at run time) for what this module builds.
TrackingConfiguration = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgsDict
CustomizedMetric = (
    aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationArgsDict
)
PredefinedMetric = (
    aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgsDict
)
TrackingQuery = (
    aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricArgsDict
)
TrackingQueryMetric = (
    aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricMetricStatMetricArgsDict
)
StepAdjustment = aws.appautoscaling.PolicyStepScalingPolicyConfigurationStepAdjustmentArgsDict
AlarmQuery = aws.cloudwatch.MetricAlarmMetricQueryArgsDict

BACKLOG_METRIC = "Backlog"
WORKERS_METRIC = "Workers"
QUEUE_DIMENSION = "Queue"
POOL_DIMENSION = "Pool"
CONTAINER_INSIGHTS_NAMESPACE = "ECS/ContainerInsights"
#: Seconds between scale-out steps: a growing backlog is acted on within about a minute.
SCALE_OUT_COOLDOWN = 60
#: Seconds between scale-in steps: longer, so a burst does not make the pool flap (and workers
#: shutting down cancel or finish tasks, which costs more than an idle minute).
SCALE_IN_COOLDOWN = 300
#: Period of the high-resolution scale-out alarm, seconds (CloudWatch: 10, 20 or 30 for
#: high-resolution alarms, evaluated every 10 s).
HIGH_RESOLUTION_PERIOD = 10
#: Breaching periods in a row before the step policy acts: 20 s of a sustained backlog, so one
#: spike of a few seconds adds no task.
SCALE_OUT_DATAPOINTS = 2
#: The step policy acts from this multiple of the target. Between the target and this, target
#: tracking alone adds capacity: a dead band, so the two policies do not chase noise.
SCALE_OUT_THRESHOLD = 1.25
#: Seconds the step policy waits for its tasks to start (a Fargate start is about a minute)
#: and show up in ``Workers`` before it may add again on the same reading; a larger breach
#: meanwhile still adds the difference at once.
STEP_SCALE_OUT_COOLDOWN = 120
#: (backlog per worker as a multiple of the target, percent of capacity added from there on).
#: Each step adds what its lower bound asks for, (multiple - 1) x 100 %: proportional, rounded
#: down, so the pool never grows past what the backlog asks for. The multiples double up to
#: 129 x: a burst on a one-task pool reaches its maximum at once.
SCALE_OUT_STEPS: tuple[tuple[float, int], ...] = (
    (1.25, 25), (1.5, 50), (2.0, 100), (3.0, 200), (5.0, 400), (9.0, 800), (17.0, 1600),
    (33.0, 3200), (65.0, 6400), (129.0, 12800),
)  # fmt: skip


@dataclass(frozen=True)
class BacklogTarget:
    """Waiting messages per running task to hold.

    - ``namespace``: CloudWatch namespace of the workers' metrics (CELERY_METRICS_NAMESPACE).
    - ``pool``: the pool's name (the ``Pool`` dimension of its ``Workers`` metric).
    - ``queues``: the pool's queues; their backlogs are summed.
    - ``per_task``: target value, messages per task (>= 1).
    - ``alarm_name``: name of the high-resolution scale-out alarm.
    - ``desired_count_metric``: target tracking divides by Container Insights'
      ``DesiredTaskCount`` (the cluster must have it on), else by ``Workers``. Default False.
    """

    namespace: str
    pool: str
    queues: Sequence[str]
    per_task: int
    alarm_name: str
    desired_count_metric: bool = False


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


def backlog_metric(namespace: str, queue: str) -> TrackingQueryMetric:
    return {
        "namespace": namespace,
        "metric_name": BACKLOG_METRIC,
        "dimensions": [{"name": QUEUE_DIMENSION, "value": queue}],
    }


def across(function: str, ids: Sequence[str]) -> str:
    """Metric math combining time series datapoint by datapoint (``SUM``, ``MAX``); one series
    is itself."""
    return ids[0] if len(ids) == 1 else f"{function}([{', '.join(ids)}])"


def summed_backlog(target: BacklogTarget) -> tuple[list[tuple[str, str]], str]:
    """(query id, queue) of each queue's backlog, and the expression summing them."""
    ids = [(f"backlog{index}", queue) for index, queue in enumerate(target.queues)]
    return ids, across("SUM", [query_id for query_id, _ in ids])


def backlog_metric_queries(
    target: BacklogTarget, cluster_name: pulumi.Input[str], service_name: pulumi.Input[str]
) -> list[TrackingQuery]:
    """Target tracking's metric math: SUM(Backlog of each queue, Maximum) / tasks (desired or
    working, see ``BacklogTarget.desired_count_metric``).

    Maximum, because every worker consuming a queue publishes its backlog: the copies agree.
    """
    ids, total = summed_backlog(target)
    queries: list[TrackingQuery] = [
        {
            "id": query_id,
            "label": f"Backlog of {queue}",
            "return_data": False,
            "metric_stat": {"stat": "Maximum", "metric": backlog_metric(target.namespace, queue)},
        }
        for query_id, queue in ids
    ]
    tasks: TrackingQueryMetric = (
        {
            "namespace": CONTAINER_INSIGHTS_NAMESPACE,
            "metric_name": "DesiredTaskCount",
            "dimensions": [
                {"name": "ClusterName", "value": cluster_name},
                {"name": "ServiceName", "value": service_name},
            ],
        }
        if target.desired_count_metric
        else {
            "namespace": target.namespace,
            "metric_name": WORKERS_METRIC,
            "dimensions": [{"name": POOL_DIMENSION, "value": target.pool}],
        }
    )
    queries.append(
        {
            "id": "tasks",
            "label": "Desired tasks" if target.desired_count_metric else "Workers",
            "return_data": False,
            "metric_stat": {
                # Every worker publishes the same Workers count: Maximum, as for Backlog.
                "stat": "Average" if target.desired_count_metric else "Maximum",
                "metric": tasks,
            },
        }
    )
    queries.append(
        {
            "id": "backlog_per_task",
            "label": "Waiting messages per task",
            "expression": f"{total} / tasks",
            "return_data": True,
        }
    )
    return queries


def scale_out_alarm_queries(target: BacklogTarget) -> list[AlarmQuery]:
    """The step policy's alarm: SUM(Backlog) / Workers, both high-resolution, in 10 s periods."""
    ids, total = summed_backlog(target)

    def query(query_id: str, metric_name: str, dimension: tuple[str, str]) -> AlarmQuery:
        metric: aws.cloudwatch.MetricAlarmMetricQueryMetricArgsDict = {
            "namespace": target.namespace,
            "metric_name": metric_name,
            "dimensions": dict([dimension]),
            "period": HIGH_RESOLUTION_PERIOD,
            "stat": "Maximum",
        }
        return {"id": query_id, "return_data": False, "metric": metric}

    queries = [query(i, BACKLOG_METRIC, (QUEUE_DIMENSION, queue)) for i, queue in ids]
    queries.append(query("workers", WORKERS_METRIC, (POOL_DIMENSION, target.pool)))
    queries.append(
        {
            "id": "backlog_per_worker",
            "label": "Waiting messages per worker (10 s)",
            "expression": f"{total} / workers",
            "return_data": True,
        }
    )
    return queries


def scale_out_steps(per_task: int) -> list[StepAdjustment]:
    """Step adjustments relative to the alarm threshold (``SCALE_OUT_THRESHOLD`` x target)."""
    threshold = SCALE_OUT_THRESHOLD * per_task
    steps = []
    for index, (multiple, percent) in enumerate(SCALE_OUT_STEPS):
        step: StepAdjustment = {
            "metric_interval_lower_bound": f"{multiple * per_task - threshold:.12g}",
            "scaling_adjustment": percent,
        }
        if index + 1 < len(SCALE_OUT_STEPS):
            upper = SCALE_OUT_STEPS[index + 1][0] * per_task - threshold
            step["metric_interval_upper_bound"] = f"{upper:.12g}"
        steps.append(step)
    return steps


class ServiceScaling(pulumi.ComponentResource):
    target: aws.appautoscaling.Target
    #: The high-resolution alarm of the step scale-out policy; None without a backlog target.
    scale_out_alarm: aws.cloudwatch.MetricAlarm | None

    def __init__(
        self, name: str, args: ServiceScalingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:ServiceScaling", name, None, opts)
        args = self._normalize(args)
        child = pulumi.ResourceOptions(parent=self)
        self.scale_out_alarm = None
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
                customized={
                    "metrics": backlog_metric_queries(
                        args.backlog, args.cluster_name, args.service_name
                    )
                },
            )
            self._step_scale_out(f"{name}-burst", args.backlog)
        if args.cpu_percent is not None:
            self._policy(
                f"{name}-cpu",
                args.cpu_percent,
                predefined={"predefined_metric_type": "ECSServiceAverageCPUUtilization"},
            )
        if args.requests_per_task is not None:
            self._policy(
                f"{name}-requests",
                args.requests_per_task,
                predefined={
                    "predefined_metric_type": "ALBRequestCountPerTarget",
                    "resource_label": args.request_count_label,
                },
            )
        self.register_outputs({"resourceId": self.target.resource_id})

    def _policy(
        self,
        name: str,
        target_value: float,
        *,
        predefined: PredefinedMetric | None = None,
        customized: CustomizedMetric | None = None,
    ) -> None:
        """A target tracking policy holding ``predefined`` or ``customized`` at the target."""
        configuration: TrackingConfiguration = {
            "target_value": target_value,
            "scale_in_cooldown": SCALE_IN_COOLDOWN,
            "scale_out_cooldown": SCALE_OUT_COOLDOWN,
        }
        if predefined is not None:
            configuration["predefined_metric_specification"] = predefined
        if customized is not None:
            configuration["customized_metric_specification"] = customized
        aws.appautoscaling.Policy(
            name,
            policy_type="TargetTrackingScaling",
            service_namespace=self.target.service_namespace,
            scalable_dimension=self.target.scalable_dimension,
            resource_id=self.target.resource_id,
            target_tracking_scaling_policy_configuration=configuration,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _step_scale_out(self, name: str, target: BacklogTarget) -> None:
        """A step policy on the high-resolution alarm: scale-out within a minute of a burst."""
        policy = aws.appautoscaling.Policy(
            name,
            policy_type="StepScaling",
            service_namespace=self.target.service_namespace,
            scalable_dimension=self.target.scalable_dimension,
            resource_id=self.target.resource_id,
            step_scaling_policy_configuration={
                "adjustment_type": "PercentChangeInCapacity",
                # A small pool grows by at least one task, whatever the percentage.
                "min_adjustment_magnitude": 1,
                "cooldown": STEP_SCALE_OUT_COOLDOWN,
                # The latest readings of a growing backlog are its largest.
                "metric_aggregation_type": "Maximum",
                "step_adjustments": scale_out_steps(target.per_task),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.scale_out_alarm = aws.cloudwatch.MetricAlarm(
            name,
            name=target.alarm_name,
            alarm_description=(
                f"Pool {target.pool}: waiting messages per worker at {SCALE_OUT_THRESHOLD:g}x its "
                f"target ({target.per_task}) or more for {SCALE_OUT_DATAPOINTS} x "
                f"{HIGH_RESOLUTION_PERIOD} s: the step policy adds tasks. Scaling only, no "
                "notification."
            ),
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=SCALE_OUT_THRESHOLD * target.per_task,
            evaluation_periods=SCALE_OUT_DATAPOINTS,
            datapoints_to_alarm=SCALE_OUT_DATAPOINTS,
            metric_queries=scale_out_alarm_queries(target),
            # No data (no worker publishing): nothing to scale on; target tracking and the
            # pool's alarms have it.
            treat_missing_data="missing",
            alarm_actions=[policy.arn],
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
