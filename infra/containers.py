"""Container definitions as plain data: commands, environments and the hardened defaults.

Pure logic, no Pulumi: the components resolve their Outputs (image, secret ARN, log group) and
call ``container_definition``; tests and local harnesses call the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from celery_ecs import settings as env_names
from celery_ecs.names import LIVENESS_PATH
from celery_ecs.schedule import PeriodicEntry, entries_to_json
from infra.config import StackConfig, WorkerPool
from infra.config_tables import DEFAULT_CELERY_APP, DEFAULT_WEB_COMMAND

#: UID:GID the image's application user has (ECS.20: never root).
APP_USER = "10001:10001"
#: Task-level volume (Fargate ephemeral storage) mounted at /tmp: the only writable path of a
#: read-only root filesystem (heartbeat files, gunicorn's worker temp files).
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"
#: The runtime's console scripts (``pyproject.toml``, ``[project.scripts]``).
ENQUEUE_SCRIPT = "celery-ecs-enqueue"
HEALTH_SCRIPT = "celery-ecs-health"
#: What the enqueue task runs without the EventBridge override: prints usage, sends nothing.
ENQUEUE_DEFAULT_COMMAND: tuple[str, ...] = (ENQUEUE_SCRIPT, "--help")


def beat_command(celery_app: str) -> tuple[str, ...]:
    return ("celery", "--app", celery_app, "beat")


#: The example app's target and commands (the stack's defaults), which the tests run.
CELERY_APP = DEFAULT_CELERY_APP
WEB_COMMAND = DEFAULT_WEB_COMMAND
BEAT_COMMAND = beat_command(DEFAULT_CELERY_APP)


def worker_command(
    name: str, queues: Sequence[str], concurrency: int, celery_app: str = DEFAULT_CELERY_APP
) -> tuple[str, ...]:
    """The worker pool ``name``'s command: its app, queues and concurrency are in it."""
    return (
        "celery",
        "--app",
        celery_app,
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}@%h",
        # Mingle and gossip cost a broadcast round per start and per event; ECS replaces
        # workers often enough that neither is worth it.
        "--without-mingle",
        "--without-gossip",
    )


def enqueue_command(entry: PeriodicEntry, slot: str) -> tuple[str, ...]:
    """What an EventBridge rule runs for ``entry``: its task, queue and arguments, and its name,
    which the slot is claimed for. ``slot`` is the schedule time of the run (the event's
    ``time``, ISO 8601 UTC). The app it publishes with is the task's ``CELERY_APP``."""
    arguments = [*(("--args", _json(list(entry.args))) if entry.args else ()),
                 *(("--kwargs", _json(entry.kwargs)) if entry.kwargs else ())]  # fmt: skip
    return (ENQUEUE_SCRIPT, entry.task, "--queue", entry.queue, *arguments,
            "--name", entry.name, "--slot", slot)  # fmt: skip


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def health_check(role: str) -> dict[str, object]:
    """Container health check (``celery-ecs-health <role>``): for the worker and beat a stale
    heartbeat file fails it, for the web a liveness path that does not answer 200."""
    return {
        "command": ["CMD", HEALTH_SCRIPT, role],
        "interval": 30,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 60,
    }


def metrics_namespace(project: str, stack: str) -> str:
    """CloudWatch namespace of the workers' queue metrics (PutMetricData) and of beat's
    heartbeat (embedded metric format)."""
    return f"CeleryEcs/{project}-{stack}"


def publisher_environment(config: StackConfig) -> dict[str, str]:
    """Environment of processes that only publish (web, beat, enqueue).

    They never run tasks, but ``Settings`` checks at import that the visibility timeout exceeds
    held per slot x time limit + max countdown, so they carry the values of the pool whose
    messages stay unacknowledged longest; the result backend shares that visibility timeout.
    """
    longest = max(
        (pool.budget for pool in config.workers), key=lambda budget: budget.visibility_timeout
    )
    return {
        env_names.LOG_LEVEL: config.log_level,
        env_names.MAX_COUNTDOWN: str(config.max_countdown),
        env_names.SOFT_TIME_LIMIT: str(longest.soft_time_limit),
        env_names.TIME_LIMIT: str(longest.time_limit),
        env_names.HELD_PER_SLOT: str(longest.held_per_slot),
        env_names.VISIBILITY_TIMEOUT: str(longest.visibility_timeout),
    }


def enqueue_environment(config: StackConfig) -> dict[str, str]:
    """The enqueue command publishes with the stack's Celery app (its ``--app`` default)."""
    return {**publisher_environment(config), env_names.CELERY_APP: config.celery_app}


def beat_environment(config: StackConfig, namespace: str) -> dict[str, str]:
    """Beat publishes the stack's schedule, and writes its heartbeat metric to ``namespace``."""
    return {
        **publisher_environment(config),
        env_names.METRICS_NAMESPACE: namespace,
        env_names.BEAT_SCHEDULE: entries_to_json(config.schedule),
    }


def web_environment(config: StackConfig) -> dict[str, str]:
    # The liveness path only when it is not the app's default: the example's task definition
    # stays as it was.
    liveness = (
        {env_names.WEB_LIVENESS_PATH: config.web.liveness_path}
        if config.web.liveness_path != LIVENESS_PATH
        else {}
    )
    return {
        **publisher_environment(config),
        **config.web.budget.environment(),
        env_names.WEB_PORT: str(config.web.port),
        **liveness,
    }


def worker_environment(config: StackConfig, pool: WorkerPool, namespace: str) -> dict[str, str]:
    return {
        **pool.budget.environment(),
        env_names.WORKER_POOL: pool.name,
        env_names.LOG_LEVEL: config.log_level,
        env_names.METRICS_NAMESPACE: namespace,
    }


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that differs between the containers; the rest is fixed hardening."""

    name: str
    image: str
    command: Sequence[str]
    environment: Mapping[str, str]
    #: Environment variable -> Secrets Manager ARN (resolved by the execution role at start).
    secrets: Mapping[str, str]
    log_group: str
    region: str
    #: Seconds between SIGTERM and SIGKILL (Fargate: at most 120).
    stop_timeout: int
    port: int | None = None
    health_check: Mapping[str, object] | None = field(default=None)


def container_definition(spec: ContainerSpec) -> dict[str, object]:
    """The ECS container definition (camelCase, as RegisterTaskDefinition takes it)."""
    definition: dict[str, object] = {
        "name": spec.name,
        "image": spec.image,
        "essential": True,
        "command": list(spec.command),
        "user": APP_USER,
        "readonlyRootFilesystem": True,
        # ``privileged`` stays absent (ECS.4 accepts absent or false; Fargate has no such mode).
        "linuxParameters": {
            # docker --init: signals reach Celery/gunicorn, zombies are reaped.
            "initProcessEnabled": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "mountPoints": [{"sourceVolume": TMP_VOLUME, "containerPath": TMP_PATH, "readOnly": False}],
        "environment": [
            {"name": name, "value": value} for name, value in sorted(spec.environment.items())
        ],
        "secrets": [{"name": name, "valueFrom": arn} for name, arn in sorted(spec.secrets.items())],
        "stopTimeout": spec.stop_timeout,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": spec.log_group,
                "awslogs-region": spec.region,
                "awslogs-stream-prefix": spec.name,
                # A slow CloudWatch must not block the process writing a log line.
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        },
    }
    if spec.port is not None:
        definition["portMappings"] = [
            {"containerPort": spec.port, "protocol": "tcp", "name": "http"}
        ]
    if spec.health_check is not None:
        definition["healthCheck"] = dict(spec.health_check)
    return definition
