"""Stack configuration: the ``celery-ecs:*`` keys, validated and defaulted.

Pure logic, no Pulumi: ``load(raw)`` takes the namespace's raw values (top-level values arrive
as strings from the Pulumi CLI, objects and lists as JSON strings or already parsed) and returns
frozen dataclasses with every default filled in. Anything unknown, mistyped or unsafe raises
``ConfigError`` naming the full key path (``workers[1].minCount``) and what is allowed, so the
program can refuse a stack before it registers a single resource.
"""

from __future__ import annotations

import ipaddress
import json
import math
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

from celery_ecs.names import LIVENESS_PATH
from celery_ecs.schedule import (
    CRON_ALLOWED,
    QUEUE_NAME,
    QUEUE_NAME_ALLOWED,
    Cron,
    PeriodicEntry,
    ScheduleFormatError,
    entries_from_mappings,
)
from celery_ecs.settings import DEFAULT_HELD_PER_SLOT
from infra.budget import (
    EXIT_MARGIN,
    BudgetError,
    WebBudget,
    WorkerBudget,
    longest_warm_task_timeout,
    web_budget,
    worker_budget,
)
from infra.schedule_expr import ScheduleError, expand

Scheduler = Literal["beat", "eventbridge"]
NatGateways = Literal["none", "single", "perAz"]
AwsAccess = Literal["nat", "vpcEndpoints"]
BrokerEngine = Literal["redis", "valkey"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
CpuArchitecture = Literal["X86_64", "ARM64"]

SCHEDULERS: tuple[Scheduler, ...] = ("beat", "eventbridge")
NAT_GATEWAYS: tuple[NatGateways, ...] = ("none", "single", "perAz")
#: How an existing VPC's private subnets reach AWS. Without NAT, tasks need VPC endpoints
#: (``com.amazonaws.<region>.<name>``): ECR serves image layers from S3, so an S3 gateway
#: endpoint on the subnets' route tables, and interface endpoints ecr.api, ecr.dkr (ECR User
#: Guide, "Amazon ECR interface VPC endpoints (AWS PrivateLink)"), logs and secretsmanager.
AWS_ACCESS: tuple[AwsAccess, ...] = ("nat", "vpcEndpoints")
BROKER_ENGINES: tuple[BrokerEngine, ...] = ("redis", "valkey")
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: CPU architectures of Fargate Linux tasks (ARM64: Graviton).
CPU_ARCHITECTURES: tuple[CpuArchitecture, ...] = ("X86_64", "ARM64")
#: Retention periods CloudWatch Logs accepts (days).
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip
#: Engine -> supported major version -> parameter group family.
ENGINE_FAMILIES: dict[BrokerEngine, dict[int, str]] = {
    "redis": {7: "redis7"},
    "valkey": {7: "valkey7", 8: "valkey8"},
}
#: Version used when ``broker.engineVersion`` is not set.
DEFAULT_ENGINE_VERSIONS: dict[BrokerEngine, str] = {"redis": "7.1", "valkey": "8.0"}
#: Longest countdown/ETA accepted: the visibility timeout grows with it, and so does the delay
#: before a message lost with a crashed worker comes back.
MAX_COUNTDOWN_LIMIT = 86_400
DEFAULT_TASK_TIMEOUT = 300
#: Most messages a worker may be allowed to hold per task slot: the visibility timeout grows by
#: the hard time limit for each (``infra.budget.WorkerBudget.longest_unacked``).
MAX_HELD_PER_SLOT = 64
DEFAULT_CONCURRENCY = 2
#: Task sizes by default are the smallest Fargate size whose memory holds this many times the
#: service's measured peak (``python -m bench.task_sizes``; the README's "Task sizes") and whose
#: vCPU holds this many times its peak one-second CPU share.
TASK_MEMORY_HEADROOM = 2.0
TASK_CPU_HEADROOM = 2.0
#: Default backlog-per-task target = this x concurrency: every slot of a task has about this many
#: messages waiting behind it before the pool grows (see ``WorkerPool.backlog_per_task``).
BACKLOG_ROUNDS = 10
#: Seconds a message may wait in its queue by default before the queue-age alarm fires.
DEFAULT_MAX_QUEUE_SECONDS = 300
MIN_MAX_QUEUE_SECONDS = 30
#: Share of the acceptable latency a message waits when the pool holds its backlog target; the
#: rest is left for a burst's scale-out (a decision within a minute, a task start of about one).
TARGET_LATENCY_SHARE = 0.5
#: ElastiCache (Redis OSS, Valkey) accepts at most this many client connections per node.
ELASTICACHE_MAX_CONNECTIONS = 65_000


#: The app the stack runs unless told otherwise: the example in ``app/``. A stack naming another
#: ``celeryApp`` must give every other key below too (``EXAMPLE_ONLY_KEYS``): the example's
#: image, web command, queues and schedule would not fit its app.
DEFAULT_CELERY_APP = "app.celery_app"
#: The example's image: built from the project root's Dockerfile.
DEFAULT_IMAGE_CONTEXT = "."
DEFAULT_WEB_COMMAND: tuple[str, ...] = (
    "gunicorn",
    "--config",
    "python:app.gunicorn_conf",
    "app.web:create_app()",
)
#: The example's queues (``app.routing``): the default pool consumes both.
DEFAULT_QUEUES: tuple[str, ...] = ("default", "long")
#: The example's periodic entries, in the ``schedule`` key's format.
DEFAULT_SCHEDULE: tuple[dict[str, object], ...] = (
    {
        "name": "purge-expired-idempotency-keys",
        "task": "app.tasks.purge_expired_records",
        "every": 3600,
        "queue": "default",
    },
    {
        "name": "nightly-report",
        "task": "app.tasks.nightly_report",
        "cron": "30 2 * * *",
        "queue": "default",
    },
)
#: Keys whose defaults are the example app's, so required with another ``celeryApp``.
EXAMPLE_ONLY_KEYS = ("image", "web.command", "workers", "schedule")
DEFAULT_WEB_PORT = 8000
#: Ports below 1024 need CAP_NET_BIND_SERVICE, which the containers drop (they run as a user
#: with no capabilities, ``infra.containers``).
MIN_WEB_PORT = 1024
#: ALB health check paths are 1-1024 characters (ELBv2 API reference, CreateTargetGroup,
#: HealthCheckPath); here the characters an unencoded URL path takes.
_LIVENESS_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,1023}$")
#: A ``celery -A`` target: a module, optionally ``:attribute`` (Celery's ``find_app``).
_IDENTIFIER_PATH = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_CELERY_APP = re.compile(rf"^{_IDENTIFIER_PATH}(:{_IDENTIFIER_PATH})?$", re.ASCII)
CELERY_APP_ALLOWED = "a Python module path, optionally with :attribute (e.g. proj.celery:app)"
#: Longest argument of a command (ECS takes the whole container definition; this only catches
#: values pasted by mistake).
_MAX_ARGUMENT = 4096


