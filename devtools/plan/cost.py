"""A monthly cost estimate of a rendered stack, line by line, from a dated price table.

Everything is counted from what the program renders (task sizes and architectures, scaling
bounds, capacity strategies, public IPs, NAT gateways, broker nodes, log groups, the metrics
the app's containers write, alarms and the metrics they read, the dashboard, the alert topic's
key) and priced with ``devtools/plan/prices/<region>.json``, which records
its date and the AWS pricing pages it comes from. A region without a table gets no numbers,
only the statement that there is no table. Usage that the program does not decide (log volume,
load balancer capacity units...) is an assumption, printed with the estimate.

Each figure is given at the services' minimum and maximum task counts. Cheaper choices with
the same guarantees are priced as what they would save: ARM64 tasks (Graviton), Fargate Spot
for pools whose tasks finish within the 2-minute interruption notice, Valkey instead of Redis.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from celery_ecs import settings
from celery_ecs.metrics import PUBLISH_INTERVAL_SECONDS
from celery_ecs.names import (
    BACKLOG_METRIC,
    BEAT_HEARTBEAT_METRIC,
    OLDEST_AGE_METRIC,
    POOL_DIMENSION,
    QUEUE_DIMENSION,
    SERVICE_DIMENSION,
    WORKERS_METRIC,
)
from celery_ecs.schedule import Cron, Every, PeriodicEntry
from devtools.render import ProgramRun, Registration, RenderedTaskDefinition
from infra.config import StackConfig
from infra.config_tables import FARGATE_MEMORY
from infra.image import KEEP_IMAGES
from infra.schedule_expr import expand
from policy.invariants import aws_types

PRICES = Path(__file__).resolve().parent / "prices"
#: Width of the text the estimate renders to.
WIDTH = 100
HOURS_PER_MONTH = 730
#: Usage the program does not decide, priced as stated (printed with every estimate).
#: An ALB is billed per hour for the LCUs of its busiest dimension, averaged over the hour
#: (https://aws.amazon.com/elasticloadbalancing/pricing/): one LCU is 25 new connections a
#: second, 3,000 active connections a minute, 1 GB processed an hour (targets other than
#: Lambda) or 1,000 rule evaluations a second (the first 10 rules free).
LCU_NEW_CONNECTIONS_PER_SECOND = 25
LCU_ACTIVE_CONNECTIONS_PER_MINUTE = 3000
LCU_PROCESSED_GB_PER_HOUR = 1.0
#: At the minimum counts, a quiet stack: on average this many requests a second, each on a
#: connection of its own, of this many KB in and out together. Only the listener's default
#: action routes (no rules to evaluate).
QUIET_REQUESTS_PER_SECOND = 1.0
QUIET_KB_PER_REQUEST = 10.0
#: At the maximum counts, a busy stack: one LCU (25 new connections a second, or 1 GB an hour).
BUSY_LOAD_BALANCER_LCUS = 1.0


def quiet_load_balancer_lcus() -> float:
    """The LCUs of the quiet stack's traffic: its busiest dimension."""
    return max(
        QUIET_REQUESTS_PER_SECOND / LCU_NEW_CONNECTIONS_PER_SECOND,
        QUIET_REQUESTS_PER_SECOND * 60 / LCU_ACTIVE_CONNECTIONS_PER_MINUTE,
        QUIET_REQUESTS_PER_SECOND * 3600 * QUIET_KB_PER_REQUEST / 1e6 / LCU_PROCESSED_GB_PER_HOUR,
    )


LOG_GB_PER_TASK_MONTH = 1.0
#: At the minimum counts (the quiet stack), per running task: ``python -m bench.task_sizes
#: --rate 1`` (a POST and a GET a second, twice the quiet stack's requests) measured 0.43 GB a
#: month from the web (its access log), 0.02 from beat, under 0.01 from the worker (the app
#: logs no line per task): 0.45 GB over three tasks, priced at twice that.
QUIET_LOG_GB_PER_TASK_MONTH = 0.3
FLOW_LOG_GB_MONTH = 1.0
IMAGE_GB = 0.15
#: Container Insights metrics of a Fargate cluster, per dimension set: billed as custom metrics.
INSIGHTS_METRICS = {"cluster": 12, "service": 15, "task family": 10}
#: Container Insights performance log events, per running task and month.
INSIGHTS_LOG_GB_PER_TASK_MONTH = 0.05
#: A one-off task is billed for at least a minute (Fargate's minimum).
ENQUEUE_MINUTES_PER_RUN = 1.0
#: A reference year for averaging a cron schedule's runs per month.
_REFERENCE_YEAR = 2026
#: An alarm evaluating periods under this many seconds is a high-resolution alarm (PutMetricAlarm:
#: "Specifying 10, 20, or 30 also sets this alarm as a high-resolution alarm").
HIGH_RESOLUTION_BELOW = 60
#: Application Auto Scaling creates two alarms per target tracking policy (scale out, scale in).
TARGET_TRACKING_ALARMS = 2


#: PutMetricData requests a worker task makes in a month: one per round (celery_ecs.metrics sends
#: every queue's and the pool's datapoints in one call).
PUT_METRIC_DATA_REQUESTS_PER_TASK_MONTH = HOURS_PER_MONTH * 3600 / PUBLISH_INTERVAL_SECONDS


