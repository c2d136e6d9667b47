"""The stack configuration's keys: one table per section, and the constants they name.

Each ``Section`` (``TOP_LEVEL``, ``IMAGE``, ``WORKER_POOL``, ``WEB``, ``SCHEDULE_ENTRY``,
``BROKER``, ``NETWORK``, ``ALERTS``; the kinds of row and their reader are ``infra.config_keys``)
lists its keys once: a row's type, default, production default, allowed values and meaning
drive which keys the section accepts, how ``infra.config``'s loaders read and check each value,
the error's allowed text, and the reference page (docs/reference/configuration.md, written by
``python -m devtools.docs``). Rules between keys are the loaders' code, in ``infra.config``.
Pure data and standard library, no Pulumi.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

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
)
from celery_ecs.settings import DEFAULT_HELD_PER_SLOT
from infra.budget import (
    EXIT_MARGIN,
    FARGATE_STOP_TIMEOUT_CAP,
    MAX_TASK_TIMEOUT,
    SHORT_TASK_PREFETCH,
    SHORT_TASK_TIMEOUT,
)
from infra.config_keys import (
    Boolean,
    Choice,
    Command,
    Described,
    Integer,
    Key,
    Number,
    Object,
    ObjectList,
    Section,
    Text,
    TextList,
)

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
# are code, in the loaders (``infra.config``).


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
        Integer(
            name="prefetchMultiplier",
            low=1,
            high=MAX_HELD_PER_SLOT,
            why="messages a worker reserves per task slot, at most heldPerSlot",
            default_text=f"{SHORT_TASK_PREFETCH} if `taskTimeout` ≤ {SHORT_TASK_TIMEOUT}, else 1 "
            "(at most `heldPerSlot`)",
            meaning="Messages a worker of the pool reserves per task slot "
            "(`CELERY_PREFETCH_MULTIPLIER`), acknowledged late like every message. A second one "
            "saves short tasks a broker round trip each; a reserved message waits for a slot of "
            "its worker (at most the hard time limit) even while another worker is idle, "
            "so 1 suits pools of long tasks.",
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

