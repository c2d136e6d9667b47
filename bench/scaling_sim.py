"""Replay arrival patterns through the scaling policies the program renders, and AWS's pattern.

    python -m bench.scaling_sim        (``make bench`` runs it too)

The policies are read from the Pulumi program rendered under mocks (``devtools.render``): the
target value and cooldowns of the target tracking policy, the step policy's adjustments and
cooldown, its alarm's threshold, period and datapoints, the pool's bounds and concurrency. Nothing
here repeats those numbers. Two policy sets are compared on the same arrivals:

- **this project**: target tracking on one-minute data (``Backlog`` sampled every 10 s, over the
  running workers, or over the desired count where the cluster has Container Insights) plus
  the step policy on the 10-second alarm (``Backlog`` / ``Workers``).
- **target tracking alone**: AWS's backlog-per-task pattern, the backlog published once a
  minute over the running task count, same target and cooldowns.

Deterministic: fluid arrivals, no randomness; the same figures on every run. The model and its
numbers (``Model``) are printed with the table.

**How long a datapoint takes to reach the alarm** (``PUT_METRIC_DATA_PATH``, ``EMF_PATH``). The
simulation holds every datapoint back by the path's bound, counted from the end of its period
(the worst phase: a round can fall at the very end of a period). Each stage below says where its
figure comes from, or that AWS does not document one:

- Embedded metric format (the workers' path until now): the awslogs driver sends a batch every
  5 s (Docker's ``daemon/logger/awslogs/cloudwatchlogs.go``, ``defaultForceFlushInterval``;
  Fargate runs that driver through ``aws/shim-loggers-for-containerd``, whose awslogs options
  have no flush interval, so 5 s it is); the ``PutLogEvents`` call (no latency figure); then
  CloudWatch Logs extracts the metrics: **not documented**. AWS only advises, for
  high-resolution alarms on EMF metrics, flushing every 5 s or less "to avoid introducing an
  additional delay, which can cause alarming on partial or missing data" (CloudWatch User
  Guide, "Setting alarms on metrics created with the embedded metric format"). The extraction
  is modelled at ``EMF_EXTRACTION_ASSUMED`` seconds, and ``emf_extraction_budget`` finds the
  most it may take before a burst waits more than a minute: the promise would rest on a
  figure nobody publishes.
- ``PutMetricData`` (the workers' path now, ``celery_ecs.cloudwatch``): the call is bounded by the
  publisher's own timeouts (``CLOUDWATCH_TIMEOUT_SECONDS``; a slower round is dropped, the next
  one follows 10 s later); from stored to visible to the alarm, AWS gives no figure either, but
  this is the path its alarm documentation is written for (PutMetricAlarm, ``Period``: "specify
  10, 20, or 30 only for metrics that are stored by a PutMetricData call with a
  StorageResolution of 1") and, in announcing high-resolution metrics, "you can watch the
  metrics scroll across your screen seconds after they are published" (AWS News Blog, "New -
  High-Resolution Custom Metrics and Alarms for Amazon CloudWatch", 2017): assumed at most
  ``PUT_METRIC_DATA_VISIBLE_ASSUMED`` seconds.
- Alarms with 10-30 s periods are evaluated every 10 s (CloudWatch User Guide, "Using Amazon
  CloudWatch alarms").
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from celery_ecs.cloudwatch import CLOUDWATCH_TIMEOUT_SECONDS
from devtools import render
from policy.invariants import aws_types

#: The pool the scenarios run: one-second tasks, two at a time, acceptable wait one minute.
POOL = {
    "name": "default",
    "queues": ["default", "long"],
    "concurrency": 2,
    "minCount": 1,
    "maxCount": 50,
    "maxQueueSeconds": 60,
    "typicalTaskSeconds": 1,
}
TASK_SECONDS = 1.0


@dataclass(frozen=True)
class Stage:
    """One step between a worker's round and the alarm seeing its datapoint."""

    what: str
    #: Its longest duration, seconds (documented, or the assumption stated in ``source``).
    seconds: int
    source: str
    documented: bool


