"""Stack configuration: the ``celery-ecs:*`` keys, validated and defaulted.

The keys are declared once, in one table per section (``TOP_LEVEL``, ``IMAGE``, ``WORKER_POOL``,
``WEB``, ``SCHEDULE_ENTRY``, ``BROKER``, ``NETWORK``, ``ALERTS``; the kinds of row and their
reader are ``infra.config_keys``): a row's type, default, production default, allowed values and
meaning drive the loaders below, their errors and the reference page. The rules between keys
are the loaders' code.

Pure logic, no Pulumi: ``load(raw)`` takes the namespace's raw values (top-level values arrive
as strings from the Pulumi CLI, objects and lists as JSON strings or already parsed) and returns
frozen dataclasses with every default filled in. Anything unknown, mistyped or unsafe raises
``ConfigError`` naming the full key path (``workers[1].minCount``) and what is allowed, so the
program can refuse a stack before it registers a single resource.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from celery_ecs.names import LIVENESS_PATH
from celery_ecs.schedule import (
    ARGS_ALLOWED,
    CRON_ALLOWED,
    ENTRY_NAME_ALLOWED,
    EVERY_ALLOWED,
    KWARGS_ALLOWED,
    QUEUE_NAME,
    QUEUE_NAME_ALLOWED,
    TASK_NAME_ALLOWED,
    Cron,
    PeriodicEntry,
    ScheduleFormatError,
    entries_from_mappings,
)
from celery_ecs.settings import DEFAULT_HELD_PER_SLOT
from infra.budget import (
    EXIT_MARGIN,
    FARGATE_STOP_TIMEOUT_CAP,
    MAX_TASK_TIMEOUT,
    BudgetError,
    WebBudget,
    WorkerBudget,
    longest_warm_task_timeout,
    web_budget,
    worker_budget,
)
from infra.config_keys import (
    Boolean,
    Choice,
    Command,
    Described,
    Fields,
    Integer,
    Key,
    Number,
    Object,
    ObjectList,
    Section,
    Text,
    TextList,
    describe,
    fail,
)
from infra.config_keys import (
    ConfigError as ConfigError,  # re-exported: the program and tools catch it from here
)
from infra.schedule_expr import ScheduleError, expand

T = TypeVar("T")

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


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_RELATIVE_PATH = re.compile(r"^[^/\s]\S*$")
_RELATIVE_PATH_ALLOWED = "a path relative to the project directory (where Pulumi.yaml is)"


# ----------------------------------------------------------------------------------------------
# The keys: one table per section (``infra.config_keys``). Each row drives which keys a section
# accepts, how its value is read and checked, the error's allowed text and the reference page
# (docs/reference/configuration.md, written by ``python -m devtools.docs``). Rules between keys
# are code, in the loaders below.


def _fargate_pairs() -> str:
    """The memory sizes Fargate offers with each CPU size, as the allowed text states them."""
    parts = []
    for cpu, memories in FARGATE_MEMORY.items():
        steps = {high - low for low, high in itertools.pairwise(memories)}
        if len(memories) > 3 and len(steps) == 1:
            parts.append(f"{cpu}: {memories[0]}..{memories[-1]} in steps of {steps.pop()}")
        else:
            parts.append(f"{cpu}: {', '.join(map(str, memories))}")
    return "MiB Fargate offers with the task's cpu (" + "; ".join(parts) + ")"


def _task_size_keys(role: str, default_cpu: int, default_memory: int) -> tuple[Key, Key]:
    measured = "[measured](../explanation/task-sizes.md)"
    return (
        Integer(
            name="cpu",
            default=default_cpu,
            choices=tuple(FARGATE_MEMORY),
            choices_are="a Fargate CPU size",
            unit="CPU units",
            meaning=f"CPU of a {role} task (1024 units = 1 vCPU); the default is {measured}.",
        ),
        Integer(
            name="memory",
            default=default_memory,
            low=1,
            unit="MiB",
            allowed_text=_fargate_pairs(),
            default_text=f"{default_memory}, or the smallest `cpu` offers",
            meaning=f"Memory of a {role} task; the default is {measured}.",
        ),
    )


IMAGE = Section(
    path="image",
    intro="The image every container runs: built from a Dockerfile (`context`, `dockerfile`) "
    "or prebuilt (`uri`), not both.",
    rows=(
        Text(
            name="context",
            pattern=_RELATIVE_PATH,
            allowed_text=_RELATIVE_PATH_ALLOWED,
            default=DEFAULT_IMAGE_CONTEXT,
            type_name="string (path)",
            meaning="Build the image from this context, for the stack's `cpuArchitecture`, and "
            "push it to the stack's repository by digest. A missing context is refused before "
            "any resource.",
        ),
        Text(
            name="dockerfile",
            pattern=_RELATIVE_PATH,
            allowed_text=_RELATIVE_PATH_ALLOWED,
            default_text="`<context>/Dockerfile`",
            type_name="string (path)",
            meaning="The Dockerfile of the build. A missing Dockerfile is refused before any "
            "resource.",
        ),
        Text(
            name="uri",
            pattern=re.compile(r"^\S+$"),
            allowed_text="an image reference without spaces",
            default_text="none (build)",
            meaning="A prebuilt image to run; nothing is built (use a digest or a unique tag). "
            "Replaces the former top-level `imageUri`, which is refused with a pointer here.",
        ),
    ),
)

WORKER_POOL = Section(
    path="workers[]",
    intro="One ECS service per pool. Every queue a `schedule` entry names must be consumed by a "
    "pool; the queues your app's own code routes to are yours to cover (the stack does not "
    "import the app).",
    rows=(
        Text(
            name="name",
            pattern=_POOL_NAME,
            allowed_text="1-32 lowercase letters, digits and dashes, starting with a letter; "
            "unique among the pools",
            default_text="required",
            meaning="Pool name (`CELERY_POOL_NAME`), part of its service's name.",
        ),
        TextList(
            name="queues",
            item=QUEUE_NAME,
            allowed_text=f"a list of queue names: {QUEUE_NAME_ALLOWED}",
            default_text="required",
            meaning="Queues the pool consumes (`celery worker --queues`).",
        ),
        Integer(
            name="concurrency",
            default=DEFAULT_CONCURRENCY,
            low=1,
            high=256,
            why="task slots per worker",
            meaning="Task slots per worker task.",
        ),
        Integer(
            name="taskTimeout",
            default=DEFAULT_TASK_TIMEOUT,
            low=1,
            high=MAX_TASK_TIMEOUT,
            why="seconds; longer work must be split, or a crashed run would only be "
            "redelivered after more than a day",
            unit="s",
            meaning="The longest task the pool runs: the [budget](../explanation/"
            "timeout-budget.md) derives everything else from it.",
        ),
        Integer(
            name="minCount",
            default=1,
            low=1,
            why="tasks; a queue must never sit without a consumer",
            meaning="Fewest tasks; a queue never sits without a consumer.",
        ),
        Integer(
            name="maxCount",
            low=1,
            default_text="max(4, `minCount`)",
            meaning="Most tasks; at least `minCount`.",
        ),
        *_task_size_keys("worker", default_cpu=256, default_memory=512),
        Integer(
            name="maxStopTimeout",
            default=FARGATE_STOP_TIMEOUT_CAP,
            low=EXIT_MARGIN + 1,
            high=FARGATE_STOP_TIMEOUT_CAP,
            why="seconds; Fargate waits at most 120 s between SIGTERM and SIGKILL",
            unit="s",
            meaning="Longest wait ECS may have between SIGTERM and SIGKILL.",
        ),
        Integer(
            name="backlogPerTask",
            low=1,
            why="waiting messages per running task",
            default_text="derived from `maxQueueSeconds` and `typicalTaskSeconds`, else "
            f"{BACKLOG_ROUNDS} x `concurrency`",
            meaning="The direct knob, and it wins: scaling target in waiting messages (summed "
            "over the pool's queues) per task. Lower it for long tasks.",
        ),
        Boolean(
            name="fargateSpot",
            default=False,
            meaning="The pool's first task on regular Fargate (its queues keep a consumer when "
            "Spot capacity runs out), every other on Fargate Spot. Only for a pool whose tasks "
            "finish within Spot's 2-minute notice (warm shutdown: `taskTimeout` ≤ 100 at the "
            "default `maxStopTimeout`) and with `cpuArchitecture: X86_64`; see [Fargate Spot]"
            "(../explanation/timeout-budget.md) and [turning it on or off](#fargate-spot-on-or-"
            "off).",
        ),
        Integer(
            name="maxQueueSeconds",
            default=DEFAULT_MAX_QUEUE_SECONDS,
            low=MIN_MAX_QUEUE_SECONDS,
            high=86_400,
            why="seconds a message may wait in the queue",
            unit="s",
            meaning="How long a message may wait in the pool's queues: the queue-age alarm "
            "fires above it, and with `typicalTaskSeconds` it sets the scaling target.",
        ),
        Number(
            name="typicalTaskSeconds",
            above=0.0,
            at_most_key="taskTimeout",
            why="seconds, at most taskTimeout",
            unit="s",
            meaning="How long a typical task of the pool takes. With it the target is "
            "floor(`maxQueueSeconds` x `concurrency` / (2 x `typicalTaskSeconds`)), at least 1: "
            "at the target a message waits half the acceptable latency, the other half is left "
            "for a burst's scale-out (a decision within a minute, a task start of about one).",
        ),
        Integer(
            name="heldPerSlot",
            default=DEFAULT_HELD_PER_SLOT,
            low=1,
            high=MAX_HELD_PER_SLOT,
            why="messages a worker holds per task slot, countdown/ETA ones included",
            meaning="Most messages a worker of the pool holds per task slot "
            "(`CELERY_HELD_PER_SLOT`). Each one more adds the hard time limit to the pool's "
            "visibility timeout; fewer means a worker full of messages waiting for their ETA "
            "stops taking others sooner. 1 or 2 suits long-task pools.",
        ),
    ),
)

WEB = Section(
    path="web",
    intro="The web producer behind the load balancer.",
    rows=(
        *_task_size_keys("web", default_cpu=256, default_memory=512),
        Integer(
            name="minCount",
            default=1,
            production=2,
            low=1,
            why="tasks",
            meaning="Fewest web tasks.",
        ),
        Integer(
            name="maxCount",
            low=1,
            default_text="max(4, `minCount`)",
            meaning="Most web tasks; at least `minCount`.",
        ),
        Integer(
            name="requestTimeout",
            default=30,
            low=1,
            high=FARGATE_STOP_TIMEOUT_CAP - EXIT_MARGIN,
            why="seconds; a request in flight at SIGTERM must finish before Fargate's 120 s "
            "SIGKILL",
            unit="s",
            meaning="Request limit; sets the ALB idle timeout, deregistration delay and stop "
            "timeout.",
        ),
        Text(
            name="certificateArn",
            pattern=_CERTIFICATE_ARN,
            allowed_text="an ACM (or IAM) certificate ARN of the stack's account and region",
            production_text="required, or `web.allowPlainHttp`",
            meaning="HTTPS on 443 (`ELBSecurityPolicy-TLS13-1-2-2021-06`) plus HTTP→HTTPS "
            "redirect. Without it the ALB serves plain HTTP only, which production refuses "
            "unless `web.allowPlainHttp: true`.",
        ),
        Boolean(
            name="deletionProtection",
            default=False,
            production=True,
            meaning="ALB deletion protection.",
        ),
        Integer(
            name="targetCpuPercent",
            default=60,
            low=10,
            high=90,
            why="percent",
            unit="%",
            meaning="CPU scaling target.",
        ),
        Integer(
            name="targetRequestsPerTask",
            low=1,
            why="requests per task and minute",
            meaning="Adds request-count scaling (requests per task per minute).",
        ),
        Text(
            name="accessLogsBucket",
            pattern=_BUCKET_NAME,
            allowed_text="an S3 bucket name the ALB may write to",
            meaning="ALB access logs; the bucket policy must allow ELB log delivery.",
        ),
        Boolean(
            name="allowPlainHttp",
            default=False,
            meaning="Production accepts a load balancer without a certificate, serving plain "
            "HTTP on the internet (ELB.1 not met). The name says what is given up. Not with "
            "`certificateArn`.",
        ),
        Command(
            name="command",
            default=DEFAULT_WEB_COMMAND,
            meaning="The web container's command, run without a shell so the server itself "
            "gets ECS's SIGTERM (the default is the example app's). Required with another "
            "`celeryApp`. Whether the image can run it cannot be known offline: the twin "
            "(`make run`) runs it.",
        ),
        Integer(
            name="port",
            default=DEFAULT_WEB_PORT,
            low=MIN_WEB_PORT,
            high=65535,
            why="the port the web command listens on; containers run without capabilities",
            meaning="Port the web command listens on (`WEB_PORT`): the container port, the "
            "target group's and the security groups'. Below 1024 a process without "
            "capabilities (the containers drop them all) cannot listen.",
        ),
        Text(
            name="livenessPath",
            pattern=_LIVENESS_PATH,
            allowed_text="a URL path starting with /, at most 1024 characters",
            default=LIVENESS_PATH,
            meaning="What the load balancer's and the container's health checks ask; 200 means "
            "alive. Point it at a path that does not call the broker (a broker outage would "
            f"otherwise replace every web task). Set as `WEB_LIVENESS_PATH` when not "
            f"`{LIVENESS_PATH}`.",
        ),
    ),
)

SCHEDULE_ENTRY = Section(
    path="schedule[]",
    intro="A periodic entry; read and checked by `celery_ecs.schedule`, as beat reads it. "
    "Entry names are unique.",
    rows=(
        Described(
            name="name",
            type_name="string",
            allowed_text=ENTRY_NAME_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="required",
            meaning="Beat's entry name; with EventBridge part of the rule's name and what each "
            "slot is claimed for (`--name`).",
        ),
        Described(
            name="task",
            type_name="string",
            allowed_text=TASK_NAME_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="required",
            meaning="The registered Celery task to send. Whether the app registers it cannot be "
            "known offline: the enqueue command refuses an unknown task (exit 2), beat sends "
            "it and the worker logs it as unregistered.",
        ),
        Described(
            name="cron",
            type_name="string",
            allowed_text=CRON_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="`cron` or `every`, required",
            meaning="When the entry runs (UTC), each field checked as Celery reads it (day of "
            "week 0-6 = Sunday-Saturday, or names). With `scheduler: eventbridge` only what "
            "EventBridge can express exactly: no crontab restricting both days unless it is "
            "the n-th weekday ([translation](../explanation/schedule-translation.md)); "
            "otherwise refused with the entry named.",
        ),
        Described(
            name="every",
            type_name="int (s)",
            allowed_text=EVERY_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="`cron` or `every`, required",
            meaning="Run every so many seconds. With `scheduler: eventbridge` whole minutes "
            "only.",
        ),
        Described(
            name="queue",
            type_name="string",
            allowed_text=QUEUE_NAME_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="required",
            meaning="Where the task is sent: a queue some `workers[].queues` consumes (an "
            "entry naming a queue no pool consumes is refused: its tasks would never run).",
        ),
        Described(
            name="args",
            type_name="list",
            allowed_text=ARGS_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="`[]`",
            meaning="The task's positional arguments. With EventBridge, the rendered overrides "
            "at most 8192 characters (RunTask's limit) and no `<time>` in them.",
        ),
        Described(
            name="kwargs",
            type_name="object",
            allowed_text=KWARGS_ALLOWED,
            read_by="celery_ecs.schedule",
            default_text="`{}`",
            meaning="The task's keyword arguments (the same limits as `args`).",
        ),
    ),
)


def _engine_versions() -> str:
    return "MAJOR.MINOR with major " + "; ".join(
        f"{', '.join(map(str, families))} for {engine}"
        for engine, families in ENGINE_FAMILIES.items()
    )


BROKER = Section(
    path="broker",
    intro="The ElastiCache replication group (one shard, cluster mode off: kombu has no cluster "
    "transport).",
    rows=(
        Choice(
            name="engine",
            choices=BROKER_ENGINES,
            default="valkey",
            meaning="ElastiCache engine. Valkey speaks the same protocol and commands (the "
            "runtime's tests run on redis-server) and its nodes cost 20 % less. Changing it on "
            "a deployed stack replaces the broker (queued messages are lost).",
        ),
        Text(
            name="engineVersion",
            pattern=_ENGINE_VERSION,
            allowed_text=_engine_versions(),
            default_text=" / ".join(
                f"{version} ({engine})" for engine, version in DEFAULT_ENGINE_VERSIONS.items()
            ),
            meaning="The parameter group family follows it.",
        ),
        Text(
            name="nodeType",
            pattern=_NODE_TYPE,
            allowed_text="an ElastiCache node type, e.g. cache.t4g.micro",
            default="cache.t4g.micro",
            meaning="Node size ([when one broker is not enough](../how-to/broker-capacity.md)).",
        ),
        Integer(
            name="replicas",
            default=0,
            production=1,
            low=0,
            high=5,
            why=">= 1 turns on automatic failover and Multi-AZ",
            meaning="Read replicas; ≥ 1 turns on automatic failover and Multi-AZ.",
        ),
        Integer(
            name="snapshotRetentionDays",
            default=1,
            production=7,
            low=0,
            high=35,
            why="days",
            unit="days",
            meaning="Automatic backups (deleted with the broker; production also takes a final "
            "snapshot, which is kept: see [what a destroy keeps](../how-to/deploy.md#destroy)).",
        ),
        Integer(
            name="authTokenGeneration",
            default=1,
            low=1,
            why="change it to rotate the AUTH token",
            meaning="Change it (e.g. 1 → 2) to rotate the AUTH token: see [token rotation]"
            "(../how-to/rotate-broker-token.md).",
        ),
    ),
)

#: A VPC this stack creates, or the user's (the two forms do not mix).
NEW_VPC_KEYS = ("cidr", "natGateways")
EXISTING_VPC_KEYS = ("vpcId", "publicSubnetIds", "privateSubnetIds", "privateSubnetsReachAws")
_SUBNETS_ALLOWED = "a list of >= 2 subnet ids (subnet-...) in distinct AZs"

NETWORK = Section(
    path="network",
    intro="A VPC the stack creates (`cidr`, `natGateways`; 2 AZs, public and private subnets) "
    "or an existing one (`vpcId`, `publicSubnetIds`, `privateSubnetIds`, "
    "`privateSubnetsReachAws`), not both. See [Network choice]"
    "(../explanation/infrastructure.md#network-choice).",
    rows=(
        Text(
            name="cidr",
            allowed_text="an IPv4 CIDR /16../24",
            default="10.0.0.0/16",
            meaning="CIDR of the created VPC.",
        ),
        Choice(
            name="natGateways",
            choices=NAT_GATEWAYS,
            default="none",
            production="perAz",
            meaning="`none`: tasks in public subnets with public IPs (security groups admit only "
            "the ALB); production refuses it (Security Hub ECS.2). Otherwise tasks in private "
            "subnets behind NAT.",
        ),
        Text(
            name="vpcId",
            pattern=_VPC_ID,
            allowed_text="a VPC id (vpc-...)",
            meaning="Use this VPC instead of creating one. Tasks and broker go in the private "
            "subnets, which need NAT or VPC endpoints for ECR, CloudWatch Logs and Secrets "
            "Manager: see `privateSubnetsReachAws`.",
        ),
        TextList(
            name="publicSubnetIds",
            item=_SUBNET_ID,
            allowed_text=_SUBNETS_ALLOWED,
            default_text="required with `vpcId`",
            meaning="Subnets of the load balancer.",
        ),
        TextList(
            name="privateSubnetIds",
            item=_SUBNET_ID,
            allowed_text=_SUBNETS_ALLOWED,
            default_text="required with `vpcId`",
            meaning="Subnets of the tasks and the broker.",
        ),
        Choice(
            name="privateSubnetsReachAws",
            choices=AWS_ACCESS,
            allowed_text="nat (a NAT gateway or another route to the internet), vpcEndpoints "
            "(an S3 gateway endpoint on the private subnets' route tables and interface "
            "endpoints ecr.api, ecr.dkr, logs, secretsmanager with private DNS, admitting HTTPS "
            "from the tasks)",
            default_text="required with `vpcId`",
            meaning="How the private subnets reach AWS, as you know it and the program cannot "
            "see: tasks there pull the image from ECR (its layers from S3), write logs to "
            "CloudWatch Logs and read the broker URL from Secrets Manager. Without it "
            "validation explains what the tasks need.",
        ),
    ),
)

ALERTS = Section(
    path="alerts",
    intro="Where the alarms notify, and the thresholds no other key decides.",
    rows=(
        Text(
            name="email",
            pattern=_EMAIL,
            allowed_text="an e-mail address",
            production_text="required (or `topicArn`, or `allowNoNotifications`)",
            meaning="Creates an SNS topic (encrypted with a KMS key of its own) subscribed by "
            "this address: confirm the e-mail AWS sends. Every alarm notifies it on ALARM and "
            "on OK. Not with `topicArn`.",
        ),
        Text(
            name="topicArn",
            pattern=_TOPIC_ARN,
            allowed_text="an SNS topic ARN (arn:aws:sns:…)",
            meaning="Notify an existing topic instead. Its policy must let "
            "`cloudwatch.amazonaws.com` publish (and its KMS key, if encrypted, let it use the "
            "key).",
        ),
        Integer(
            name="http5xxPercent",
            default=5,
            low=1,
            high=100,
            why="percent of requests",
            unit="%",
            meaning="5xx rate (of requests, minutes with at least 20) above which the two web "
            "alarms fire.",
        ),
        Integer(
            name="brokerMemoryPercent",
            default=80,
            low=10,
            high=95,
            why="percent; at 100 noeviction refuses every write",
            unit="%",
            meaning="`DatabaseMemoryUsagePercentage` above which the broker memory alarm fires; "
            "at 100 `noeviction` refuses every publish.",
        ),
        Integer(
            name="brokerCpuPercent",
            default=90,
            low=10,
            high=100,
            why="percent",
            unit="%",
            meaning="`EngineCPUUtilization` (the Redis thread) above which the broker CPU alarm "
            "fires (AWS suggests 90 %).",
        ),
        Integer(
            name="brokerConnections",
            default=ELASTICACHE_MAX_CONNECTIONS * 8 // 10,
            low=1,
            high=ELASTICACHE_MAX_CONNECTIONS,
            why=f"client connections; ElastiCache accepts at most {ELASTICACHE_MAX_CONNECTIONS}",
            meaning="`CurrConnections` above which the broker connection alarm fires (80 % of "
            "ElastiCache's limit).",
        ),
        Boolean(
            name="allowNoNotifications",
            default=False,
            meaning="Production accepts alarms that notify nobody (their states show in the "
            "CloudWatch console and on the dashboard only; CloudWatch.15 not met). The name "
            "says what is given up. Not with `email` or `topicArn`.",
        ),
    ),
)

TOP_LEVEL = Section(
    path="",
    intro="Values of the `celery-ecs` namespace itself; the sections below are objects and "
    "lists of them.",
    rows=(
        Boolean(
            name="production",
            default=False,
            meaning="Safe production defaults (the column \"In production\"), VPC flow logs "
            "(rejected traffic), a final broker snapshot on destroy, keeps the ECR repository "
            "and deleted secrets; see the [rules between keys](#rules-between-keys).",
        ),
        Choice(
            name="scheduler",
            choices=SCHEDULERS,
            default="beat",
            meaning="One beat service, or one EventBridge rule per `schedule` entry running "
            "`celery-ecs-enqueue`. Never both.",
        ),
        Integer(
            name="maxCountdown",
            default=300,
            low=0,
            high=MAX_COUNTDOWN_LIMIT,
            why="seconds; longest countdown/ETA of a task",
            unit="s",
            meaning="Longest countdown/ETA a task may be published with "
            "(`CELERY_MAX_COUNTDOWN`); sizes every pool's visibility timeout.",
        ),
        Choice(
            name="logLevel",
            choices=LOG_LEVELS,
            default="INFO",
            meaning="`APP_LOG_LEVEL` of every container.",
        ),
        Integer(
            name="logRetentionDays",
            default=30,
            production=365,
            choices=LOG_RETENTION_DAYS,
            choices_are="a CloudWatch retention period",
            unit="days",
            meaning="Retention of every log group.",
        ),
        Object(name="image", section=IMAGE, meaning="The image (below)."),
        Text(
            name="celeryApp",
            pattern=_CELERY_APP,
            allowed_text=CELERY_APP_ALLOWED,
            default=DEFAULT_CELERY_APP,
            meaning="The `celery --app` target of the workers and beat (the default is the "
            "example app). Any other value requires `image`, `web.command`, `workers` and "
            "`schedule` too (their defaults are the example app's, which would not fit). "
            "Whether the image can import it cannot be known offline: `make run` runs it on "
            "the twin, where a worker that cannot load it exits and the run says so.",
        ),
        Choice(
            name="cpuArchitecture",
            choices=CPU_ARCHITECTURES,
            default_text="`ARM64`, or `X86_64` when a pool sets `fargateSpot`",
            meaning="CPU of every task (`runtimePlatform`) and the platform the image is built "
            "for (`linux/arm64`, `linux/amd64`). ARM64 (Graviton) costs about 20 % less for the "
            "same size, and the image (Python, no native code of ours) runs the same; Fargate "
            "Spot runs X86_64 only (ECS developer guide).",
        ),
        ObjectList(
            name="workers",
            section=WORKER_POOL,
            allowed_text="a list of worker pool objects",
            default_text="one pool `default` consuming "
            + " and ".join(f"`{queue}`" for queue in DEFAULT_QUEUES)
            + " (the example app's queues)",
            meaning="The worker pools (below); one ECS service each.",
        ),
        Object(name="web", section=WEB, meaning="The web (below)."),
        Object(name="broker", section=BROKER, meaning="The broker (below)."),
        Object(name="network", section=NETWORK, meaning="The network (below)."),
        Object(name="alerts", section=ALERTS, meaning="The alarms' notifications (below)."),
        Boolean(
            name="containerInsights",
            default=False,
            production=True,
            meaning="Container Insights on the cluster: per-service task counts, CPU and "
            "memory, billed as custom metrics (the largest monitoring line: about $26 a month "
            "for the default stack). Nothing the stack guarantees needs it: the "
            "`tasks-below-min` alarm and backlog scaling read the workers' own `Workers` "
            "metric; with it on, target tracking divides by `DesiredTaskCount` instead (tasks "
            "still starting count at once: about 3-4 % fewer task-minutes in [the simulator]"
            "(../explanation/autoscaling.md)) and the dashboard shows desired and running "
            "tasks. Production keeps it (Security Hub ECS.12).",
        ),
        Boolean(
            name="dashboard",
            default=False,
            production=True,
            meaning="A CloudWatch dashboard named `<project>-<stack>` (alarm states, queues, "
            "tasks, web, broker) and the `dashboardUrl` output. A dashboard is billed per month "
            "($3 in us-east-1, beyond the account's 3 free ones); nothing the stack guarantees "
            "reads it: the alarms fire, notify and show their states in the CloudWatch console "
            "without it. Production keeps it.",
        ),
        ObjectList(
            name="schedule",
            section=SCHEDULE_ENTRY,
            allowed_text="a list of schedule entries",
            default_text="the example's entries: "
            + ", ".join(f"`{entry['name']}`" for entry in DEFAULT_SCHEDULE),
            meaning="Periodic tasks: beat's (`CELERY_BEAT_SCHEDULE_JSON`, read when beat "
            "starts), or one EventBridge rule each, whose enqueue command carries the entry's "
            "task, queue and arguments. `[]` for none; required with another `celeryApp`.",
        ),
    ),
)

#: Every section, in the reference page's order.
SECTIONS = (TOP_LEVEL, IMAGE, WORKER_POOL, WEB, SCHEDULE_ENTRY, BROKER, NETWORK, ALERTS)


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
    budget = _catch_budget(
        path,
        lambda: worker_budget(
            task_timeout,
            max_stop_timeout=max_stop_timeout,
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
