"""Stack configuration: the ``celery-ecs:*`` keys, validated and defaulted.

The keys are declared once, in one table per section (``infra.config_tables``; the kinds of row
and their reader are ``infra.config_keys``): a row's type, default, production default, allowed
values and meaning drive the loaders below, their errors and the reference page. The rules
between keys are the loaders' code.

Pure logic, no Pulumi: ``load(raw)`` takes the namespace's raw values (top-level values arrive
as strings from the Pulumi CLI, objects and lists as JSON strings or already parsed) and returns
frozen dataclasses with every default filled in. Anything unknown, mistyped or unsafe raises
``ConfigError`` naming the full key path (``workers[1].minCount``) and what is allowed, so the
program can refuse a stack before it registers a single resource.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from celery_ecs.names import LIVENESS_PATH
from celery_ecs.schedule import (
    CRON_ALLOWED,
    Cron,
    PeriodicEntry,
    ScheduleFormatError,
    entries_from_mappings,
)
from infra.budget import (
    EXIT_MARGIN,
    BudgetError,
    WebBudget,
    WorkerBudget,
    longest_warm_task_timeout,
    web_budget,
    worker_budget,
)
from infra.config_keys import (
    ConfigError as ConfigError,  # re-exported: the program and tools catch it from here
)
from infra.config_keys import (
    Fields,
    Integer,
    describe,
    fail,
)
from infra.config_tables import (
    ALERTS,
    AWS_ACCESS,
    BACKLOG_ROUNDS,
    BROKER,
    BROKER_ENGINES,
    CPU_ARCHITECTURES,
    DEFAULT_CELERY_APP,
    DEFAULT_ENGINE_VERSIONS,
    DEFAULT_MAX_QUEUE_SECONDS,
    DEFAULT_QUEUES,
    DEFAULT_SCHEDULE,
    DEFAULT_WEB_COMMAND,
    DEFAULT_WEB_PORT,
    ENGINE_FAMILIES,
    EXAMPLE_ONLY_KEYS,
    EXISTING_VPC_KEYS,
    FARGATE_MEMORY,
    IMAGE,
    LOG_LEVELS,
    NAT_GATEWAYS,
    NETWORK,
    NEW_VPC_KEYS,
    SCHEDULERS,
    TARGET_LATENCY_SHARE,
    TOP_LEVEL,
    WEB,
    WORKER_POOL,
    AwsAccess,
    BrokerEngine,
    CpuArchitecture,
    LogLevel,
    NatGateways,
    Scheduler,
)
from infra.schedule_expr import ScheduleError, expand

T = TypeVar("T")


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


def load(raw: Mapping[str, object]) -> StackConfig:
    """Validate the namespace's raw values and fill every default. Raises ``ConfigError``."""
    if "imageUri" in raw:
        raise fail("imageUri", "replaced by image.uri", "image: {uri: <an image reference>}")
    # Production first: it picks every other row's default.
    production = Fields(raw, "", TOP_LEVEL.rows, strings_are_text=True).boolean("production")
    top = Fields(raw, "", TOP_LEVEL.rows, production=production, strings_are_text=True)
    celery_app = top.text_or_default("celeryApp")
    example = celery_app == DEFAULT_CELERY_APP
    web_raw = top.nested("web") or {}
    if not example:
        given = {
            "image": top.has("image"),
            "web.command": isinstance(web_raw, Mapping) and web_raw.get("command") is not None,
            "workers": top.has("workers"),
            "schedule": top.has("schedule"),
        }
        missing = [key for key in EXAMPLE_ONLY_KEYS if not given[key]]
        if missing:
            raise fail(
                missing[0],
                f"required with celeryApp {celery_app!r}: its default is the example app's "
                f"({DEFAULT_CELERY_APP}), which would not fit another app",
                _EXAMPLE_ONLY_ALLOWED[missing[0]],
            )

    max_countdown = top.integer("maxCountdown")
    image = _load_image(top.nested("image"))

    workers_raw = top.nested("workers")
    workers = (
        _load_workers(workers_raw, max_countdown)
        if workers_raw is not None
        else (_default_pool(max_countdown),)
    )
    # Graviton by default (about 20 % cheaper, the same image built for linux/arm64), unless a
    # pool asks for Fargate Spot, which runs X86_64 tasks only.
    spot = any(pool.fargate_spot for pool in workers)
    default_architecture: CpuArchitecture = "X86_64" if spot else "ARM64"
    cpu_architecture = top.choice(
        "cpuArchitecture", CPU_ARCHITECTURES, default=default_architecture
    )
    for index, pool in enumerate(workers):
        if pool.fargate_spot and cpu_architecture != "X86_64":
            # AWS: "Fargate Spot only supports Linux tasks with the X86_64 architecture."
            raise fail(
                f"workers[{index}].fargateSpot",
                f"Fargate Spot runs X86_64 tasks only, and cpuArchitecture is {cpu_architecture}",
                "false, or cpuArchitecture: X86_64",
            )

    schedule_raw = top.nested("schedule")
    schedule = _load_schedule(
        list(DEFAULT_SCHEDULE) if schedule_raw is None else schedule_raw, workers
    )

    return StackConfig(
        production=production,
        scheduler=top.choice("scheduler", SCHEDULERS),
        max_countdown=max_countdown,
        log_level=top.choice("logLevel", LOG_LEVELS),
        log_retention_days=top.integer("logRetentionDays"),
        image=image,
        workers=workers,
        web=_load_web(web_raw, production),
        broker=_load_broker(top.nested("broker") or {}, production),
        network=_load_network(top.nested("network") or {}, production),
        cpu_architecture=cpu_architecture,
        alerts=_load_alerts(top.nested("alerts") or {}, production=production),
        # Production keeps it (Security Hub ECS.12); elsewhere the app's own Workers metric
        # serves the alarms and scaling, and Container Insights would be the largest line of
        # a quiet stack's cost after compute.
        container_insights=top.boolean("containerInsights"),
        # Production keeps it; elsewhere the alarms, their states in the CloudWatch console and
        # their notifications are the same without it, and it is a line of its own in the cost.
        dashboard=top.boolean("dashboard"),
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
    fields = Fields(raw if raw is not None else {}, "image", IMAGE.rows)
    allowed = "either {context, dockerfile} (build) or {uri} (a prebuilt image), not both"
    uri = fields.text("uri")
    if uri is not None:
        built = [key for key in ("context", "dockerfile") if fields.has(key)]
        if built:
            raise fail(f"image.{built[0]}", "cannot be combined with image.uri", allowed)
        return PrebuiltImage(uri)
    context = posixpath.normpath(fields.text_or_default("context"))
    dockerfile = fields.text("dockerfile") or posixpath.join(context, "Dockerfile")
    return ImageBuild(context=context, dockerfile=posixpath.normpath(dockerfile))


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
                raise fail(f"schedule[{index}].cron", str(error), CRON_ALLOWED) from None
        if entry.queue not in consumed:
            raise fail(
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
        raise fail(
            "workers",
            f"expected a non-empty list, got {describe(raw)}",
            TOP_LEVEL.row("workers").allowed,
        )
    pools = tuple(_load_pool(item, f"workers[{i}]", max_countdown) for i, item in enumerate(raw))
    seen: set[str] = set()
    for index, pool in enumerate(pools):
        if pool.name in seen:
            raise fail(
                f"workers[{index}].name",
                f"duplicate pool name {pool.name!r}",
                "a name used by no other pool",
            )
        seen.add(pool.name)
    return pools


def _load_pool(raw: object, path: str, max_countdown: int) -> WorkerPool:
    fields = Fields(raw, path, WORKER_POOL.rows)
    name = fields.text("name")
    if name is None:
        raise fail(f"{path}.name", "required", fields.allowed("name"))
    queues = fields.text_list("queues")
    if not queues:
        raise fail(f"{path}.queues", "required (a non-empty list)", fields.allowed("queues"))
    concurrency = fields.integer("concurrency")
    min_count = fields.integer("minCount")
    max_count = fields.integer("maxCount", default=max(min_count, 4))
    if max_count < min_count:
        raise fail(
            f"{path}.maxCount",
            f"{max_count} is below minCount {min_count}",
            f"an integer >= {min_count}",
        )
    # The smallest Fargate size: it holds the example worker at its default concurrency with
    # the headroom above (TASK_MEMORY_HEADROOM, TASK_CPU_HEADROOM; bench.task_sizes).
    cpu, memory = _task_size(fields, path)
    # The rows' ranges are the budget's (MAX_TASK_TIMEOUT, the Fargate cap), which checks them
    # again for its other callers.
    task_timeout = fields.integer("taskTimeout")
    max_stop_timeout = fields.integer("maxStopTimeout")
    held_per_slot = fields.integer("heldPerSlot")
    # Absent: the budget's default for the pool's taskTimeout.
    prefetch = fields.integer("prefetchMultiplier") if fields.has("prefetchMultiplier") else None
    if prefetch is not None and prefetch > held_per_slot:
        raise fail(
            f"{path}.prefetchMultiplier",
            f"{prefetch} is above heldPerSlot {held_per_slot} (Celery caps the prefetch at the "
            "messages a worker holds)",
            f"an integer 1..{held_per_slot}, or a larger heldPerSlot",
        )
    budget = _catch_budget(
        path,
        lambda: worker_budget(
            task_timeout,
            max_stop_timeout=max_stop_timeout,
            prefetch_multiplier=prefetch,
            max_countdown=max_countdown,
            held_per_slot=held_per_slot,
        ),
    )
    fargate_spot = fields.boolean("fargateSpot")
    if fargate_spot and not budget.finishes_within_spot_notice:
        longest = longest_warm_task_timeout(max_stop_timeout)
        raise fail(
            f"{path}.fargateSpot",
            f"the pool's tasks do not finish within Fargate Spot's interruption notice (hard "
            f"limit {budget.time_limit} s + {EXIT_MARGIN} s to exit > maxStopTimeout "
            f"{max_stop_timeout} s: cold shutdown); they would start over at every interruption, "
            "and scale-in protection does not hold off Spot",
            "false" if longest is None else f"false, or taskTimeout <= {longest}",
        )
    max_queue_seconds = fields.integer("maxQueueSeconds")
    typical = fields.number("typicalTaskSeconds", at_most=float(task_timeout))
    backlog_per_task = (
        fields.integer("backlogPerTask")
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


def _task_size(fields: Fields, path: str) -> tuple[int, int]:
    """The task's cpu and memory: a pair Fargate offers. Memory's default is the row's when the
    cpu offers it, else the cpu's smallest."""
    cpu = fields.integer("cpu")
    offered = FARGATE_MEMORY[cpu]
    preferred = fields.row("memory", Integer).default
    memory = fields.integer("memory", default=preferred if preferred in offered else offered[0])
    if memory not in offered:
        raise fail(
            f"{path}.memory",
            f"{memory} MiB is not offered with cpu {cpu}",
            ", ".join(map(str, offered)),
        )
    return cpu, memory


def _load_web(raw: object, production: bool) -> WebConfig:
    fields = Fields(raw, "web", WEB.rows, production=production)
    cpu, memory = _task_size(fields, "web")
    min_count = fields.integer("minCount")
    max_count = fields.integer("maxCount", default=max(min_count, 4))
    if max_count < min_count:
        raise fail(
            "web.maxCount",
            f"{max_count} is below minCount {min_count}",
            f"an integer >= {min_count}",
        )
    request_timeout = fields.integer("requestTimeout")
    budget = _catch_budget("web", lambda: web_budget(request_timeout))
    certificate_arn = fields.text("certificateArn")
    allow_plain_http = fields.boolean("allowPlainHttp")
    if certificate_arn is not None and allow_plain_http:
        raise fail(
            "web.allowPlainHttp",
            "true, but web.certificateArn is set (HTTP is redirected to HTTPS)",
            "false, or leave web.certificateArn out",
        )
    if production and certificate_arn is None and not allow_plain_http:
        raise fail(
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
        deletion_protection=fields.boolean("deletionProtection"),
        target_cpu_percent=fields.integer("targetCpuPercent"),
        target_requests_per_task=(
            fields.integer("targetRequestsPerTask")
            if fields.has("targetRequestsPerTask")
            else None
        ),
        access_logs_bucket=fields.text("accessLogsBucket"),
        budget=budget,
        allow_plain_http=allow_plain_http,
        command=fields.command("command"),
        port=fields.integer("port"),
        liveness_path=fields.text_or_default("livenessPath"),
    )


def _load_broker(raw: object, production: bool) -> BrokerConfig:
    fields = Fields(raw, "broker", BROKER.rows, production=production)
    # Valkey: the same protocol and ElastiCache features, nodes 20 % cheaper than Redis OSS.
    engine = fields.choice("engine", BROKER_ENGINES)
    families = ENGINE_FAMILIES[engine]
    version_allowed = f"MAJOR.MINOR with major {', '.join(map(str, families))} for {engine}"
    version = fields.text("engineVersion") or DEFAULT_ENGINE_VERSIONS[engine]
    major = int(version.split(".")[0])
    if major not in families:
        raise fail("broker.engineVersion", f"{engine} {version} is not supported", version_allowed)
    return BrokerConfig(
        engine=engine,
        engine_version=version,
        parameter_group_family=families[major],
        node_type=fields.text_or_default("nodeType"),
        replicas=fields.integer("replicas"),
        snapshot_retention_days=fields.integer("snapshotRetentionDays"),
        auth_token_generation=fields.integer("authTokenGeneration"),
    )


def _load_network(raw: object, production: bool) -> NewVpc | ExistingVpc:
    if isinstance(raw, Mapping) and any(key in raw for key in EXISTING_VPC_KEYS):
        mixed = [key for key in NEW_VPC_KEYS if key in raw]
        if mixed:
            raise fail(
                f"network.{mixed[0]}",
                "cannot be combined with vpcId/publicSubnetIds/privateSubnetIds",
                "either {cidr, natGateways} (create a VPC) or "
                "{vpcId, publicSubnetIds, privateSubnetIds} (use an existing one)",
            )
        return _load_existing_vpc(raw)
    fields = Fields(raw, "network", NETWORK.rows, production=production)
    cidr = fields.text_or_default("cidr")
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError:
        raise fail(
            "network.cidr", f"{cidr!r} is not an IPv4 network", fields.allowed("cidr")
        ) from None
    if not 16 <= network.prefixlen <= 24:
        raise fail(
            "network.cidr", f"/{network.prefixlen} is out of range", fields.allowed("cidr")
        )
    nat = fields.choice("natGateways", NAT_GATEWAYS)
    if production and nat == "none":
        raise fail(
            "network.natGateways",
            "production tasks must not get public IPs (Security Hub ECS.2)",
            "single, perAz",
        )
    return NewVpc(cidr=str(network), nat_gateways=nat)


def _load_existing_vpc(raw: Mapping[str, object]) -> ExistingVpc:
    fields = Fields(raw, "network", NETWORK.only(EXISTING_VPC_KEYS))
    vpc_id = fields.text("vpcId")
    if vpc_id is None:
        raise fail(
            "network.vpcId",
            "required with publicSubnetIds/privateSubnetIds",
            fields.allowed("vpcId"),
        )
    subnets: dict[str, tuple[str, ...]] = {}
    for key in ("publicSubnetIds", "privateSubnetIds"):
        ids = fields.text_list(key)
        if ids is None or len(ids) < 2:
            raise fail(f"network.{key}", "at least two subnets are needed", fields.allowed(key))
        subnets[key] = ids
    access = fields.raw.get("privateSubnetsReachAws")
    if access not in AWS_ACCESS:
        problem = "required with vpcId" if access is None else f"unknown value {access!r}"
        raise fail(
            "network.privateSubnetsReachAws",
            f"{problem}: tasks in the private subnets pull the image from ECR (its layers from "
            "S3), write logs to CloudWatch Logs and read the broker URL from Secrets Manager, "
            "and the program cannot see your route tables; say how they reach AWS",
            fields.allowed("privateSubnetsReachAws"),
        )
    return ExistingVpc(
        vpc_id=vpc_id,
        public_subnet_ids=subnets["publicSubnetIds"],
        private_subnet_ids=subnets["privateSubnetIds"],
        aws_access=access,
    )


def _load_alerts(raw: object, *, production: bool = False) -> AlertsConfig:
    fields = Fields(raw, "alerts", ALERTS.rows, production=production)
    email = fields.text("email")
    topic_arn = fields.text("topicArn")
    if email is not None and topic_arn is not None:
        raise fail(
            "alerts.topicArn",
            "cannot be combined with alerts.email",
            "either email (a topic this stack creates) or topicArn (an existing topic)",
        )
    allow_silence = fields.boolean("allowNoNotifications")
    notifies = email is not None or topic_arn is not None
    if notifies and allow_silence:
        raise fail(
            "alerts.allowNoNotifications",
            f"true, but alerts.{'email' if email else 'topicArn'} is set",
            "false, or no alerts.email/alerts.topicArn",
        )
    if production and not notifies and not allow_silence:
        raise fail(
            "alerts.email",
            "production alarms must notify someone (set alerts.email or alerts.topicArn)",
            "an e-mail address, or alerts.topicArn: an SNS topic ARN, or "
            "alerts.allowNoNotifications: true to accept alarms that notify nobody",
        )
    return AlertsConfig(
        email=email,
        topic_arn=topic_arn,
        http_5xx_percent=fields.integer("http5xxPercent"),
        broker_memory_percent=fields.integer("brokerMemoryPercent"),
        broker_cpu_percent=fields.integer("brokerCpuPercent"),
        broker_connections=fields.integer("brokerConnections"),
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