#: Seconds CloudWatch Logs is assumed to take to turn an EMF log event into a metric.
EMF_EXTRACTION_ASSUMED = 5
#: Seconds a stored PutMetricData datapoint is assumed to take to be visible to an alarm.
PUT_METRIC_DATA_VISIBLE_ASSUMED = 5

EMF_PATH: tuple[Stage, ...] = (
    Stage(
        "awslogs driver: the line waits for the next batch",
        5,
        "moby daemon/logger/awslogs/cloudwatchlogs.go (defaultForceFlushInterval); Fargate's "
        "aws/shim-loggers-for-containerd passes no flush interval",
        True,
    ),
    Stage("PutLogEvents round trip", 1, "no figure documented; assumed", False),
    Stage(
        "CloudWatch Logs extracts the EMF metrics",
        EMF_EXTRACTION_ASSUMED,
        "no figure documented (CloudWatch User Guide, 'Setting alarms on metrics created with "
        "the embedded metric format', only warns of the delay); assumed",
        False,
    ),
)
PUT_METRIC_DATA_PATH: tuple[Stage, ...] = (
    Stage(
        "PutMetricData call, else the round is dropped",
        math.ceil(CLOUDWATCH_TIMEOUT_SECONDS),
        "celery_ecs.cloudwatch: connect and read timeouts, one attempt",
        True,
    ),
    Stage(
        "stored datapoint visible to the alarm",
        PUT_METRIC_DATA_VISIBLE_ASSUMED,
        "no figure documented ('seconds after they are published', AWS News Blog, 2017); "
        "assumed",
        False,
    ),
)


def path_delay(path: Sequence[Stage]) -> int:
    """Seconds after its period ends until a datapoint is usable: every stage at its longest."""
    return sum(stage.seconds for stage in path)


@dataclass(frozen=True)
class Model:
    """What the simulation assumes about AWS, with where each number comes from."""

    #: Seconds from a desired-count increase to a task consuming. Not documented by AWS as a
    #: figure; the ECS best-practices guide ("Speeding up task launch") lists the steps
    #: (placement, ENI, image pull, container start); about a minute for a small image.
    task_start: int = 60
    #: How the workers' metrics reach CloudWatch (see the module docstring); its bound is the
    #: seconds from the end of a metric's period until an alarm can see its datapoint,
    #: applied to every metric alike.
    metric_path: tuple[Stage, ...] = PUT_METRIC_DATA_PATH
    #: CloudWatch evaluates alarms with a period of a minute or more every minute, those of
    #: 10-30 s every 10 s (CloudWatch User Guide, "Using Amazon CloudWatch alarms").
    standard_evaluation: int = 60
    high_resolution_evaluation: int = 10
    #: An alarm with an Auto Scaling action invokes it again once per minute while in ALARM
    #: (same page).
    reinvoke: int = 60
    #: The alarms Application Auto Scaling creates for target tracking: scale out after 3
    #: breaching one-minute datapoints, scale in after 15 below 90 % of the target (the
    #: TargetTracking-…-AlarmHigh/AlarmLow alarms it creates; "usually more than 10 % lower",
    #: Application Auto Scaling User Guide, target tracking).
    tracking_out_datapoints: int = 3
    tracking_in_datapoints: int = 15
    tracking_in_ratio: float = 0.9
    #: How often the workers publish the backlog: 10 s (ours), 60 s (the AWS pattern).
    fast_publish: int = 10
    slow_publish: int = 60

    @property
    def delivery(self) -> int:
        return path_delay(self.metric_path)


@dataclass(frozen=True)
class Step:
    lower: float
    upper: float
    percent: int


@dataclass(frozen=True)
class Policies:
    """The rendered program's scaling of the pool, as plain numbers."""

    min_count: int
    max_count: int
    concurrency: int
    target: float
    scale_out_cooldown: int
    scale_in_cooldown: int
    step_threshold: float
    step_period: int
    step_datapoints: int
    step_cooldown: int
    step_min_adjustment: int
    steps: tuple[Step, ...]
    #: Target tracking divides by the desired count (Container Insights' DesiredTaskCount),
    #: else by the running workers (the workers' own Workers metric).
    per_desired: bool = False


