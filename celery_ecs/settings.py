"""The application's configuration: every value comes from an environment variable.

This module is the contract between the infrastructure and the app. The Pulumi program renders
these variables into the ECS task definitions (see ``infra/``); the local stack and the tests set
them directly. It imports nothing from Celery so the infrastructure code can read the variable
names without the app's dependencies.

Every variable, its default and its unit is listed in ``ENV_VARS`` and in the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# Variable names. The infrastructure imports these so both sides spell them the same way.
BROKER_URL = "CELERY_BROKER_URL"
RESULT_BACKEND = "CELERY_RESULT_BACKEND"
RESULT_EXPIRES = "CELERY_RESULT_EXPIRES"
SOFT_TIME_LIMIT = "CELERY_TASK_SOFT_TIME_LIMIT"
TIME_LIMIT = "CELERY_TASK_TIME_LIMIT"
VISIBILITY_TIMEOUT = "CELERY_VISIBILITY_TIMEOUT"
PREFETCH_MULTIPLIER = "CELERY_PREFETCH_MULTIPLIER"
MAX_COUNTDOWN = "CELERY_MAX_COUNTDOWN"
HELD_PER_SLOT = "CELERY_HELD_PER_SLOT"
# Not CELERY_WORKER_POOL: the celery CLI reads that one as `worker --pool`.
WORKER_POOL = "CELERY_POOL_NAME"
LIVENESS_TIMEOUT = "CELERY_LIVENESS_TIMEOUT"
SOFT_SHUTDOWN_TIMEOUT = "CELERY_SOFT_SHUTDOWN_TIMEOUT"
SOFT_SHUTDOWN_ON_IDLE = "CELERY_SOFT_SHUTDOWN_ON_IDLE"
TASK_PROTECTION = "CELERY_TASK_PROTECTION"
# Not CELERY_LOG_LEVEL: the Celery worker sets that variable itself for its pool processes.
LOG_LEVEL = "APP_LOG_LEVEL"
LOG_TASKS = "APP_LOG_TASKS"
HEARTBEAT_DIR = "CELERY_HEARTBEAT_DIR"
METRICS_NAMESPACE = "CELERY_METRICS_NAMESPACE"
WEB_PORT = "WEB_PORT"
# The web's liveness path, asked by the container health check (celery_ecs.health).
WEB_LIVENESS_PATH = "WEB_LIVENESS_PATH"
# The Celery app (`celery --app` target) the enqueue command publishes with (the stack's
# `celeryApp`); `celery --app` reads the same variable.
CELERY_APP = "CELERY_APP"
# Beat's periodic entries, as celery_ecs.schedule.entries_to_json writes them (the stack's
# `schedule`).
BEAT_SCHEDULE = "CELERY_BEAT_SCHEDULE_JSON"
WEB_REQUEST_TIMEOUT = "WEB_REQUEST_TIMEOUT"
WEB_MAX_BODY_BYTES = "WEB_MAX_BODY_BYTES"
WEB_THREADS = "WEB_THREADS"
# Where the web reads the accepted API keys (app.api_keys): exactly one of the two is set.
WEB_API_KEYS_SECRET_ARN = "WEB_API_KEYS_SECRET_ARN"
WEB_API_KEYS_FILE = "WEB_API_KEYS_FILE"
# Read by Celery itself when the worker module is imported: "SIGQUIT" turns SIGTERM into a cold
# shutdown (see infra/budget.py for when that is chosen).
REMAP_SIGTERM = "REMAP_SIGTERM"

#: Seconds a worker keeps ECS scale-in protection after its last task (``celery_ecs.protection``);
#: the infrastructure sizes deployment waits with it (``infra.budget``).
PROTECTION_IDLE_GRACE_SECONDS = 30

# name -> (default, meaning). The README's table is checked against this by a test.
ENV_VARS: dict[str, tuple[str, str]] = {
    BROKER_URL: ("(required)", "Redis URL. `rediss://` needs `ssl_cert_reqs=required`."),
    RESULT_BACKEND: ("= broker URL", "Where task results are stored (Redis)."),
    RESULT_EXPIRES: ("86400", "Seconds a task result is kept."),
    SOFT_TIME_LIMIT: ("300", "Seconds before `SoftTimeLimitExceeded` is raised in a task."),
    TIME_LIMIT: ("330", "Seconds before the pool kills a task; above the soft limit."),
    VISIBILITY_TIMEOUT: (
        "3600",
        "Seconds a delivered, unacknowledged message waits before a sweep takes it back even "
        "from a live worker (the last resort). Must exceed held per slot x time limit + "
        "max countdown.",
    ),
    PREFETCH_MULTIPLIER: (
        "1",
        "Messages reserved per pool slot; the stack sets each pool's (`prefetchMultiplier`).",
    ),
    HELD_PER_SLOT: (
        "4",
        "Most messages a worker holds per pool slot: running, waiting for a slot or for their "
        "countdown/ETA. Celery's `worker_eta_task_limit` is this x concurrency; past it the "
        "worker takes nothing more and the messages stay on their queue. At least the prefetch "
        "multiplier.",
    ),
    WORKER_POOL: (
        "default",
        "Worker pool name: in its workers' keys, and the visibility-timeout sweep takes back "
        "only its own pool's messages.",
    ),
    LIVENESS_TIMEOUT: (
        "10",
        "Seconds a worker's liveness key lives without a refresh; a crashed worker's messages "
        "go back on their queues at most a third of it (5 s at most) after that. Deadlines: "
        "README, Liveness.",
    ),
    MAX_COUNTDOWN: (
        "300",
        "Longest countdown/ETA (seconds) a task may be published with; longer is refused.",
    ),
    SOFT_SHUTDOWN_TIMEOUT: ("0", "Seconds of grace before a cold shutdown cancels tasks."),
    SOFT_SHUTDOWN_ON_IDLE: ("false", "Apply that grace even when no task runs."),
    TASK_PROTECTION: (
        "false",
        "Hold ECS task scale-in protection while tasks run (needs `ECS_AGENT_URI`).",
    ),
    LOG_LEVEL: ("INFO", "Log level of every process."),
    LOG_TASKS: (
        "false",
        "Log Celery's line for every task received and every task succeeded. Failures, retries "
        "and rejections are logged either way.",
    ),
    HEARTBEAT_DIR: (
        "/tmp",
        "Where the worker and beat touch their heartbeat files, read by `celery-ecs-health`.",
    ),
    METRICS_NAMESPACE: (
        "(empty: off)",
        "CloudWatch namespace of the queue metrics the workers publish (PutMetricData, in the "
        "task's `AWS_REGION`; without a region, a line on stdout) and of beat's heartbeat "
        "(embedded metric format).",
    ),
    WEB_PORT: ("8000", "Port the web server listens on."),
    WEB_LIVENESS_PATH: (
        "/livez",
        "Path the web answers 200 on while alive; the container health check asks it.",
    ),
    BEAT_SCHEDULE: (
        "(empty: no entries)",
        "Beat's periodic entries: a JSON list of {name, task, cron or every, queue, args, "
        "kwargs}, read when beat starts (the stack sets it from its `schedule`).",
    ),
    WEB_REQUEST_TIMEOUT: (
        "30",
        "Seconds a request may take; also the graceful shutdown window on SIGTERM.",
    ),
    WEB_MAX_BODY_BYTES: ("65536", "Largest accepted request body; larger gets 413."),
    WEB_THREADS: ("8", "Request threads in the web process."),
    WEB_API_KEYS_SECRET_ARN: (
        "(one of the two)",
        "ARN of the Secrets Manager secret holding the accepted API keys (the stack sets it); "
        "read with the task role, re-read every minute.",
    ),
    WEB_API_KEYS_FILE: (
        "(one of the two)",
        "Path of a file holding the accepted API keys, in the secret's format (local runs and "
        "tests); re-read every minute. Neither or both set: the web refuses to start.",
    ),
}


#: Messages a worker may hold per pool slot unless CELERY_HELD_PER_SLOT says: stock Celery's
#: default prefetch multiplier, so a worker running one task per slot can still hold three
#: countdown/ETA messages per slot before it stops taking messages.
DEFAULT_HELD_PER_SLOT = 4
#: Seconds a worker's liveness key lives without a refresh, unless CELERY_LIVENESS_TIMEOUT says.
#: 10: a crashed worker's messages are back within 10 + 10/3 s (issue 21: 15 s), and a worker
#: whose every CPU is busy still refreshes with margin (bench.liveness_timeouts; docs: Liveness,
#: "Why L = 10 s").
DEFAULT_LIVENESS_TIMEOUT = 10
#: Shortest liveness timeout: its deadlines (celery_ecs.liveness) are fractions of it, the smallest
#: a fifteenth, and a worker must be able to refresh within that on a busy machine.
MIN_LIVENESS_TIMEOUT = 3


#: A Secrets Manager secret's ARN: arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
#: (IAM User Guide, "Amazon Resource Names (ARNs)"; Secrets Manager's resource types).
SECRET_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):secretsmanager:(?P<region>[a-z0-9-]+):\d{12}:secret:[^:\s]+"
)


class ConfigError(ValueError):
    """A configuration that would run unsafely. The message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be >= {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def check_redis_url(name: str, url: str) -> None:
    """Refuse URLs Celery would accept but run unsafely (TLS without certificate checks)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"{name}: scheme {parts.scheme!r} is not supported; use redis:// or rediss://")
    if parts.scheme == "rediss":
        reqs = parse_qs(parts.query).get("ssl_cert_reqs", [""])[-1]
        if reqs.lower() not in ("required", "cert_required"):
            raise ConfigError(
                f"{name}: a rediss:// URL must end with ?ssl_cert_reqs=required; without it the "
                "connection is encrypted but the server certificate is not checked"
            )


@dataclass(frozen=True)
class Settings:
    broker_url: str
    result_backend: str
    result_expires: int
    soft_time_limit: int
    time_limit: int
    visibility_timeout: int
    prefetch_multiplier: int
    max_countdown: int
    held_per_slot: int
    worker_pool: str
    liveness_timeout: int
    soft_shutdown_timeout: int
    soft_shutdown_on_idle: bool
    task_protection: bool
    log_level: str
    log_tasks: bool
    heartbeat_dir: str
    metrics_namespace: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        broker_url = env.get(BROKER_URL, "").strip()
        if not broker_url:
            raise ConfigError(f"{BROKER_URL} is not set (e.g. redis://localhost:6379/0)")
        check_redis_url(BROKER_URL, broker_url)
        result_backend = env.get(RESULT_BACKEND, "").strip() or broker_url
        check_redis_url(RESULT_BACKEND, result_backend)

        soft = _int(env, SOFT_TIME_LIMIT, 300, minimum=1)
        hard = _int(env, TIME_LIMIT, 330, minimum=1)
        if hard <= soft:
            raise ConfigError(f"{TIME_LIMIT}={hard} must be above {SOFT_TIME_LIMIT}={soft}")
        prefetch = _int(env, PREFETCH_MULTIPLIER, 1, minimum=1)
        max_countdown = _int(env, MAX_COUNTDOWN, 300)
        held_per_slot = _int(env, HELD_PER_SLOT, DEFAULT_HELD_PER_SLOT, minimum=1)
        if held_per_slot < prefetch:
            # Celery caps the prefetch count at the limit from the first countdown/ETA message
            # on: a limit below the prefetch would shrink the worker's own prefetch.
            raise ConfigError(
                f"{HELD_PER_SLOT}={held_per_slot} must be >= {PREFETCH_MULTIPLIER}={prefetch}"
            )
        visibility = _int(env, VISIBILITY_TIMEOUT, 3600, minimum=1)
        # Redis redelivers a message after the visibility timeout even if a live worker still
        # has it, so a timeout shorter than the longest a message can stay unacknowledged means
        # the same task runs twice. That bound is ``longest_unacked`` (infra.budget derives the
        # same, and sizes the timeout above it).
        longest_unacked = held_per_slot * hard + max_countdown
        if visibility <= longest_unacked:
            raise ConfigError(
                f"{VISIBILITY_TIMEOUT}={visibility} must exceed {HELD_PER_SLOT} x "
                f"{TIME_LIMIT} + {MAX_COUNTDOWN} = {longest_unacked}, or running tasks are "
                "delivered twice"
            )
        pool = env.get(WORKER_POOL, "").strip() or "default"
        if not pool.replace("-", "").isalnum():
            raise ConfigError(f"{WORKER_POOL}={pool!r}: use letters, digits and dashes")
        level = env.get(LOG_LEVEL, "INFO").strip().upper() or "INFO"
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"{LOG_LEVEL}={level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return cls(
            broker_url=broker_url,
            result_backend=result_backend,
            result_expires=_int(env, RESULT_EXPIRES, 86400, minimum=1),
            soft_time_limit=soft,
            time_limit=hard,
            visibility_timeout=visibility,
            prefetch_multiplier=prefetch,
            max_countdown=max_countdown,
            held_per_slot=held_per_slot,
            worker_pool=pool,
            liveness_timeout=_int(env, LIVENESS_TIMEOUT, DEFAULT_LIVENESS_TIMEOUT,
                                  minimum=MIN_LIVENESS_TIMEOUT),
            soft_shutdown_timeout=_int(env, SOFT_SHUTDOWN_TIMEOUT, 0),
            soft_shutdown_on_idle=_bool(env, SOFT_SHUTDOWN_ON_IDLE, False),
            task_protection=_bool(env, TASK_PROTECTION, False),
            log_level=level,
            log_tasks=_bool(env, LOG_TASKS, False),
            heartbeat_dir=env.get(HEARTBEAT_DIR, "").strip() or "/tmp",
            metrics_namespace=env.get(METRICS_NAMESPACE, "").strip(),
        )

    def eta_task_limit(self, concurrency: int) -> int:
        """Celery's ``worker_eta_task_limit`` for a worker of ``concurrency`` pool slots: the
        most messages it holds unacknowledged (``held_per_slot`` per slot).

        What Celery (5.6) does with it: the consumer's prefetch count starts at concurrency x
        prefetch multiplier and grows by one for every countdown/ETA message received
        (``celery/worker/strategy.py``), capped at this limit (``kombu.common.QoS``'s
        ``max_prefetch``, set in ``celery/worker/consumer/tasks.py``). The Redis channel takes
        a message only while it holds fewer than the prefetch count
        (``kombu.transport.virtual.QoS.can_consume``): past the limit the worker takes nothing
        more, and the messages stay on their queue for other workers. Nothing is rejected.
        """
        return self.held_per_slot * concurrency

    def celery_config(self) -> dict[str, object]:
        """The Celery settings these values imply, with the reliable defaults fixed."""
        # Pool-level keys: what processes that never consume would use. Each worker replaces
        # the first two with keys of its own when it starts (celery_ecs.liveness.WorkerKeys).
        transport = {
            "visibility_timeout": self.visibility_timeout,
            "unacked_key": f"unacked:{self.worker_pool}",
            "unacked_index_key": f"unacked_index:{self.worker_pool}",
            "unacked_mutex_key": f"unacked_mutex:{self.worker_pool}",
        }
        return {
            "broker_url": self.broker_url,
            # kombu's Redis transport, taking a message and recording it in one round trip.
            "broker_transport": "celery_ecs.transport:Transport",
            # A plain URL: the app's loader makes it Celery's Redis backend with each state
            # stored in one atomic script (celery_ecs.results.ResultBackendLoader).
            "result_backend": self.result_backend,
            "result_expires": self.result_expires,
            # Acknowledge after the task ran, so a crash re-queues instead of losing it.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": self.prefetch_multiplier,
            "task_soft_time_limit": self.soft_time_limit,
            "task_time_limit": self.time_limit,
            # JSON only: whoever can write to the broker must not be able to run pickled code.
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "result_accept_content": ["json"],
            "broker_connection_retry": True,
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,
            "broker_transport_options": dict(transport),
            "result_backend_transport_options": {"visibility_timeout": self.visibility_timeout},
            "worker_soft_shutdown_timeout": float(self.soft_shutdown_timeout),
            "worker_enable_soft_shutdown_on_idle": self.soft_shutdown_on_idle,
            # STARTED costs a result write per task: tasks long enough for someone to see it
            # running declare ``track_started`` themselves (app.tasks).
            "task_track_started": False,
            "worker_hijack_root_logger": True,
            "worker_send_task_events": False,
            # If the broker connection (or the liveness) is lost, the worker puts its unacked
            # messages back (celery_ecs.consumer); the running copies are cancelled so each task
            # keeps one live run (Celery 6 default).
            "worker_cancel_long_running_tasks_on_connection_loss": True,
        }


@dataclass(frozen=True)
class WebSettings:
    """The web server's settings (``WEB_*``), read by ``celery_ecs.gunicorn_conf`` and ``app.web``.

    Only the web process reads them; ``Settings`` holds what every process shares.
    """

    port: int
    request_timeout: int
    max_body_bytes: int
    threads: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebSettings:
        env = os.environ if env is None else env
        port = _int(env, WEB_PORT, 8000, minimum=1)
        if port > 65535:
            raise ConfigError(f"{WEB_PORT}={port}: must be a TCP port (1..65535)")
        return cls(
            port=port,
            request_timeout=_int(env, WEB_REQUEST_TIMEOUT, 30, minimum=1),
            max_body_bytes=_int(env, WEB_MAX_BODY_BYTES, 65536, minimum=1),
            threads=_int(env, WEB_THREADS, 8, minimum=1),
        )


@dataclass(frozen=True)
class ApiKeysSettings:
    """Where the web reads the API keys it accepts (``app.api_keys``): exactly one is set.

    Read by ``celery_ecs.gunicorn_conf`` (a web without a source never starts) and ``app.web``.
    """

    secret_arn: str | None
    file: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiKeysSettings:
        env = os.environ if env is None else env
        secret_arn = env.get(WEB_API_KEYS_SECRET_ARN, "").strip() or None
        keys_file = env.get(WEB_API_KEYS_FILE, "").strip() or None
        # Never open because unconfigured: the API runs with exactly one source of keys.
        if (secret_arn is None) == (keys_file is None):
            raise ConfigError(
                f"set exactly one of {WEB_API_KEYS_SECRET_ARN} (a Secrets Manager secret's ARN) "
                f"or {WEB_API_KEYS_FILE} (a file path): they say where the accepted API keys "
                f"are, and the API refuses to run without them; got "
                + ("both" if secret_arn else "neither")
            )
        if secret_arn is not None and not SECRET_ARN.fullmatch(secret_arn):
            raise ConfigError(
                f"{WEB_API_KEYS_SECRET_ARN}={secret_arn!r}: expected a Secrets Manager secret ARN "
                "(arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
            )
        return cls(secret_arn=secret_arn, file=Path(keys_file) if keys_file else None)