@dataclass(frozen=True)
class PriceTable:
    region: str
    date: str
    path: Path
    data: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def unchecked(self) -> list[str]:
        """The prices not yet checked against AWS's price list files (dotted paths)."""
        return sorted(self.data.get("priceList", {}).get("unchecked", {}))


#: Top-level keys of a price table that hold no price.
TABLE_METADATA = frozenset({"region", "date", "currency", "note", "sources", "priceList"})


def price_paths(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every number of a price table, as a dotted path (``fargate.ARM64.vcpuHour``)."""
    paths: list[str] = []
    for key, value in data.items():
        if not prefix and key in TABLE_METADATA:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            paths += price_paths(value, f"{path}.")
        else:
            paths.append(path)
    return sorted(paths)


def price_table(region: str, directory: Path = PRICES) -> PriceTable | None:
    """The table for ``region``, or None when the repository has none."""
    path = directory / f"{region}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return PriceTable(region=data["region"], date=data["date"], path=path, data=data)


def available_regions(directory: Path = PRICES) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.json"))


@dataclass(frozen=True)
class Line:
    """One priced item, per month, at the minimum and the maximum task counts (None: the table
    has no price for it), what it is there for, and the least it can cost at min count for the
    same guarantees (its floor)."""

    item: str
    low: float | None
    high: float | None
    #: The guarantee the line is needed for, or the key that turns it on (OPT_IN).
    need: str = ""
    #: Its floor where it is below ``low``: the smallest task size or broker node that serves the
    #: same guarantees, or 0 for a line nothing guaranteed needs. None: ``low`` is the floor.
    least: float | None = None
    #: A name of the line's kind that stays the same across stacks (``fargate web``, ``nat``).
    kind: str = ""

    @property
    def floor(self) -> float | None:
        return self.low if self.least is None else self.least


@dataclass(frozen=True)
class Saving:
    """A cheaper choice with the same guarantees, and what it saves per month (a range where
    the price varies: Fargate Spot) at the minimum and maximum counts."""

    setting: str
    why: str
    low: tuple[float, float]
    high: tuple[float, float]


@dataclass(frozen=True)
class Estimate:
    region: str
    prices: PriceTable | None
    lines: tuple[Line, ...] = ()
    savings: tuple[Saving, ...] = ()
    #: Cheaper choices that would break a guarantee here, and why.
    refused: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    #: A production stack: what it costs more at min count than the same config without
    #: ``production: true`` (line kind, monthly difference, why), and that stack's total.
    production_adds: tuple[tuple[str, float, str], ...] = ()
    without_production: float | None = None

    @property
    def totals(self) -> tuple[float, float]:
        """The monthly total at the minimum and at the maximum counts (priced lines only)."""
        low = sum(line.low for line in self.lines if line.low is not None)
        high = sum(line.high for line in self.lines if line.high is not None)
        return low, high

    @property
    def floor(self) -> float:
        """The least the same guarantees cost at min count: the sum of the lines' floors."""
        return sum(line.floor for line in self.lines if line.floor is not None)

    @property
    def unpriced(self) -> list[str]:
        return [line.item for line in self.lines if line.low is None]


@dataclass(frozen=True)
class Tasks:
    """One service's (or the enqueue task's) tasks: size, architecture, counts."""

    name: str
    cpu: int
    memory: int
    architecture: str
    low: float
    high: float
    public_ip: bool
    #: Tasks that stay on regular Fargate when the rest run on Spot; None: no Spot.
    spot_base: int | None = None
    #: Hours a task runs per month (a service runs all month; one-off tasks do not).
    hours: float = HOURS_PER_MONTH

    def describe(self) -> str:
        counts = count_text(self.low, self.high)
        spot = "" if self.spot_base is None else f", Spot above {self.spot_base}"
        return (
            f"{counts} x {self.cpu / 1024:g} vCPU {self.memory / 1024:g} GB "
            f"{self.architecture}{spot}"
        )


#: How a line that no guarantee needs says so, with the key that turns it on.
OPT_IN = "opt-in:"


def task_need(service: str) -> str:
    """The guarantee a service's tasks are needed for."""
    if service == "beat":
        return "the schedule: exactly one beat (scheduler: beat)"
    if service == "web":
        return "the producer API, always one task behind the load balancer"
    if service.startswith("enqueue"):
        return "the schedule: one task per slot (scheduler: eventbridge)"
    return "a consumer on each of the pool's queues at all times (minCount >= 1)"


def count_text(low: float, high: float) -> str:
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


#: Why production costs more, by line kind (what ``production: true`` turns on by default).
PRODUCTION_REASONS: dict[str, str] = {
    "fargate web": "two web tasks by default: the API survives the loss of a task",
    "nat": "tasks in private subnets without public IPs (ECS.2), a NAT gateway per AZ: an AZ's "
    "loss leaves the other AZ's tasks their way out",
    "ipv4 nat": "the NAT gateways' addresses",
    "ipv4 tasks": "no public IP on any task",
    "broker": "a replica in another AZ with automatic failover (ElastiCache.3)",
    "container insights": "Container Insights (Security Hub ECS.12)",
    "dashboard": "the dashboard",
    "alarms": "the broker's alarms read the replica's node too",
    "logs": "logs kept 365 days",
    "flow logs": "VPC flow logs, rejected traffic (EC2.6)",
}


def estimate(
    run: ProgramRun,
    config: StackConfig,
    region: str,
    without_production: tuple[ProgramRun, StackConfig] | None = None,
) -> Estimate:
    """The estimate of a rendered stack. ``without_production``: for a production stack, the
    same config rendered without ``production: true``, to say what production adds."""
    prices = price_table(region)
    if prices is None:
        return Estimate(region=region, prices=None)
    builder = _Builder(run, config, prices)
    lines = tuple(builder.lines())
    adds: tuple[tuple[str, float, str], ...] = ()
    base_total = None
    if without_production is not None:
        base = tuple(_Builder(*without_production, prices).lines())
        adds = tuple(production_adds(lines, base))
        base_total = sum(line.low for line in base if line.low is not None)
    return Estimate(
        region=region,
        prices=prices,
        lines=lines,
        savings=tuple(builder.savings()),
        refused=tuple(builder.refused()),
        assumptions=(*ASSUMPTIONS, free_tiers(prices)),
        production_adds=adds,
        without_production=base_total,
    )


def production_adds(
    production: Iterable[Line], base: Iterable[Line]
) -> Iterable[tuple[str, float, str]]:
    """Each line kind whose price at min count differs between a production stack and the same
    config without ``production: true``: (kind, difference, why)."""

    def by_kind(lines: Iterable[Line]) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in lines:
            found[line.kind] = found.get(line.kind, 0.0) + (line.low or 0.0)
        return found

    more, less = by_kind(production), by_kind(base)
    for kind in sorted(more.keys() | less.keys()):
        difference = more.get(kind, 0.0) - less.get(kind, 0.0)
        if round(difference, 2) != 0:
            yield kind, difference, PRODUCTION_REASONS.get(kind, "production's defaults")


def free_tiers(prices: PriceTable) -> str:
    """What the estimate leaves free, and what it does not, from the table."""
    free = prices["cloudwatch"]["freeTier"]
    emails = prices["sns"]["freeEmailNotificationsMonth"]
    return (
        f"CloudWatch's free tier ({free['metrics']} custom metrics, "
        f"{free['standardAlarmMetrics']} standard alarm metrics, {free['dashboards']} dashboards, "
        f"{free['apiRequests']:,} API requests a month) is not deducted: it is the account's, "
        "shared with everything else in it. "
        f"Alert e-mails are not priced: SNS sends the first {emails:,} a month free, and alarm "
        "state changes are far fewer."
    )


ASSUMPTIONS: tuple[str, ...] = (
    f"{HOURS_PER_MONTH} hours a month; services run all month at the count shown.",
    f"Load balancer: at min count a quiet stack, {QUIET_REQUESTS_PER_SECOND:g} request a second "
    f"on average, each on a new connection, {QUIET_KB_PER_REQUEST:g} KB in and out: "
    f"{quiet_load_balancer_lcus():.2g} LCU (its busiest dimension, new connections; one LCU is "
    f"{LCU_NEW_CONNECTIONS_PER_SECOND} new connections a second, "
    f"{LCU_ACTIVE_CONNECTIONS_PER_MINUTE:,} active a minute, {LCU_PROCESSED_GB_PER_HOUR:g} GB "
    f"an hour or 1,000 rule evaluations a second, and AWS bills the busiest); at max count "
    f"{BUSY_LOAD_BALANCER_LCUS:g} LCU. Each LCU more is another LCU-hour price.",
    f"Logs: ingested per running task and month, {QUIET_LOG_GB_PER_TASK_MONTH:g} GB at min "
    "count (twice what the quiet stack's web, worker and beat wrote in bench.task_sizes), "
    f"{LOG_GB_PER_TASK_MONTH:g} GB at max count (an upper bound); kept for the retention period "
    f"without compression; flow logs (REJECT only) {FLOW_LOG_GB_MONTH:g} GB a month.",
    "Container Insights: "
    + ", ".join(f"{count} metrics per {what}" for what, count in INSIGHTS_METRICS.items())
    + f", billed as custom metrics, and {INSIGHTS_LOG_GB_PER_TASK_MONTH:g} GB of performance "
    "events per running task and month.",
    "Custom metrics: what the app publishes: Backlog and OldestMessageAge per queue, Workers "
    "per pool (PutMetricData), BeatHeartbeat with beat (a log line in the embedded metric "
    "format, inside the log volume above); each counted once, however many tasks write it. "
    f"Every worker task makes one PutMetricData request every {PUBLISH_INTERVAL_SECONDS:g} s, "
    f"{PUT_METRIC_DATA_REQUESTS_PER_TASK_MONTH:,.0f} a month, priced per 1,000 requests.",
    f"Alarms: billed per metric they read (metric math: each metric), high-resolution ones "
    f"(periods under {HIGH_RESOLUTION_BELOW} s) at their own price; target tracking creates "
    f"{TARGET_TRACKING_ALARMS} per policy.",
    f"ECR: {KEEP_IMAGES} images kept of {IMAGE_GB:g} GB each, without layer sharing (an upper "
    "bound).",
    f"EventBridge one-off tasks: {ENQUEUE_MINUTES_PER_RUN:g} minute billed per run (Fargate's "
    "minimum); scheduled rules themselves are free.",
    "Fargate Spot: 50-70 % below on-demand, its price moving with supply and demand; Spot "
    "tasks of the lines above are priced at 50 % below.",
    "Not included: data transfer, NAT gateway per-GB processing, Fargate ephemeral storage "
    "beyond the free 20 GB (none is configured), API requests other than PutMetricData, "
    "backups within the free allowance, taxes.",
)


class _Builder:
    def __init__(self, run: ProgramRun, config: StackConfig, prices: PriceTable) -> None:
        self.run = run
        self.config = config
        self.prices = prices
        self.references = run.by_reference()
        self.tasks = task_sets(run, self.references, config.schedule)

    # --- the lines ---------------------------------------------------------------------

    def lines(self) -> Iterable[Line]:
        for service in self.tasks:
            yield Line(
                f"Fargate {service.name}: {service.describe()}",
                self._fargate(service, service.low),
                self._fargate(service, service.high),
                need=task_need(service.name),
                least=self._smallest_fargate(service),
                kind=f"fargate {service.name}",
            )
        yield from self._network()
        yield from self._broker()
        yield from self._monitoring()
        secrets = len(self.run.of_type(aws_types.SECRETSMANAGER_SECRET))
        if secrets:
            price = secrets * self.prices["secretsManager"]["secretMonth"]
            yield Line(
                f"Secrets Manager: {secrets} secret{'s' if secrets > 1 else ''}",
                price,
                price,
                need="the broker URL with its AUTH token and the web's API keys, never in a plain "
                "environment variable (ECS.8)",
                kind="secrets",
            )
        if self.run.of_type(aws_types.ECR_REPOSITORY):
            price = KEEP_IMAGES * IMAGE_GB * self.prices["ecr"]["storageGbMonth"]
            yield Line(
                f"ECR storage: {KEEP_IMAGES} images",
                price,
                price,
                need="the image the tasks run; the last images kept for a rollback (ECR.3)",
                kind="ecr",
            )

    def _fargate(
        self,
        tasks: Tasks,
        count: float,
        architecture: str | None = None,
        spot: tuple[int, float] | None = None,
    ) -> float:
        """Monthly price of ``count`` tasks. ``spot``: (tasks kept on regular Fargate, Spot
        discount); by default the service's own strategy, at the conservative discount."""
        rates = self.prices["fargate"][architecture or tasks.architecture]
        hourly: float = tasks.cpu / 1024 * rates["vcpuHour"] + tasks.memory / 1024 * rates["gbHour"]
        if spot is None and tasks.spot_base is not None:
            spot = (tasks.spot_base, self.prices["fargateSpotDiscount"]["low"])
        on_spot = 0.0 if spot is None else max(0.0, count - spot[0])
        discount = 0.0 if spot is None else spot[1]
        return hourly * tasks.hours * (count - on_spot * discount)

    def _smallest_fargate(self, tasks: Tasks) -> float:
        """``tasks`` at min count at Fargate's smallest size, on the cheaper of ARM64 and the
        service's own architecture and capacity strategy (Spot)."""
        cpu = min(FARGATE_MEMORY)
        smallest = replace(tasks, cpu=cpu, memory=FARGATE_MEMORY[cpu][0])
        return min(
            self._fargate(smallest, smallest.low),
            self._fargate(smallest, smallest.low, "ARM64", spot=(0, 0.0)),
        )

    def _network(self) -> Iterable[Line]:
        ip_hour = self.prices["publicIpv4Hour"] * HOURS_PER_MONTH
        for balancer in self.run.of_type(aws_types.LB_LOAD_BALANCER):
            lb = self.prices["loadBalancer"]
            quiet, busy = quiet_load_balancer_lcus(), BUSY_LOAD_BALANCER_LCUS
            low, high = (
                HOURS_PER_MONTH * (lb["hour"] + lcus * lb["lcuHour"]) for lcus in (quiet, busy)
            )
            yield Line(
                f"Load balancer {balancer.name} ({quiet:.2g}-{busy:g} LCU)",
                low,
                high,
                need="the web's HTTP(S) endpoint, health checks, draining; two AZs (ELB.13)",
                kind="load balancer",
            )
            if not balancer.inputs.get("internal"):
                addresses = len(balancer.inputs.get("subnets", []))
                yield Line(
                    f"Public IPv4: load balancer, {addresses} (one per AZ)",
                    addresses * ip_hour,
                    addresses * ip_hour,
                    need="an internet-facing load balancer has an address in each of its AZs",
                    kind="ipv4 load balancer",
                )
        public = [service for service in self.tasks if service.public_ip]
        if public:
            names = ", ".join(service.name for service in public)
            yield Line(
                f"Public IPv4: tasks ({names})",
                sum(t.low * t.hours for t in public) * self.prices["publicIpv4Hour"],
                sum(t.high * t.hours for t in public) * self.prices["publicIpv4Hour"],
                need="tasks reach ECR, CloudWatch and Secrets Manager (network.natGateways: "
                "none: the cheapest way out; the security groups admit only the load balancer)",
                kind="ipv4 tasks",
            )
        gateways = len(self.run.of_type(aws_types.EC2_NAT_GATEWAY))
        if gateways:
            price = gateways * HOURS_PER_MONTH * self.prices["natGateway"]["hour"]
            yield Line(
                f"NAT gateways: {gateways}",
                price,
                price,
                need="tasks without public IPs (ECS.2) reach AWS; one per AZ survives an AZ",
                kind="nat",
            )
        addresses = len(self.run.of_type(aws_types.EC2_EIP))
        if addresses:
            price = addresses * ip_hour
            yield Line(
                f"Public IPv4: NAT gateways, {addresses}",
                price,
                price,
                need="each NAT gateway's address",
                kind="ipv4 nat",
            )

    def _broker(self) -> Iterable[Line]:
        for group in self.run.of_type(aws_types.ELASTICACHE_REPLICATION_GROUP):
            engine, node = group.inputs["engine"], group.inputs["nodeType"]
            nodes = int(group.inputs.get("numCacheClusters", 1))
            hourly = self.prices["elasticacheNodeHour"].get(engine, {}).get(node)
            price = None if hourly is None else nodes * hourly * HOURS_PER_MONTH
            smallest = min(
                hourly
                for engines in self.prices["elasticacheNodeHour"].values()
                for hourly in engines.values()
            )
            yield Line(
                f"ElastiCache {engine}: {nodes} x {node}",
                price,
                price,
                need="the broker"
                + (
                    ", a replica per node more: automatic failover (ElastiCache.3)"
                    if nodes > 1
                    else ""
                ),
                least=nodes * smallest * HOURS_PER_MONTH,
                kind="broker",
            )

    def _monitoring(self) -> Iterable[Line]:
        cloudwatch = self.prices["cloudwatch"]
        metrics = app_metrics(self.run)
        if metrics:
            price = len(metrics) * cloudwatch["metricMonth"]
            names = [name for _, name, _ in metrics]
            counts = ", ".join(
                f"{name} {names.count(name)}"
                for name in (
                    BACKLOG_METRIC,
                    OLDEST_AGE_METRIC,
                    WORKERS_METRIC,
                    BEAT_HEARTBEAT_METRIC,
                )
                if name in names
            )
            yield Line(
                f"CloudWatch metrics: {len(metrics)} from the app ({counts})",
                price,
                price,
                need="backlog scaling, the queue-age, tasks-below-min and beat-silent alarms",
                kind="metrics",
            )
        publishers = [t for t in self.tasks if t.name in metric_publishers(self.run)]
        if publishers:
            low, high = (
                sum(getattr(t, which) * t.hours / HOURS_PER_MONTH for t in publishers)
                * PUT_METRIC_DATA_REQUESTS_PER_TASK_MONTH
                / 1000
                * cloudwatch["requestsPer1000"]
                for which in ("low", "high")
            )
            yield Line(
                "CloudWatch PutMetricData: one request per worker task every "
                f"{PUBLISH_INTERVAL_SECONDS:g} s",
                low,
                high,
                need="10-second metrics: a burst's scale-out decision within a minute",
                kind="put metric data",
            )
        yield from self._alarms()
        dashboards = len(self.run.of_type(aws_types.CLOUDWATCH_DASHBOARD))
        if dashboards:
            price = dashboards * cloudwatch["dashboardMonth"]
            yield Line(
                f"CloudWatch dashboard: {dashboards}",
                price,
                price,
                need=f"{OPT_IN} dashboard",
                least=0.0,
                kind="dashboard",
            )
        keys = len(self.run.of_type(aws_types.KMS_KEY))
        if keys:
            price = keys * self.prices["kms"]["keyMonth"]
            yield Line(
                f"KMS key: {keys} (alert topic encryption)",
                price,
                price,
                need="the alert topic alerts.email creates, encrypted (SNS.1)",
                kind="kms",
            )
        if self._container_insights:
            services = len(self.run.of_type(aws_types.ECS_SERVICE))
            families = len(self.run.of_type(aws_types.ECS_TASK_DEFINITION))
            count = (
                INSIGHTS_METRICS["cluster"]
                + services * INSIGHTS_METRICS["service"]
                + families * INSIGHTS_METRICS["task family"]
            )
            low, high = (
                count * cloudwatch["metricMonth"]
                + self._task_months(which)
                * INSIGHTS_LOG_GB_PER_TASK_MONTH
                * cloudwatch["logIngestGb"]
                for which in ("low", "high")
            )
            yield Line(
                f"Container Insights: {count} metrics, performance logs",
                low,
                high,
                need=(
                    "production: Security Hub ECS.12"
                    if self.config.production
                    else f"{OPT_IN} containerInsights"
                ),
                least=None if self.config.production else 0.0,
                kind="container insights",
            )
        months = self.config.log_retention_days / 30
        per_gb = cloudwatch["logIngestGb"] + months * cloudwatch["logStorageGbMonth"]
        low = self._task_months("low") * QUIET_LOG_GB_PER_TASK_MONTH * per_gb
        high = self._task_months("high") * LOG_GB_PER_TASK_MONTH * per_gb
        retention = self.config.log_retention_days
        yield Line(
            f"CloudWatch Logs: tasks, kept {retention} days",
            low,
            high,
            need="every container logs to CloudWatch (ECS.9)"
            + (", kept a year in production" if self.config.production else ""),
            kind="logs",
        )
        if self.run.of_type(aws_types.EC2_FLOW_LOG):
            price = FLOW_LOG_GB_MONTH * per_gb
            yield Line(
                f"CloudWatch Logs: VPC flow logs, kept {retention} days",
                price,
                price,
                need="production: VPC flow logs (EC2.6)",
                kind="flow logs",
            )

    def _alarms(self) -> Iterable[Line]:
        """Standard alarms (target tracking's and the program's) and high-resolution ones, each
        priced per metric it reads."""
        cloudwatch = self.prices["cloudwatch"]
        tracking = [
            policy
            for policy in self.run.of_type(aws_types.APPAUTOSCALING_POLICY)
            if policy.inputs.get("policyType") == "TargetTrackingScaling"
        ]
        standard = [
            a for a in self.run.of_type(aws_types.CLOUDWATCH_METRIC_ALARM) if not high_resolution(a)
        ]
        fast = [
            a for a in self.run.of_type(aws_types.CLOUDWATCH_METRIC_ALARM) if high_resolution(a)
        ]
        count = TARGET_TRACKING_ALARMS * len(tracking) + len(standard)
        if count:
            metrics = TARGET_TRACKING_ALARMS * sum(map(tracking_metrics, tracking)) + sum(
                map(alarm_metrics, standard)
            )
            price = metrics * cloudwatch["alarmMetricMonth"]
            yield Line(
                f"CloudWatch alarms: {count} standard ({TARGET_TRACKING_ALARMS * len(tracking)} "
                f"of target tracking), {metrics} metrics",
                price,
                price,
                need="the operator alarms and target tracking's own",
                kind="alarms",
            )
        if fast:
            metrics = sum(map(alarm_metrics, fast))
            price = metrics * cloudwatch["highResolutionAlarmMetricMonth"]
            yield Line(
                f"CloudWatch alarms: {len(fast)} high-resolution, {metrics} metrics",
                price,
                price,
                need="the step policies' 10-second alarms: scale-out within a minute",
                kind="alarms high-resolution",
            )

    @property
    def _container_insights(self) -> bool:
        return any(
            setting == {"name": "containerInsights", "value": "enabled"}
            for cluster in self.run.of_type(aws_types.ECS_CLUSTER)
            for setting in cluster.inputs.get("settings", [])
        )

    def _task_months(self, which: str) -> float:
        months: float = sum(getattr(t, which) * t.hours / HOURS_PER_MONTH for t in self.tasks)
        return months

    # --- cheaper choices -----------------------------------------------------------------

    def savings(self) -> Iterable[Saving]:
        if self.config.cpu_architecture == "X86_64" and not self.config.uses_fargate_spot:
            low, high = (
                sum(
                    self._fargate(t, getattr(t, which))
                    - self._fargate(t, getattr(t, which), "ARM64")
                    for t in self.tasks
                )
                for which in ("low", "high")
            )
            yield Saving(
                "cpuArchitecture: ARM64",
                "Graviton tasks, same sizes; the image is built for linux/arm64",
                (low, low),
                (high, high),
            )
        spot_runs_here = self.config.cpu_architecture == "X86_64"
        for index, pool in enumerate(self.config.workers):
            if pool.fargate_spot or not (
                pool.budget.finishes_within_spot_notice and spot_runs_here
            ):
                continue
            (service,) = [s for s in self.tasks if s.name == f"worker-{pool.name}"]
            yield Saving(
                f"workers[{index}].fargateSpot: true",
                f"worker-{pool.name}: its tasks finish within the 2-minute notice (warm "
                "shutdown); the first task stays on regular Fargate",
                self._spot_saving(service, service.low),
                self._spot_saving(service, service.high),
            )
        for group in self.run.of_type(aws_types.ELASTICACHE_REPLICATION_GROUP):
            if group.inputs["engine"] != "redis":
                continue
            table = self.prices["elasticacheNodeHour"]
            node = group.inputs["nodeType"]
            if node in table["redis"] and node in table["valkey"]:
                nodes = int(group.inputs.get("numCacheClusters", 1))
                saved = nodes * (table["redis"][node] - table["valkey"][node]) * HOURS_PER_MONTH
                yield Saving(
                    "broker.engine: valkey",
                    "the same protocol, commands and ElastiCache features",
                    (saved, saved),
                    (saved, saved),
                )

    def _spot_saving(self, tasks: Tasks, count: float) -> tuple[float, float]:
        spot = self.prices["fargateSpotDiscount"]
        full = self._fargate(tasks, count)
        low, high = (
            full - self._fargate(tasks, count, spot=(1, spot[end])) for end in ("low", "high")
        )
        return low, high

    def refused(self) -> Iterable[str]:
        for index, pool in enumerate(self.config.workers):
            if pool.fargate_spot:
                continue
            if not pool.budget.finishes_within_spot_notice:
                yield (
                    f"workers[{index}].fargateSpot (worker-{pool.name}): its tasks outlast "
                    "Spot's 2-minute notice (cold shutdown) and would start over at every "
                    "interruption"
                )
            elif self.config.cpu_architecture != "X86_64":
                yield f"workers[{index}].fargateSpot (worker-{pool.name}): Spot runs X86_64 only"
        if self.config.cpu_architecture == "X86_64" and self.config.uses_fargate_spot:
            yield "cpuArchitecture: ARM64: Fargate Spot, used by a pool here, runs X86_64 only"


def tracking_metrics(policy: Registration) -> int:
    """Metrics each alarm of a target tracking policy reads: one predefined metric, or each
    metric of its metric math."""
    tracking = policy.inputs.get("targetTrackingScalingPolicyConfiguration", {})
    queries = tracking.get("customizedMetricSpecification", {}).get("metrics", [])
    return sum(1 for query in queries if "metricStat" in query) or 1


def alarm_metrics(alarm: Registration) -> int:
    """Metrics an alarm reads: one, or each metric of its metric math."""
    queries = alarm.inputs.get("metricQueries", [])
    return sum(1 for query in queries if "metric" in query) or 1


def high_resolution(alarm: Registration) -> bool:
    """Whether an alarm evaluates periods under a minute (its own, or its metrics')."""
    periods: list[float] = [alarm.inputs.get("period", HIGH_RESOLUTION_BELOW)]
    periods += [
        query["metric"].get("period", HIGH_RESOLUTION_BELOW)
        for query in alarm.inputs.get("metricQueries", [])
        if "metric" in query
    ]
    return min(periods) < HIGH_RESOLUTION_BELOW


def app_metrics(run: ProgramRun) -> list[tuple[str, str, str]]:
    """(namespace, metric, dimension) of each custom metric the app's containers write, sorted.

    What celery_ecs.metrics publishes when a container has ``CELERY_METRICS_NAMESPACE``: a worker,
    ``Backlog`` and ``OldestMessageAge`` of each queue it consumes (its ``--queues``) and
    ``Workers`` of its pool (``CELERY_POOL_NAME``); beat, ``BeatHeartbeat``. A metric is one
    whoever writes it: pools sharing a queue, and every task of a pool, write the same one.
    """
    found: set[tuple[str, str, str]] = set()
    for registration in run.of_type(aws_types.ECS_TASK_DEFINITION):
        definition = RenderedTaskDefinition.of(registration)
        environment, command = definition.environment, definition.command
        namespace = environment.get(settings.METRICS_NAMESPACE)
        if not namespace:
            continue
        if "worker" in command:
            queues = command[command.index("--queues") + 1].split(",")
            for queue in queues:
                for name in (BACKLOG_METRIC, OLDEST_AGE_METRIC):
                    found.add((namespace, name, f"{QUEUE_DIMENSION}={queue}"))
            pool = environment[settings.WORKER_POOL]
            found.add((namespace, WORKERS_METRIC, f"{POOL_DIMENSION}={pool}"))
        elif "beat" in command:
            found.add((namespace, BEAT_HEARTBEAT_METRIC, f"{SERVICE_DIMENSION}=beat"))
    return sorted(found)


def metric_publishers(run: ProgramRun) -> set[str]:
    """The services whose tasks send PutMetricData requests: workers with a namespace."""
    return {
        definition.service
        for definition in map(RenderedTaskDefinition.of, run.of_type(aws_types.ECS_TASK_DEFINITION))
        if definition.environment.get(settings.METRICS_NAMESPACE) and "worker" in definition.command
    }


def task_sets(
    run: ProgramRun, references: Mapping[str, Registration], schedule: Sequence[PeriodicEntry]
) -> list[Tasks]:
    """Every service's tasks, and the one-off tasks EventBridge starts for ``schedule`` (the
    stack's entries)."""
    bounds = {
        target.inputs["resourceId"].rsplit("/", 1)[1]: target.inputs
        for target in run.of_type(aws_types.APPAUTOSCALING_TARGET)
    }
    found = []
    for service in run.of_type(aws_types.ECS_SERVICE):
        desired = service.inputs["desiredCount"]
        scalable = bounds.get(service.physical_name, {})
        strategy = service.inputs.get("capacityProviderStrategies", [])
        spot = any(item["capacityProvider"] == "FARGATE_SPOT" for item in strategy)
        regular = [item for item in strategy if item["capacityProvider"] == "FARGATE"]
        found.append(
            _sized(
                references[service.inputs["taskDefinition"]],
                name=service.inputs["tags"]["Service"],
                low=scalable.get("minCapacity", desired),
                high=scalable.get("maxCapacity", desired),
                network=service.inputs["networkConfiguration"],
                spot_base=(int(regular[0].get("base", 0)) if regular else 0) if spot else None,
            )
        )
    for target in run.of_type(aws_types.CLOUDWATCH_EVENT_TARGET):
        ecs = target.inputs["ecsTarget"]
        entry = _schedule_entry(references[target.inputs["rule"]], schedule)
        found.append(
            _sized(
                references[ecs["taskDefinitionArn"]],
                name=f"enqueue ({entry.name})",
                low=1,
                high=1,
                network=ecs["networkConfiguration"],
                hours=runs_per_month(entry.schedule) * ENQUEUE_MINUTES_PER_RUN / 60,
            )
        )
    return sorted(found, key=lambda tasks: tasks.name)


def _sized(
    definition: Registration,
    *,
    name: str,
    low: float,
    high: float,
    network: Mapping[str, Any],
    spot_base: int | None = None,
    hours: float = HOURS_PER_MONTH,
) -> Tasks:
    return Tasks(
        name=name,
        cpu=int(definition.inputs["cpu"]),
        memory=int(definition.inputs["memory"]),
        architecture=definition.inputs["runtimePlatform"]["cpuArchitecture"],
        low=low,
        high=high,
        public_ip=bool(network.get("assignPublicIp")),
        spot_base=spot_base,
        hours=hours,
    )


def _schedule_entry(rule: Registration, schedule: Sequence[PeriodicEntry]) -> PeriodicEntry:
    """The schedule entry a rule runs (infra/eventbridge.py names it after the entry)."""
    (entry,) = [entry for entry in schedule if rule.name.endswith(f"-{entry.name}")]
    return entry


def runs_per_month(schedule: Every | Cron) -> float:
    """How often a month a schedule fires, on average over a year (UTC)."""
    if isinstance(schedule, Every):
        return HOURS_PER_MONTH * 3600 / schedule.seconds
    values = expand(schedule)
    start = date(_REFERENCE_YEAR, 1, 1)
    days = sum(
        1
        for offset in range(365)
        if (day := start + timedelta(days=offset)).day in values.days_of_month
        and day.month in values.months
        # Celery counts Sunday as 0; Python's weekday() counts Monday as 0.
        and (day.weekday() + 1) % 7 in values.days_of_week
    )
    return len(values.minutes) * len(values.hours) * days / 12


# --- text ---------------------------------------------------------------------------------


def money(value: float | None) -> str:
    return "no price" if value is None else f"${value:,.2f}"


def money_range(values: tuple[float, float]) -> str:
    low, high = values
    return money(low) if round(low, 2) == round(high, 2) else f"{money(low)}-{money(high)}"


def format_estimate(estimate: Estimate) -> list[str]:
    """The estimate as text lines (the plan's cost section)."""
    if estimate.prices is None:
        regions = ", ".join(available_regions())
        return [
            wrap(
                f"No price table for {estimate.region}: devtools/plan/prices/ has {regions}. "
                "Prices differ by region; add devtools/plan/prices/<region>.json from the AWS "
                "pricing pages to get an estimate.",
                "",
                "",
            )
        ]
    prices = estimate.prices
    rows = [
        (line.item, money(line.low), money(line.floor), money(line.high)) for line in estimate.lines
    ]
    total_low, total_high = estimate.totals
    rows.append(("Total", money(total_low), money(estimate.floor), money(total_high)))
    width = max(len(row[0]) for row in rows)
    lines = [
        f"Prices: {prices.region} of {prices.date} (devtools/plan/prices/{prices.path.name}), USD "
        "a month.",
    ]
    if prices.unchecked:
        lines.append(
            wrap(
                f"Not yet checked against AWS's price list files: {len(prices.unchecked)} of "
                f"the table's {len(prices.unchecked) + len(prices.data['priceList']['checked'])} "
                "list prices (its priceList section names each, with the offer file to check it "
                "against).",
                "",
            )
        )
    lines += [
        f"  {'':{width}}  {'at min count':>13}  {'floor':>9}  {'at max count':>13}",
    ]
    lines += [
        f"  {item:{width}}  {low:>13}  {floor:>9}  {high:>13}" for item, low, floor, high in rows
    ]
    if estimate.unpriced:
        unpriced = ", ".join(estimate.unpriced)
        lines.append(f"  The total leaves out what the table has no price for: {unpriced}.")
    lines.append("")
    lines.append(wrap(FLOOR_TEXT, ""))
    lines.append("What each line is for (the guarantee it serves, or the key that turns it on):")
    lines += [wrap(f"{line.item}: {line.need}.", "  ") for line in estimate.lines]
    lines.append("")
    if estimate.without_production is not None:
        more = total_low - estimate.without_production
        lines.append(
            wrap(
                f"Production adds {money(more)} a month at min count to the same config without "
                f"production: true ({money(estimate.without_production)}):",
                "",
            )
        )
        lines += [
            wrap(f"{kind}: {'+' if difference > 0 else '-'}{money(abs(difference))}: {why}.", "  ")
            for kind, difference, why in estimate.production_adds
        ]
        lines.append("")
    if estimate.savings:
        lines.append("Cheaper, with the same guarantees (stack config key: saving per month):")
        for saving in estimate.savings:
            lines.append(
                wrap(
                    f"{saving.setting}: saves {money_range(saving.low)} at min count, "
                    f"{money_range(saving.high)} at max count ({saving.why}).",
                    "  ",
                )
            )
    else:
        lines.append("Cheaper, with the same guarantees: nothing the table knows of.")
    lines += [wrap(f"Not offered: {refusal}.", "  ") for refusal in estimate.refused]
    lines.append("")
    lines.append("Assumptions:")
    lines += [wrap(assumption, "  - ", "    ") for assumption in estimate.assumptions]
    return lines


#: What the floor column is.
FLOOR_TEXT = (
    "Floor: what the same guarantees cannot cost less than at min count: the services' minimum "
    "task counts at Fargate's smallest size (0.25 vCPU, 0.5 GB) on the cheaper of ARM64 and "
    "their own capacity, the broker's nodes at the cheapest node the table lists, no opt-in "
    "line, everything else as rendered (each of those lines serves a guarantee, below)."
)


def wrap(text: str, first: str, rest: str | None = None) -> str:
    """``text`` filled to WIDTH, its first line indented by ``first``, the others by ``rest``
    (default: two more spaces)."""
    indent = rest if rest is not None else first + "  "
    return textwrap.fill(
        text, WIDTH, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False
    )


def markdown(estimate: Estimate) -> str:
    """The estimate's line items and savings as Markdown tables (the docs' cost page)."""
    assert estimate.prices is not None, "no price table"
    rows = [
        "| Item | Needed for | At min count | Floor | At max count |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    rows += [
        f"| {line.item} | {line.need} | {money(line.low)} | {money(line.floor)} | "
        f"{money(line.high)} |"
        for line in estimate.lines
    ]
    low, high = estimate.totals
    rows.append(
        f"| **Total** | | **{money(low)}** | **{money(estimate.floor)}** | **{money(high)}** |"
    )
    rows += [
        "",
        "| Cheaper, same guarantees | Saves at min count | Saves at max count |",
        "| --- | ---: | ---: |",
    ]
    rows += [
        f"| `{saving.setting}` ({saving.why}) | {money_range(saving.low)} | "
        f"{money_range(saving.high)} |"
        for saving in estimate.savings
    ]
    return "\n".join(rows) + "\n"