def rendered_policies(container_insights: bool = False) -> Policies:
    config = {"workers": [POOL], "containerInsights": container_insights}
    run = render.run_program(config, stack="sim")
    pool = POOL["name"]
    target = run.named(aws_types.APPAUTOSCALING_TARGET, f"worker-{pool}-scaling").inputs
    tracking = run.named(aws_types.APPAUTOSCALING_POLICY, f"worker-{pool}-scaling-backlog")
    tracking_config = tracking.inputs["targetTrackingScalingPolicyConfiguration"]
    step = run.named(aws_types.APPAUTOSCALING_POLICY, f"worker-{pool}-scaling-burst")
    step_config = step.inputs["stepScalingPolicyConfiguration"]
    alarm = run.named(aws_types.CLOUDWATCH_METRIC_ALARM, f"worker-{pool}-scaling-burst")
    periods = {q["metric"]["period"] for q in alarm.inputs["metricQueries"] if "metric" in q}
    (period,) = periods
    command = run.task_definitions()[f"worker-{pool}"].command
    (tasks,) = [
        query["metricStat"]["metric"]["metricName"]
        for query in tracking_config["customizedMetricSpecification"]["metrics"]
        if query["id"] == "tasks"
    ]
    return Policies(
        per_desired=tasks == "DesiredTaskCount",
        min_count=int(target["minCapacity"]),
        max_count=int(target["maxCapacity"]),
        concurrency=int(command[command.index("--concurrency") + 1]),
        target=float(tracking_config["targetValue"]),
        scale_out_cooldown=int(tracking_config["scaleOutCooldown"]),
        scale_in_cooldown=int(tracking_config["scaleInCooldown"]),
        step_threshold=float(alarm.inputs["threshold"]),
        step_period=int(period),
        step_datapoints=int(alarm.inputs["datapointsToAlarm"]),
        step_cooldown=int(step_config["cooldown"]),
        step_min_adjustment=int(step_config["minAdjustmentMagnitude"]),
        steps=tuple(
            Step(
                float(s["metricIntervalLowerBound"]),
                float(s.get("metricIntervalUpperBound", math.inf)),
                int(s["scalingAdjustment"]),
            )
            for s in step_config["stepAdjustments"]
        ),
    )


# --- the service: queue, tasks, desired count -----------------------------------------------------


@dataclass
class Service:
    policies: Policies
    model: Model
    desired: int
    #: Times at which started tasks begin consuming (one entry per task not yet running).
    starting: list[int] = field(default_factory=list)
    running: int = 0
    queue: deque[list[float]] = field(default_factory=deque)  # [arrival time, messages]
    waits: list[tuple[float, float]] = field(default_factory=list)  # (wait, messages)
    task_seconds: float = 0.0
    first_scale_out: int | None = None

    @property
    def backlog(self) -> float:
        return sum(count for _, count in self.queue)

    def set_desired(self, now: int, desired: int) -> None:
        desired = max(self.policies.min_count, min(self.policies.max_count, desired))
        if desired > self.desired and self.first_scale_out is None:
            self.first_scale_out = now
        while self.running + len(self.starting) < desired:
            self.starting.append(now + self.model.task_start)
        while self.running + len(self.starting) > desired:
            # ECS stops tasks that have not started first.
            if self.starting:
                self.starting.pop()
            else:
                self.running -= 1
        self.desired = desired

    def second(self, now: int, arrivals: float) -> None:
        ready = [t for t in self.starting if t <= now]
        self.running += len(ready)
        self.starting = [t for t in self.starting if t > now]
        if arrivals:
            self.queue.append([float(now), arrivals])
        capacity = self.running * self.policies.concurrency / TASK_SECONDS
        while capacity > 1e-9 and self.queue:
            head = self.queue[0]
            taken = min(capacity, head[1])
            self.waits.append((now - head[0], taken))
            head[1] -= taken
            capacity -= taken
            if head[1] <= 1e-9:
                self.queue.popleft()
        self.task_seconds += self.desired  # billed from the start (the image pull) to the stop