def _fargate_memory_choices() -> dict[int, tuple[int, ...]]:
    def steps(low: int, high: int, step: int) -> tuple[int, ...]:
        return tuple(range(low, high + 1, step))

    return {
        256: (512, 1024, 2048),
        512: steps(1024, 4096, 1024),
        1024: steps(2048, 8192, 1024),
        2048: steps(4096, 16384, 1024),
        4096: steps(8192, 30720, 1024),
        8192: steps(16384, 61440, 4096),
        16384: steps(32768, 122880, 8192),
    }


#: Task CPU units -> memory sizes (MiB) Fargate offers with it.
FARGATE_MEMORY: dict[int, tuple[int, ...]] = _fargate_memory_choices()

_POOL_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_CERTIFICATE_ARN = re.compile(r"^arn:aws[a-z-]*:(acm|iam):[a-z0-9-]*:\d{12}:\S+$")
_NODE_TYPE = re.compile(r"^cache\.[a-z0-9]+\.[a-z0-9]+$")
_ENGINE_VERSION = re.compile(r"^(\d+)\.(\d+)$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ConfigError(ValueError):
    """Invalid stack configuration. The message starts with the key path."""


@dataclass(frozen=True)
class WorkerPool:
    """One worker pool = one ECS service consuming ``queues``."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    #: Seconds: the longest task this pool runs (the budget derives every timeout from it).
    task_timeout: int
    min_count: int
    max_count: int
    cpu: int
    memory: int
    #: Seconds ECS may wait between SIGTERM and SIGKILL (Fargate caps it at 120).
    max_stop_timeout: int
    #: Target of the scaling policies: waiting messages (summed over the pool's queues) per
    #: task. ``backlogPerTask`` if given, else derived from ``max_queue_seconds`` and
    #: ``typical_task_seconds`` (see ``backlog_target``), else ``BACKLOG_ROUNDS`` x concurrency.
    backlog_per_task: int
    budget: WorkerBudget
    #: Every task but the first runs on Fargate Spot (only pools whose tasks finish within the
    #: interruption notice: ``WorkerBudget.finishes_within_spot_notice``).
    fargate_spot: bool = False
    #: Seconds a message may wait in a queue of the pool: the queue-age alarm's threshold.
    max_queue_seconds: int = DEFAULT_MAX_QUEUE_SECONDS
    #: Seconds a typical task of the pool takes; None when not given.
    typical_task_seconds: float | None = None


@dataclass(frozen=True)
class ImageBuild:
    """Build the image: ``context`` and ``dockerfile`` relative to the project directory."""

    context: str
    dockerfile: str


@dataclass(frozen=True)
class PrebuiltImage:
    """Run an image built elsewhere; nothing is built."""

    uri: str


@dataclass(frozen=True)
class WebConfig:
    cpu: int
    memory: int
    min_count: int
    max_count: int
    #: Seconds a request may take.
    request_timeout: int
    certificate_arn: str | None
    deletion_protection: bool
    #: Average CPU utilisation (%) the web service scales to.
    target_cpu_percent: int
    #: Requests per task and minute the web service scales to; None = no request-count policy.
    target_requests_per_task: int | None
    access_logs_bucket: str | None
    budget: WebBudget
    #: The stack accepts a load balancer serving plain HTTP in production (no certificate).
    allow_plain_http: bool = False
    #: The web container's command (exec form, no shell) and the port it listens on.
    command: tuple[str, ...] = DEFAULT_WEB_COMMAND
    port: int = DEFAULT_WEB_PORT
    #: What the load balancer's and the container's health checks ask: 200 while alive.
    liveness_path: str = LIVENESS_PATH


@dataclass(frozen=True)
class BrokerConfig:
    engine: BrokerEngine
    engine_version: str
    parameter_group_family: str
    node_type: str
    replicas: int
    snapshot_retention_days: int
    #: Changing it generates a new AUTH token (see the README's token rotation).
    auth_token_generation: int


@dataclass(frozen=True)
class AlertsConfig:
    """Where alarm notifications go and the thresholds no other setting decides."""

    #: An address to subscribe to a topic this stack creates; None: no subscription.
    email: str | None
    #: An existing SNS topic to notify instead; None: the stack's own topic (if ``email``).
    topic_arn: str | None
    #: Percent of the load balancer's requests answered 5xx (by itself, or by the targets)
    #: above which the web alarms fire.
    http_5xx_percent: int
    #: ``DatabaseMemoryUsagePercentage`` above which the broker alarm fires (``noeviction``:
    #: at 100 % every publish is refused).
    broker_memory_percent: int
    #: ``EngineCPUUtilization`` (the Redis thread) above which the broker alarm fires.
    broker_cpu_percent: int
    #: ``CurrConnections`` above which the broker alarm fires.
    broker_connections: int
    #: The stack accepts alarms that notify nobody in production.
    allow_no_notifications: bool = False

    @property
    def notifies(self) -> bool:
        return self.email is not None or self.topic_arn is not None


@dataclass(frozen=True)
class NewVpc:
    """A VPC this stack creates: public subnets for the ALB (and tasks when there is no NAT),
    private subnets for the broker (and tasks when there is NAT), in two AZs."""

    cidr: str
    nat_gateways: NatGateways


@dataclass(frozen=True)
class ExistingVpc:
    """The user's VPC. Tasks run in the private subnets, which need a route to ECR, CloudWatch
    Logs and Secrets Manager (NAT or VPC endpoints)."""

    vpc_id: str
    public_subnet_ids: tuple[str, ...]
    private_subnet_ids: tuple[str, ...]
    #: How the private subnets reach ECR, S3, CloudWatch Logs and Secrets Manager, as the
    #: user states it (nothing offline can see their route tables).
    aws_access: AwsAccess = "nat"


@dataclass(frozen=True)
class StackConfig:
    production: bool
    scheduler: Scheduler
    max_countdown: int
    log_level: LogLevel
    log_retention_days: int
    image: ImageBuild | PrebuiltImage
    workers: tuple[WorkerPool, ...]
    web: WebConfig
    broker: BrokerConfig
    network: NewVpc | ExistingVpc
    #: CPU architecture of every task definition, and the platform the image is built for.
    cpu_architecture: CpuArchitecture = "X86_64"
    alerts: AlertsConfig = field(default_factory=lambda: _load_alerts({}))
    #: Container Insights on the cluster (its per-service metrics, billed as custom metrics).
    container_insights: bool = False
    #: The CloudWatch dashboard (a monthly price per dashboard); the alarms do not need it.
    dashboard: bool = False
    #: The ``celery -A`` target of the workers and beat.
    celery_app: str = DEFAULT_CELERY_APP
    #: Periodic entries: beat's, or one EventBridge rule each.
    schedule: tuple[PeriodicEntry, ...] = ()

    @property
    def image_uri(self) -> str | None:
        """The prebuilt image's reference; None when the stack builds the image."""
        return self.image.uri if isinstance(self.image, PrebuiltImage) else None

    @property
    def uses_fargate_spot(self) -> bool:
        return any(pool.fargate_spot for pool in self.workers)

    @property
    def tasks_in_public_subnets(self) -> bool:
        """True when tasks need a public IP to reach AWS APIs (created VPC without NAT)."""
        return isinstance(self.network, NewVpc) and self.network.nat_gateways == "none"


T = TypeVar("T")


def _fail(path: str, problem: str, allowed: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}; allowed: {allowed}")


class _Fields:
    """The members of one config object, read by key with the object's path in every error.

    ``strings_are_text`` marks the top level: the Pulumi CLI hands the program every top-level
    value as a string (numbers and booleans included, objects as JSON).
    """

    def __init__(
        self, raw: object, path: str, keys: Sequence[str], *, strings_are_text: bool = False
    ) -> None:
        if strings_are_text:
            raw = _parse_json_text(raw, path)
        if not isinstance(raw, Mapping):
            raise _fail(path or "config", f"expected an object, got {_describe(raw)}", "an object")
        unknown = sorted(str(key) for key in raw if key not in keys)
        if unknown:
            raise _fail(self._join(path, unknown[0]), "unknown key", ", ".join(keys))
        self.raw: Mapping[str, object] = raw
        self.path = path
        self.strings_are_text = strings_are_text

    @staticmethod
    def _join(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def key_path(self, key: str) -> str:
        return self._join(self.path, key)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def value(self, key: str) -> object:
        value = self.raw.get(key)
        if self.strings_are_text and isinstance(value, str):
            return _parse_scalar_text(value)
        return value

    def integer(
        self,
        key: str,
        default: int | None,
        low: int | None = None,
        high: int | None = None,
        why: str = "",
    ) -> int:
        """An integer member. Without ``low``/``high`` the range is left to the caller (the
        timeout budget checks its own inputs and says what it allows)."""
        path = self.key_path(key)
        if low is None:
            allowed = "an integer"
        elif high is None:
            allowed = f"an integer >= {low}"
        else:
            allowed = f"an integer {low}..{high}"
        if why:
            allowed += f" ({why})"
        value = self.value(key)
        if value is None:
            if default is None:
                raise _fail(path, "required", allowed)
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected an integer, got {_describe(value)}", allowed)
        if (low is not None and value < low) or (high is not None and value > high):
            raise _fail(path, f"{value} is out of range", allowed)
        return value

    def number(self, key: str, above: float, at_most: float, why: str) -> float | None:
        """An optional number (integer or decimal) in ``(above, at_most]``; None when absent."""
        path = self.key_path(key)
        allowed = f"a number > {above:g} and <= {at_most:g} ({why})"
        value = self.value(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"expected a number, got {_describe(value)}", allowed)
        if not above < value <= at_most:
            raise _fail(path, f"{value:g} is out of range", allowed)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.value(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _fail(
                self.key_path(key), f"expected a boolean, got {_describe(value)}", "true, false"
            )
        return value

    def text(
        self, key: str, pattern: re.Pattern[str] | None = None, allowed: str = "a string"
    ) -> str | None:
        path = self.key_path(key)
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, f"expected a non-empty string, got {_describe(value)}", allowed)
        if pattern is not None and not pattern.match(value):
            raise _fail(path, f"{value!r} is not valid", allowed)
        return value

    def choice(self, key: str, choices: Sequence[T], default: T) -> T:
        value = self.raw.get(key)
        if value is None:
            return default
        if value not in choices:
            raise _fail(
                self.key_path(key),
                f"unknown value {value!r}",
                ", ".join(str(choice) for choice in choices),
            )
        return cast(T, value)

    def text_list(self, key: str, item: re.Pattern[str], allowed: str) -> tuple[str, ...] | None:
        path = self.key_path(key)
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise _fail(path, f"expected a list, got {_describe(value)}", allowed)
        for index, entry in enumerate(value):
            if not isinstance(entry, str) or not item.match(entry):
                raise _fail(f"{path}[{index}]", f"{entry!r} is not valid", allowed)
        if len(set(value)) != len(value):
            raise _fail(path, "duplicate entries", allowed)
        return tuple(value)


def _describe(value: object) -> str:
    if isinstance(value, (bool, int, float, str)):
        kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
        return f"{kind} {json.dumps(value)}"
    containers: dict[type[object], str] = {list: "a list", dict: "an object"}
    return containers.get(type(value), type(value).__name__)


def _parse_json_text(value: object, path: str) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise _fail(path, f"not valid JSON ({error.msg})", "a JSON object or list") from None


def _parse_scalar_text(value: str) -> object:
    """'300' -> 300, 'true' -> True; anything else stays the string it is."""
    if re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if value.strip() in ("true", "false"):
        return value.strip() == "true"
    return value


TOP_LEVEL_KEYS = (
    "production", "scheduler", "maxCountdown", "logLevel", "logRetentionDays", "image",
    "celeryApp", "cpuArchitecture", "workers", "web", "broker", "network", "alerts",
    "containerInsights", "dashboard", "schedule",
)  # fmt: skip
IMAGE_KEYS = ("context", "dockerfile", "uri")
POOL_KEYS = (
    "name", "queues", "concurrency", "taskTimeout", "minCount", "maxCount", "cpu", "memory",
    "maxStopTimeout", "backlogPerTask", "fargateSpot", "maxQueueSeconds", "typicalTaskSeconds",
    "heldPerSlot",
)  # fmt: skip
ALERTS_KEYS = (
    "email", "topicArn", "http5xxPercent", "brokerMemoryPercent", "brokerCpuPercent",
    "brokerConnections", "allowNoNotifications",
)  # fmt: skip
WEB_KEYS = (
    "cpu", "memory", "minCount", "maxCount", "requestTimeout", "certificateArn",
    "deletionProtection", "targetCpuPercent", "targetRequestsPerTask", "accessLogsBucket",
    "allowPlainHttp", "command", "port", "livenessPath",
)  # fmt: skip
BROKER_KEYS = (
    "engine", "engineVersion", "nodeType", "replicas", "snapshotRetentionDays",
    "authTokenGeneration",
)  # fmt: skip
NEW_VPC_KEYS = ("cidr", "natGateways")
EXISTING_VPC_KEYS = ("vpcId", "publicSubnetIds", "privateSubnetIds", "privateSubnetsReachAws")


def load(raw: Mapping[str, object]) -> StackConfig:
    """Validate the namespace's raw values and fill every default. Raises ``ConfigError``."""
    if "imageUri" in raw:
        raise _fail("imageUri", "replaced by image.uri", "image: {uri: <an image reference>}")
    top = _Fields(dict(raw), "", TOP_LEVEL_KEYS, strings_are_text=True)
    production = top.boolean("production", False)
    celery_app = top.text("celeryApp", _CELERY_APP, CELERY_APP_ALLOWED) or DEFAULT_CELERY_APP
    example = celery_app == DEFAULT_CELERY_APP
    web_raw = _parse_json_text(top.raw.get("web"), "web") or {}
    if not example:
        given = {
            "image": top.has("image"),
            "web.command": isinstance(web_raw, Mapping) and web_raw.get("command") is not None,
            "workers": top.has("workers"),
            "schedule": top.has("schedule"),
        }
        missing = [key for key in EXAMPLE_ONLY_KEYS if not given[key]]
        if missing:
            raise _fail(
                missing[0],
                f"required with celeryApp {celery_app!r}: its default is the example app's "
                f"({DEFAULT_CELERY_APP}), which would not fit another app",
                _EXAMPLE_ONLY_ALLOWED[missing[0]],
            )

    max_countdown = top.integer(
        "maxCountdown", 300, 0, MAX_COUNTDOWN_LIMIT, "seconds; longest countdown/ETA of a task"
    )
    retention = top.integer("logRetentionDays", 365 if production else 30, 1)
    if retention not in LOG_RETENTION_DAYS:
        raise _fail(
            "logRetentionDays",
            f"{retention} is not a CloudWatch retention period",
            ", ".join(map(str, LOG_RETENTION_DAYS)),
        )
    image = _load_image(_parse_json_text(top.raw.get("image"), "image"))

    workers_raw = _parse_json_text(top.raw.get("workers"), "workers")
    workers = (
        _load_workers(workers_raw, max_countdown)
        if workers_raw is not None
        else (_default_pool(max_countdown),)
    )
    # Graviton by default (about 20 % cheaper, the same image built for linux/arm64), unless a
    # pool asks for Fargate Spot, which runs X86_64 tasks only.
    spot = any(pool.fargate_spot for pool in workers)
    default_architecture: CpuArchitecture = "X86_64" if spot else "ARM64"
    cpu_architecture = top.choice("cpuArchitecture", CPU_ARCHITECTURES, default_architecture)
    for index, pool in enumerate(workers):
        if pool.fargate_spot and cpu_architecture != "X86_64":
            # AWS: "Fargate Spot only supports Linux tasks with the X86_64 architecture."
            raise _fail(
                f"workers[{index}].fargateSpot",
                f"Fargate Spot runs X86_64 tasks only, and cpuArchitecture is {cpu_architecture}",
                "false, or cpuArchitecture: X86_64",
            )

    schedule_raw = _parse_json_text(top.raw.get("schedule"), "schedule")
    schedule = _load_schedule(
        list(DEFAULT_SCHEDULE) if schedule_raw is None else schedule_raw, workers
    )

    return StackConfig(
        production=production,
        scheduler=top.choice("scheduler", SCHEDULERS, "beat"),
        max_countdown=max_countdown,
        log_level=top.choice("logLevel", LOG_LEVELS, "INFO"),
        log_retention_days=retention,
        image=image,
        workers=workers,
        web=_load_web(web_raw, production),
        broker=_load_broker(_parse_json_text(top.raw.get("broker"), "broker") or {}, production),
        network=_load_network(
            _parse_json_text(top.raw.get("network"), "network") or {}, production
        ),
        cpu_architecture=cpu_architecture,
        alerts=_load_alerts(
            _parse_json_text(top.raw.get("alerts"), "alerts") or {}, production=production
        ),
        # Production keeps it (Security Hub ECS.12); elsewhere the app's own Workers metric
        # serves the alarms and scaling, and Container Insights would be the largest line of
        # a quiet stack's cost after compute.
        container_insights=top.boolean("containerInsights", production),
        # Production keeps it; elsewhere the alarms, their states in the CloudWatch console and
        # their notifications are the same without it, and it is a line of its own in the cost.
        dashboard=top.boolean("dashboard", production),
        celery_app=celery_app,
        schedule=schedule,
    )


_EXAMPLE_ONLY_ALLOWED = {
    "image": "{context, dockerfile} of your app's image, or {uri} of a prebuilt one",
    "web.command": "your web server's command, a list of arguments (exec form)",
    "workers": "pools consuming your app's queues",
    "schedule": "your app's periodic entries, or [] for none",
}


def _load_image(raw: object) -> ImageBuild | PrebuiltImage:
    """Exactly one of a build ({context, dockerfile}) and a prebuilt image ({uri}). Whether the
    Dockerfile exists is checked by the program (``infra.program.validate``), which knows the
    project directory."""
    fields = _Fields(raw if raw is not None else {}, "image", IMAGE_KEYS)
    allowed = "either {context, dockerfile} (build) or {uri} (a prebuilt image), not both"
    uri = fields.text("uri", re.compile(r"^\S+$"), "an image reference without spaces")
    if uri is not None:
        built = [key for key in ("context", "dockerfile") if fields.has(key)]
        if built:
            raise _fail(f"image.{built[0]}", "cannot be combined with image.uri", allowed)
        return PrebuiltImage(uri)
    paths: dict[str, str] = {}
    relative = "a path relative to the project directory (where Pulumi.yaml is)"
    for key in ("context", "dockerfile"):
        path = fields.text(key, re.compile(r"^[^/\s]\S*$"), relative)
        if path is not None:
            paths[key] = path
    context = posixpath.normpath(paths.get("context", DEFAULT_IMAGE_CONTEXT))
    dockerfile = posixpath.normpath(paths.get("dockerfile", posixpath.join(context, "Dockerfile")))
    return ImageBuild(context=context, dockerfile=dockerfile)


def _load_schedule(raw: object, workers: Sequence[WorkerPool]) -> tuple[PeriodicEntry, ...]:
    """The periodic entries; each one's crontab is read as Celery reads it, and its queue must
    be one a pool consumes (an entry sent where nobody listens would never run)."""
    try:
        entries = entries_from_mappings(raw, "schedule")
    except ScheduleFormatError as error:
        raise ConfigError(str(error)) from None
    consumed = [queue for pool in workers for queue in pool.queues]
    for index, entry in enumerate(entries):
        if isinstance(entry.schedule, Cron):
            try:
                expand(entry.schedule)
            except ScheduleError as error:
                raise _fail(f"schedule[{index}].cron", str(error), CRON_ALLOWED) from None
        if entry.queue not in consumed:
            raise _fail(
                f"schedule[{index}].queue",
                f"no pool consumes queue {entry.queue!r}",
                f"a queue of workers[].queues: {', '.join(dict.fromkeys(consumed))}",
            )
    return entries


def _default_pool(max_countdown: int) -> WorkerPool:
    return _load_pool(
        {"name": "default", "queues": list(DEFAULT_QUEUES)}, "workers[0]", max_countdown
    )


def _load_workers(raw: object, max_countdown: int) -> tuple[WorkerPool, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(
            "workers",
            f"expected a non-empty list, got {_describe(raw)}",
            "a list of worker pool objects",
        )
    pools = tuple(_load_pool(item, f"workers[{i}]", max_countdown) for i, item in enumerate(raw))
    seen: set[str] = set()
    for index, pool in enumerate(pools):
        if pool.name in seen:
            raise _fail(
                f"workers[{index}].name",
                f"duplicate pool name {pool.name!r}",
                "a name used by no other pool",
            )
        seen.add(pool.name)
    return pools


def _load_pool(raw: object, path: str, max_countdown: int) -> WorkerPool:
    fields = _Fields(raw, path, POOL_KEYS)
    name = fields.text(
        "name", _POOL_NAME, "1-32 lowercase letters, digits and dashes, starting with a letter"
    )
    if name is None:
        raise _fail(f"{path}.name", "required", "a DNS-safe pool name")
    queues = fields.text_list("queues", QUEUE_NAME, f"a list of queue names: {QUEUE_NAME_ALLOWED}")
    if not queues:
        raise _fail(f"{path}.queues", "required (a non-empty list)",
                    f"a list of queue names: {QUEUE_NAME_ALLOWED}")  # fmt: skip
    concurrency = fields.integer(
        "concurrency", DEFAULT_CONCURRENCY, 1, 256, "task slots per worker"
    )
    min_count = fields.integer(
        "minCount", 1, 1, None, "tasks; a queue must never sit without a consumer"
    )
    max_count = fields.integer("maxCount", max(min_count, 4), 1)
    if max_count < min_count:
        raise _fail(
            f"{path}.maxCount",
            f"{max_count} is below minCount {min_count}",
            f"an integer >= {min_count}",
        )
    # The smallest Fargate size: it holds the example worker at its default concurrency with
    # the headroom above (TASK_MEMORY_HEADROOM, TASK_CPU_HEADROOM; bench.task_sizes).
    cpu, memory = _task_size(fields, path, default_cpu=256, default_memory=512)
    # Ranges of the two timeouts are the budget's to decide (its errors name the key).
    task_timeout = fields.integer("taskTimeout", DEFAULT_TASK_TIMEOUT, why="seconds")
    max_stop_timeout = fields.integer("maxStopTimeout", 120, why="seconds")
    held_per_slot = fields.integer(
        "heldPerSlot",
        DEFAULT_HELD_PER_SLOT,
        1,
        MAX_HELD_PER_SLOT,
        "messages a worker holds per task slot, countdown/ETA ones included",
    )
    budget = _catch_budget(
        path,
        lambda: worker_budget(
            task_timeout,
            max_stop_timeout=max_stop_timeout,
            max_countdown=max_countdown,
            held_per_slot=held_per_slot,
        ),
    )
    fargate_spot = fields.boolean("fargateSpot", False)
    if fargate_spot and not budget.finishes_within_spot_notice:
        longest = longest_warm_task_timeout(max_stop_timeout)
        raise _fail(
            f"{path}.fargateSpot",
            f"the pool's tasks do not finish within Fargate Spot's interruption notice (hard "
            f"limit {budget.time_limit} s + {EXIT_MARGIN} s to exit > maxStopTimeout "
            f"{max_stop_timeout} s: cold shutdown); they would start over at every interruption, "
            "and scale-in protection does not hold off Spot",
            "false" if longest is None else f"false, or taskTimeout <= {longest}",
        )
    max_queue_seconds = fields.integer(
        "maxQueueSeconds",
        DEFAULT_MAX_QUEUE_SECONDS,
        MIN_MAX_QUEUE_SECONDS,
        86_400,
        "seconds a message may wait in the queue",
    )
    typical = fields.number(
        "typicalTaskSeconds", 0.0, float(task_timeout), "seconds, at most taskTimeout"
    )
    backlog_per_task = (
        fields.integer("backlogPerTask", None, 1, None, "waiting messages per running task")
        if fields.has("backlogPerTask")
        else backlog_target(concurrency, max_queue_seconds, typical)
    )
    return WorkerPool(
        name=name,
        queues=queues,
        concurrency=concurrency,
        task_timeout=task_timeout,
        min_count=min_count,
        max_count=max_count,
        cpu=cpu,
        memory=memory,
        max_stop_timeout=max_stop_timeout,
        backlog_per_task=backlog_per_task,
        budget=budget,
        fargate_spot=fargate_spot,
        max_queue_seconds=max_queue_seconds,
        typical_task_seconds=typical,
    )


def backlog_target(
    concurrency: int, max_queue_seconds: int, typical_task_seconds: float | None
) -> int:
    """Waiting messages per task the pool holds, from the latency the user accepts.

    A task works ``concurrency`` messages at a time, each ``typical_task_seconds`` long, so the
    last of ``n`` messages waiting behind it starts after ``n x typical / concurrency`` seconds.
    The target lets that be ``TARGET_LATENCY_SHARE`` of ``max_queue_seconds``. Without a
    typical duration nothing can be derived: ``BACKLOG_ROUNDS`` messages per slot.
    """
    if typical_task_seconds is None:
        return BACKLOG_ROUNDS * concurrency
    wait = TARGET_LATENCY_SHARE * max_queue_seconds
    return max(1, math.floor(wait * concurrency / typical_task_seconds))


def _catch_budget(path: str, derive: Callable[[], T]) -> T:
    """Run a budget function; its errors start with the offending key's name."""
    try:
        return derive()
    except BudgetError as error:
        message = str(error)
        key = message.split("=", 1)[0]
        if key == "maxCountdown":
            key_path = "maxCountdown"
        elif key.startswith("web."):
            key_path = key
        else:
            key_path = f"{path}.{key}"
        raise ConfigError(f"{key_path}: {message}") from None


def _task_size(
    fields: _Fields, path: str, *, default_cpu: int, default_memory: int
) -> tuple[int, int]:
    cpu_choices = ", ".join(map(str, FARGATE_MEMORY))
    cpu = fields.integer("cpu", default_cpu, 256, None, "Fargate CPU units")
    if cpu not in FARGATE_MEMORY:
        raise _fail(f"{path}.cpu", f"{cpu} is not a Fargate CPU size", cpu_choices)
    default = default_memory if default_memory in FARGATE_MEMORY[cpu] else FARGATE_MEMORY[cpu][0]
    memory = fields.integer("memory", default, 1, None, "MiB")
    if memory not in FARGATE_MEMORY[cpu]:
        raise _fail(
            f"{path}.memory",
            f"{memory} MiB is not offered with cpu {cpu}",
            ", ".join(map(str, FARGATE_MEMORY[cpu])),
        )
    return cpu, memory


def _load_web(raw: object, production: bool) -> WebConfig:
    fields = _Fields(raw, "web", WEB_KEYS)
    cpu, memory = _task_size(fields, "web", default_cpu=256, default_memory=512)
    min_count = fields.integer("minCount", 2 if production else 1, 1, None, "tasks")
    max_count = fields.integer("maxCount", max(min_count, 4), 1)
    if max_count < min_count:
        raise _fail(
            "web.maxCount",
            f"{max_count} is below minCount {min_count}",
            f"an integer >= {min_count}",
        )
    request_timeout = fields.integer("requestTimeout", 30, why="seconds")
    budget = _catch_budget("web", lambda: web_budget(request_timeout))
    certificate_arn = fields.text(
        "certificateArn", _CERTIFICATE_ARN, "an ACM (or IAM) certificate ARN"
    )
    allow_plain_http = fields.boolean("allowPlainHttp", False)
    if certificate_arn is not None and allow_plain_http:
        raise _fail(
            "web.allowPlainHttp",
            "true, but web.certificateArn is set (HTTP is redirected to HTTPS)",
            "false, or leave web.certificateArn out",
        )
    if production and certificate_arn is None and not allow_plain_http:
        raise _fail(
            "web.certificateArn",
            "required in production: without it the internet-facing load balancer serves "
            "plain HTTP only (Security Hub ELB.1)",
            "an ACM certificate ARN of the stack's account and region, or web.allowPlainHttp: "
            "true to accept plain HTTP",
        )
    return WebConfig(
        cpu=cpu,
        memory=memory,
        min_count=min_count,
        max_count=max_count,
        request_timeout=request_timeout,
        certificate_arn=certificate_arn,
        deletion_protection=fields.boolean("deletionProtection", production),
        target_cpu_percent=fields.integer("targetCpuPercent", 60, 10, 90, "percent"),
        target_requests_per_task=(
            fields.integer("targetRequestsPerTask", None, 1, None, "requests per task and minute")
            if fields.has("targetRequestsPerTask")
            else None
        ),
        access_logs_bucket=fields.text(
            "accessLogsBucket", _BUCKET_NAME, "an S3 bucket name the ALB may write to"
        ),
        budget=budget,
        allow_plain_http=allow_plain_http,
        command=_command(fields, "command", DEFAULT_WEB_COMMAND),
        port=fields.integer(
            "port",
            DEFAULT_WEB_PORT,
            MIN_WEB_PORT,
            65535,
            "the port the web command listens on; containers run without capabilities",
        ),
        liveness_path=fields.text(
            "livenessPath", _LIVENESS_PATH, "a URL path starting with /, at most 1024 characters"
        )
        or LIVENESS_PATH,
    )


def _command(fields: _Fields, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A container command in exec form: a non-empty list of non-empty strings. Whether the image
    can run it cannot be known offline (the image may not exist yet): the twin runs it."""
    path = fields.key_path(key)
    allowed = (
        'a non-empty list of arguments, e.g. ["gunicorn", "proj.wsgi"] (exec form: the process '
        "gets ECS's SIGTERM itself)"
    )
    value = fields.value(key)
    if value is None:
        return default
    if not isinstance(value, list) or not value:
        raise _fail(path, f"expected a non-empty list, got {_describe(value)}", allowed)
    for index, argument in enumerate(value):
        if not isinstance(argument, str) or not argument.strip():
            raise _fail(f"{path}[{index}]", f"expected a non-empty string, got "
                        f"{_describe(argument)}", allowed)  # fmt: skip
        if "\0" in argument or len(argument) > _MAX_ARGUMENT:
            raise _fail(f"{path}[{index}]", "a NUL character or longer than "
                        f"{_MAX_ARGUMENT} characters", allowed)  # fmt: skip
    return tuple(value)


def _load_broker(raw: object, production: bool) -> BrokerConfig:
    fields = _Fields(raw, "broker", BROKER_KEYS)
    # Valkey: the same protocol and ElastiCache features, nodes 20 % cheaper than Redis OSS.
    engine = fields.choice("engine", BROKER_ENGINES, "valkey")
    families = ENGINE_FAMILIES[engine]
    version_allowed = f"MAJOR.MINOR with major {', '.join(map(str, families))} for {engine}"
    version = fields.text("engineVersion", _ENGINE_VERSION, version_allowed)
    version = version or DEFAULT_ENGINE_VERSIONS[engine]
    major = int(version.split(".")[0])
    if major not in families:
        raise _fail("broker.engineVersion", f"{engine} {version} is not supported", version_allowed)
    return BrokerConfig(
        engine=engine,
        engine_version=version,
        parameter_group_family=families[major],
        node_type=fields.text(
            "nodeType", _NODE_TYPE, "an ElastiCache node type, e.g. cache.t4g.micro"
        )
        or "cache.t4g.micro",
        replicas=fields.integer(
            "replicas",
            1 if production else 0,
            0,
            5,
            ">= 1 turns on automatic failover and Multi-AZ",
        ),
        snapshot_retention_days=fields.integer(
            "snapshotRetentionDays", 7 if production else 1, 0, 35, "days"
        ),
        auth_token_generation=fields.integer(
            "authTokenGeneration", 1, 1, None, "change it to rotate the AUTH token"
        ),
    )


def _load_network(raw: object, production: bool) -> NewVpc | ExistingVpc:
    if isinstance(raw, Mapping) and any(key in raw for key in EXISTING_VPC_KEYS):
        mixed = [key for key in NEW_VPC_KEYS if key in raw]
        if mixed:
            raise _fail(
                f"network.{mixed[0]}",
                "cannot be combined with vpcId/publicSubnetIds/privateSubnetIds",
                "either {cidr, natGateways} (create a VPC) or "
                "{vpcId, publicSubnetIds, privateSubnetIds} (use an existing one)",
            )
        return _load_existing_vpc(raw)
    fields = _Fields(raw, "network", NEW_VPC_KEYS + EXISTING_VPC_KEYS)
    cidr = fields.text("cidr", None, "an IPv4 CIDR /16../24") or "10.0.0.0/16"
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError:
        raise _fail(
            "network.cidr", f"{cidr!r} is not an IPv4 network", "an IPv4 CIDR /16../24"
        ) from None
    if not 16 <= network.prefixlen <= 24:
        raise _fail(
            "network.cidr", f"/{network.prefixlen} is out of range", "an IPv4 CIDR /16../24"
        )
    default: NatGateways = "perAz" if production else "none"
    nat = fields.choice("natGateways", NAT_GATEWAYS, default)
    if production and nat == "none":
        raise _fail(
            "network.natGateways",
            "production tasks must not get public IPs (Security Hub ECS.2)",
            "single, perAz",
        )
    return NewVpc(cidr=str(network), nat_gateways=nat)


def _load_existing_vpc(raw: Mapping[str, object]) -> ExistingVpc:
    fields = _Fields(raw, "network", EXISTING_VPC_KEYS)
    vpc_id = fields.text("vpcId", _VPC_ID, "a VPC id (vpc-...)")
    if vpc_id is None:
        raise _fail(
            "network.vpcId", "required with publicSubnetIds/privateSubnetIds", "a VPC id (vpc-...)"
        )
    subnets: dict[str, tuple[str, ...]] = {}
    for key in ("publicSubnetIds", "privateSubnetIds"):
        allowed = "a list of >= 2 subnet ids (subnet-...) in distinct AZs"
        ids = fields.text_list(key, _SUBNET_ID, allowed)
        if ids is None or len(ids) < 2:
            raise _fail(f"network.{key}", "at least two subnets are needed", allowed)
        subnets[key] = ids
    access = fields.raw.get("privateSubnetsReachAws")
    if access not in AWS_ACCESS:
        problem = "required with vpcId" if access is None else f"unknown value {access!r}"
        raise _fail(
            "network.privateSubnetsReachAws",
            f"{problem}: tasks in the private subnets pull the image from ECR (its layers from "
            "S3), write logs to CloudWatch Logs and read the broker URL from Secrets Manager, "
            "and the program cannot see your route tables; say how they reach AWS",
            "nat (a NAT gateway or another route to the internet), vpcEndpoints (an S3 gateway "
            "endpoint on the private subnets' route tables and interface endpoints ecr.api, "
            "ecr.dkr, logs, secretsmanager with private DNS, admitting HTTPS from the tasks)",
        )
    return ExistingVpc(
        vpc_id=vpc_id,
        public_subnet_ids=subnets["publicSubnetIds"],
        private_subnet_ids=subnets["privateSubnetIds"],
        aws_access=access,
    )


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")


def _load_alerts(raw: object, *, production: bool = False) -> AlertsConfig:
    fields = _Fields(raw, "alerts", ALERTS_KEYS)
    email = fields.text("email", _EMAIL, "an e-mail address")
    topic_arn = fields.text("topicArn", _TOPIC_ARN, "an SNS topic ARN (arn:aws:sns:…)")
    if email is not None and topic_arn is not None:
        raise _fail(
            "alerts.topicArn",
            "cannot be combined with alerts.email",
            "either email (a topic this stack creates) or topicArn (an existing topic)",
        )
    allow_silence = fields.boolean("allowNoNotifications", False)
    notifies = email is not None or topic_arn is not None
    if notifies and allow_silence:
        raise _fail(
            "alerts.allowNoNotifications",
            f"true, but alerts.{'email' if email else 'topicArn'} is set",
            "false, or no alerts.email/alerts.topicArn",
        )
    if production and not notifies and not allow_silence:
        raise _fail(
            "alerts.email",
            "production alarms must notify someone (set alerts.email or alerts.topicArn)",
            "an e-mail address, or alerts.topicArn: an SNS topic ARN, or "
            "alerts.allowNoNotifications: true to accept alarms that notify nobody",
        )
    return AlertsConfig(
        email=email,
        topic_arn=topic_arn,
        http_5xx_percent=fields.integer("http5xxPercent", 5, 1, 100, "percent of requests"),
        broker_memory_percent=fields.integer(
            "brokerMemoryPercent", 80, 10, 95, "percent; at 100 noeviction refuses every write"
        ),
        broker_cpu_percent=fields.integer("brokerCpuPercent", 90, 10, 100, "percent"),
        broker_connections=fields.integer(
            "brokerConnections",
            ELASTICACHE_MAX_CONNECTIONS * 8 // 10,
            1,
            ELASTICACHE_MAX_CONNECTIONS,
            "client connections; ElastiCache accepts at most 65000",
        ),
        allow_no_notifications=allow_silence,
    )


#: The account AWS's documentation uses in examples; no real stack deploys to it. The offline
#: renders (tests, ``make plan``) run as this account, so a placeholder passes there and is
#: refused by a deploy to a real account.
DOCUMENTATION_ACCOUNT = "123456789012"
#: Names reserved for examples and tests (RFC 2606): mail to them never arrives.
RESERVED_TOP_LEVEL = ("example", "test", "invalid", "localhost")
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")


def placeholders(config: StackConfig) -> tuple[str, ...]:
    """Values that are documentation examples, not the user's own: each names its key, what
    gives it away and what to do."""
    found: list[str] = []
    arns = {
        "web.certificateArn": config.web.certificate_arn,
        "alerts.topicArn": config.alerts.topic_arn,
    }
    for key, arn in arns.items():
        if arn is not None and arn.split(":")[4] == DOCUMENTATION_ACCOUNT:
            found.append(
                f"{key}: {arn} is in account {DOCUMENTATION_ACCOUNT}, AWS's documentation "
                "example; replace it with the ARN of your own"
            )
    if config.alerts.email is not None:
        domain = config.alerts.email.rsplit("@", 1)[1].lower()
        labels = domain.split(".")
        if labels[-1] in RESERVED_TOP_LEVEL or ".".join(labels[-2:]) in RESERVED_DOMAINS:
            found.append(
                f"alerts.email: {config.alerts.email} is at {domain}, a domain reserved for "
                "examples that receives no mail; replace it with an address that is read"
            )
    return tuple(found)