# --- CloudWatch and Application Auto Scaling ---------------------------------------------------


class Series:
    """A metric's datapoints by period, visible ``delivery`` seconds after their period ends."""

    def __init__(self, period: int, delivery: int) -> None:
        self.period, self.delivery = period, delivery
        self.points: dict[int, float] = {}

    def record(self, now: int, value: float, combine: Callable[[float, float], float]) -> None:
        slot = now // self.period
        self.points[slot] = combine(self.points[slot], value) if slot in self.points else value

    def visible(self, now: int, count: int) -> list[float | None]:
        """The latest ``count`` complete, delivered periods (None where no datapoint)."""
        last = (now - self.delivery) // self.period - 1
        return [self.points.get(slot) for slot in range(last - count + 1, last + 1)]


@dataclass
class Cooldown:
    until: int = -1
    base: int = 0
    added: int = 0

    def scale_out(self, service: Service, now: int, wanted: int, cooldown: int) -> None:
        """Application Auto Scaling's scale-out cooldown: during it, what the initiating
        activity added counts toward the next one, which adds only the difference."""
        if now < self.until:
            if wanted - self.base > self.added:
                service.set_desired(now, wanted)
                self.added = service.desired - self.base
            return
        if wanted > service.desired:
            self.base = service.desired
            service.set_desired(now, wanted)
            self.added = service.desired - self.base
            self.until = now + cooldown


class TargetTracking:
    """Target tracking on one-minute datapoints of backlog per task."""

    def __init__(self, policies: Policies, model: Model, *, per_desired: bool) -> None:
        self.policies, self.model = policies, model
        self.per_desired = per_desired
        self.metric = Series(60, model.delivery)
        self.out, self.in_until = Cooldown(), -1
        self.high_since: int | None = None
        self.low_since: int | None = None

    def observe(self, now: int, backlog: float, service: Service) -> None:
        tasks = service.desired if self.per_desired else service.running
        self.metric.record(now, backlog / max(tasks, 1), max)

    def evaluate(self, now: int, service: Service) -> None:
        if now % self.model.standard_evaluation:
            return
        target, model = self.policies.target, self.model
        high = self.metric.visible(now, model.tracking_out_datapoints)
        if all(v is not None and v > target for v in high):
            value = high[-1] or 0.0
            wanted = math.ceil(service.desired * value / target)
            self.out.scale_out(service, now, wanted, self.policies.scale_out_cooldown)
            self.in_until = -1  # a scale-out ends the scale-in cooldown
            return
        low = self.metric.visible(now, model.tracking_in_datapoints)
        quiet = all(v is not None and v < target * model.tracking_in_ratio for v in low)
        if quiet and now >= self.in_until:
            value = low[-1] or 0.0
            wanted = math.ceil(service.desired * value / target)
            if wanted < service.desired:
                service.set_desired(now, wanted)
                self.in_until = now + self.policies.scale_in_cooldown


class StepScaleOut:
    """The step policy and its high-resolution alarm."""

    def __init__(self, policies: Policies, model: Model) -> None:
        self.policies, self.model = policies, model
        self.metric = Series(policies.step_period, model.delivery)
        self.cooldown = Cooldown()
        self.in_alarm = False
        self.last_invoked = -(10**9)

    def observe(self, now: int, backlog: float, service: Service) -> None:
        # ``Workers``: the workers consuming now (a starting task has not registered yet).
        self.metric.record(now, backlog / max(service.running, 1), max)

    def evaluate(self, now: int, service: Service) -> None:
        if now % self.model.high_resolution_evaluation:
            return
        p = self.policies
        points = self.metric.visible(now, p.step_datapoints)
        breaching = all(v is not None and v >= p.step_threshold for v in points)
        if not breaching:
            self.in_alarm = False
            return
        if self.in_alarm and now - self.last_invoked < self.model.reinvoke:
            return
        self.in_alarm, self.last_invoked = True, now
        value = max(v for v in points if v is not None)  # MetricAggregationType Maximum
        (step,) = [s for s in p.steps if s.lower <= value - p.step_threshold < s.upper]
        base = self.cooldown.base if now < self.cooldown.until else service.desired
        added = base * step.percent / 100
        # Application Auto Scaling rounds a fraction of a task up to one, more down.
        added_tasks = max(p.step_min_adjustment, 1 if 0 < added < 1 else math.floor(added))
        self.cooldown.scale_out(service, now, base + added_tasks, p.step_cooldown)


# --- scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    seconds: int
    arrivals: Callable[[int], float]


def burst(at: int, messages: int) -> Callable[[int], float]:
    return lambda t: float(messages) if t == at else 0.0


def ramp(start: int, rise: int, hold: int, peak: float) -> Callable[[int], float]:
    def rate(t: int) -> float:
        if t < start or t >= start + rise + hold:
            return 0.0
        return peak * min(1.0, (t - start) / rise)

    return rate


def daily(trough: float, peak: float) -> Callable[[int], float]:
    return lambda t: trough + (peak - trough) * (1 - math.cos(2 * math.pi * t / 86_400)) / 2


SCENARIOS = (
    Scenario("burst: 10,000 one-second tasks at once", 3600, burst(60, 10_000)),
    Scenario("ramp: 0 to 60 tasks/s over 20 min, 20 min held", 3600, ramp(60, 1200, 1200, 60.0)),
    Scenario("daily curve: 2 to 40 tasks/s and back over 24 h", 86_400, daily(2.0, 40.0)),
)


@dataclass(frozen=True)
class Result:
    scenario: str
    policies: str
    first_scale_out: float | None
    p95_wait: float
    task_minutes: float


def percentile(waits: Sequence[tuple[float, float]], share: float) -> float:
    total = sum(count for _, count in waits)
    seen = 0.0
    for wait, count in sorted(waits):
        seen += count
        if seen >= share * total:
            return wait
    return 0.0


def simulate(scenario: Scenario, policies: Policies, model: Model, *, ours: bool) -> Result:
    service = Service(policies, model, desired=policies.min_count)
    service.running = policies.min_count
    tracking = TargetTracking(policies, model, per_desired=ours and policies.per_desired)
    step = StepScaleOut(policies, model) if ours else None
    publish = model.fast_publish if ours else model.slow_publish
    breached_at: int | None = None
    carry = 0.0
    for now in range(scenario.seconds):
        carry += scenario.arrivals(now)
        arrivals, carry = math.floor(carry), carry - math.floor(carry)
        service.second(now, arrivals)
        backlog = service.backlog
        if breached_at is None and backlog / max(service.running, 1) > policies.target:
            breached_at = now
        if now % publish == 0:
            tracking.observe(now, backlog, service)
            if step is not None:
                step.observe(now, backlog, service)
        tracking.evaluate(now, service)
        if step is not None:
            step.evaluate(now, service)
    first = None
    if service.first_scale_out is not None and breached_at is not None:
        first = float(service.first_scale_out - breached_at)
    return Result(
        scenario=scenario.name,
        policies=(
            ("this project, over desired tasks" if policies.per_desired else "this project")
            if ours
            else "target tracking alone, 1-min metric"
        ),
        first_scale_out=first,
        p95_wait=percentile(service.waits, 0.95),
        task_minutes=service.task_seconds / 60,
    )


def table(results: Sequence[Result]) -> str:
    rows = [["Arrivals", "Policies", "First scale-out after", "p95 queue wait", "Task-minutes"]]
    for r in results:
        rows.append(
            [
                r.scenario,
                r.policies,
                "none" if r.first_scale_out is None else f"{r.first_scale_out:.0f} s",
                f"{r.p95_wait:.0f} s",
                f"{r.task_minutes:,.0f}",
            ]
        )
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(" --- " for _ in rows[0]) + "|")
    return "\n".join(lines)


def describe(policies: Policies, model: Model) -> str:
    steps = ", ".join(
        f"from {policies.step_threshold + s.lower:g}: +{s.percent} %" for s in policies.steps
    )
    return "\n".join(
        [
            f"Pool: concurrency {policies.concurrency}, {TASK_SECONDS:g} s tasks, "
            f"{policies.min_count}..{policies.max_count} tasks, target {policies.target:g} "
            "waiting messages per task (rendered from maxQueueSeconds 60, typicalTaskSeconds 1).",
            f"Target tracking: scale-out cooldown {policies.scale_out_cooldown} s, scale-in "
            f"cooldown {policies.scale_in_cooldown} s; AlarmHigh "
            f"{model.tracking_out_datapoints} x 1 min above target, AlarmLow "
            f"{model.tracking_in_datapoints} x 1 min below {model.tracking_in_ratio:g} x target.",
            f"Step policy: alarm {policies.step_datapoints} x {policies.step_period} s at "
            f"{policies.step_threshold:g} or more per worker; cooldown {policies.step_cooldown} s;"
            f" {steps}.",
            f"Model: task start {model.task_start} s; datapoints usable {model.delivery} s after "
            f"their period; alarms evaluated every {model.standard_evaluation} s (1-min) or "
            f"{model.high_resolution_evaluation} s (10 s); actions re-invoked every "
            f"{model.reinvoke} s in ALARM; backlog published every {model.fast_publish} s "
            f"(ours) or {model.slow_publish} s (AWS pattern).",
        ]
    )


def first_burst_decision(policies: Policies, model: Model) -> float | None:
    """Seconds from the burst's breach to this project's first scale-out."""
    return simulate(SCENARIOS[0], policies, model, ours=True).first_scale_out


def emf_path(extraction: int) -> tuple[Stage, ...]:
    """The EMF path with its undocumented extraction stage at ``extraction`` seconds."""
    *documented, last = EMF_PATH
    return (*documented, Stage(last.what, extraction, last.source, last.documented))


def emf_extraction_budget(policies: Policies, limit: float = 60) -> int:
    """The longest EMF extraction, in whole seconds, with which a burst still gets its first
    scale-out within ``limit`` seconds (-1: not even an instant one)."""
    budget = -1
    for extraction in range(0, 301):
        decision = first_burst_decision(policies, Model(metric_path=emf_path(extraction)))
        if decision is None or decision > limit:
            break
        budget = extraction
    return budget


def describe_paths(policies: Policies) -> str:
    lines = ["How a datapoint reaches the alarm (seconds at most, after its period ends):"]
    for name, path in (("PutMetricData (this project)", PUT_METRIC_DATA_PATH),
                       ("EMF via awslogs (before)", EMF_PATH)):  # fmt: skip
        decision = first_burst_decision(policies, Model(metric_path=path))
        stages = "; ".join(
            f"{stage.what} {stage.seconds} s ({'documented' if stage.documented else 'assumed'})"
            for stage in path
        )
        lines.append(
            f"- {name}: {path_delay(path)} s = {stages}. Burst: first scale-out after "
            f"{decision:.0f} s."
        )
    lines.append(
        f"- EMF holds the minute only while CloudWatch Logs extracts within "
        f"{emf_extraction_budget(policies)} s, a figure AWS does not document."
    )
    return "\n".join(lines)


def main() -> int:
    policies, model = rendered_policies(), Model()
    # With Container Insights (production), target tracking divides by the desired count.
    insights = rendered_policies(container_insights=True)
    results = [
        result
        for scenario in SCENARIOS
        for result in (
            simulate(scenario, policies, model, ours=True),
            simulate(scenario, insights, model, ours=True),
            simulate(scenario, policies, model, ours=False),
        )
    ]
    print(describe(policies, model))
    print(describe_paths(policies))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
