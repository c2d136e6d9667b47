"""Measure what the worker timeout budget buys and costs, against Celery's defaults.

    python -m bench.worker_budget                  (``make bench``; as root: containers)
    python -m bench.worker_budget --baseline REV   (``make bench BASELINE=REV``)

One run on this machine, against a redis-server it starts on a free port, with real Celery
workers run as containers on the ECS twin (``devtools.twin``). Three measurements:

- Crash recovery: the whole worker container is SIGKILLed (the container dies) while a task
  runs; a replacement worker starts at once, as ECS starts one. Seconds until the task runs
  again, for pools of taskTimeout 60, 300 and 3600 (liveness), against the visibility timeout
  alone (what brought a crashed worker's tasks back before liveness), measured at a scale one
  can wait for.
- Drain: ECS stops a worker with one task running (SIGTERM, wait ``stopTimeout``, SIGKILL).
  Seconds until the container is gone, and tasks lost, for a short and a long task.
- Throughput: no-op tasks per second through one worker, with and without result storage,
  rounds taken in turns; with the CPU time and the Redis commands each task costs.

"This project" is the worker task definition the Pulumi program renders (under mocks,
``devtools.render``) for a pool of a stack configuration that holds the bench's pools
(``taskTimeout``, ``concurrency``, ``maxStopTimeout``, ``maxCountdown``), run on the twin as
Fargate runs it (``testkit.rendered_worker``): its command, environment, user, read-only root,
``/tmp`` volume, init (tini) and ``stopTimeout``. What no stack config key sets is a container
environment override, as a RunTask ``containerOverrides`` is: only the SCALED row's liveness
timeout. "Celery defaults" is ``bench.defaults_app`` (the same task bodies, only a broker URL
set) in a task definition derived from the rendered one: its command, environment, health check
and ``stopTimeout`` replaced, its image the project's plus ``bench/defaults_app.py``; so both
sides pay the same container: namespaces, tini, user, image venv. Every container gets a network
namespace of its own on the twin's bridge (awsvpc), and reaches redis-server there, as a Fargate
task reaches its broker over its own interface.

``--baseline REV`` adds the same worker run from revision REV of this project (its ``app/`` and
image requirements, this revision's task definition: what a deploy of the new code changes) to
the throughput rounds and to the taskTimeout 300 crash row, and prints how this revision compares
with it in the same run: a change to the runtime must not make either worse.

Stop timeouts are scaled down so the run takes about four minutes: the stop cap is 20 s instead
of Fargate's 120 s, and the defaults get ECS's default ``stopTimeout`` of 30 s at the same scale
(5 s). The output says so next to every scaled number.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import celery
import kombu
import redis
from celery import Celery

from bench.redis_commands import worker_commands
from celery_ecs import settings as env_names
from celery_ecs.liveness import MAX_SWEEP_INTERVAL, Deadlines, unacked_count
from celery_ecs.transport import WAKE_TOKENS_MAX, wake_key
from devtools import render
from devtools.twin.awsvpc import HOST_ADDRESS, TaskNetwork, allocate, ensure_bridge
from devtools.twin.container import Container
from devtools.twin.dockerfile_image import CACHE, Image, image_venv, parse_image
from infra import config_tables as stack_config
from infra.budget import FARGATE_STOP_TIMEOUT_CAP
from testkit.processes import ROOT
from testkit.redis_server import RedisServer, start_redis
from testkit.rendered_worker import (
    WorkerDefinition,
    image,
    start_worker_container,
    worker_definitions,
)

#: The stack name the bench renders the program as (it only names families and log groups).
BENCH_STACK = "bench"
#: The stop cap every scaled row uses, instead of Fargate's 120 s.
SCALED_STOP_CAP = 20
STOP_SCALE = SCALED_STOP_CAP / FARGATE_STOP_TIMEOUT_CAP
#: ECS's default container stopTimeout, and the same at the bench's scale (what the defaults get).
ECS_DEFAULT_STOP_TIMEOUT = 30
DEFAULTS_STOP_TIMEOUT = round(ECS_DEFAULT_STOP_TIMEOUT * STOP_SCALE)  # stopTimeout is an integer
#: Celery's default visibility timeout of the Redis transport (kombu), seconds.
CELERY_DEFAULT_VISIBILITY = 3600
#: Docker's exit code of a container whose PID 1 was SIGKILLed (the twin's too).
SIGKILL_EXIT_CODE = 137

SHORT_TASK_SECONDS = 2.0
LONG_TASK_SECONDS = 60.0
#: The crashed task: long enough to still be running when the SIGKILL lands.
CRASH_TASK_SECONDS = 5.0
#: How long a crash row waits for a re-execution before it reports the task lost.
CRASH_WINDOW = 90.0
#: The pools whose crash recovery is measured (liveness decides, whatever the taskTimeout).
RECOVERY_TASK_TIMEOUTS = (60, 300, 3600)
#: The visibility timeout alone, scaled: a pool whose visibility timeout one can wait for
#: (taskTimeout 10, maxCountdown 0, heldPerSlot 1: 21 s) and a liveness timeout that cannot
#: decide first.
SCALED_VISIBILITY_TASK_TIMEOUT = 10
SCALED_VISIBILITY_LIVENESS = 60

THROUGHPUT_TASKS = 1500
WARMUP_TASKS = 200
THROUGHPUT_ROUNDS = 9
#: Both throughput workers get one process per CPU.
THROUGHPUT_CONCURRENCY = os.cpu_count() or 1

#: The queue every worker here consumes (a queue of the example app, ``app.routing``), and where
#: throughput rounds are staged before they are released all at once.
QUEUE = "default"
STAGING_QUEUE = "bench-staging"
#: The pool the bench's stack configurations put on ``QUEUE``.
POOL = "bench"
WORKER_START_TIMEOUT = 30.0
#: Read by ``bench.defaults_app``: give the defaults a Redis result backend (the broker's).
STORE_RESULTS = "BENCH_STORE_RESULTS"


@dataclass(frozen=True)
class WorkerConfig:
    """One kind of worker: the task definition its container runs, and how it is run."""

    label: str
    definition: WorkerDefinition
    #: Set over the definition's environment, as a RunTask ``containerOverrides`` is: only what
    #: no stack config key sets.
    environment_overrides: Mapping[str, str] = field(default_factory=dict)
    #: A RunTask ``containerOverrides`` command; None: the definition's.
    command: Sequence[str] | None = None
    #: The image the definition's ``image`` stands for; None: the project's Dockerfile.
    image: Image | None = None
    celery_defaults: bool = False

    @property
    def environment(self) -> dict[str, str]:
        """The configuration variables the worker gets (the broker URL secret aside)."""
        return {**self.definition.environment, **self.environment_overrides}

    @property
    def stop_timeout(self) -> int:
        """Seconds between SIGTERM and SIGKILL: the definition's ``stopTimeout``."""
        return self.definition.stop_timeout

    @property
    def visibility_timeout(self) -> int:
        if self.celery_defaults:
            return CELERY_DEFAULT_VISIBILITY
        return int(self.environment[env_names.VISIBILITY_TIMEOUT])

    @property
    def shutdown(self) -> str:
        """What SIGTERM starts, as the rendered environment says (Celery reads REMAP_SIGTERM)."""
        environment = self.environment
        if environment.get(env_names.REMAP_SIGTERM) == "SIGQUIT":
            return f"cold, {environment[env_names.SOFT_SHUTDOWN_TIMEOUT]} s soft shutdown"
        return "warm"

    def held(self, store: redis.Redis) -> int:
        """Messages the worker holds delivered and unacknowledged (kombu's hash: the defaults'
        one, or each of this project's workers' own)."""
        if self.celery_defaults:
            return int(store.hlen("unacked"))
        return unacked_count(store, self.definition.pool)

    @property
    def liveness_timeout(self) -> int:
        return int(self.environment.get(env_names.LIVENESS_TIMEOUT,
                                        env_names.DEFAULT_LIVENESS_TIMEOUT))


# The program runs under mocks with process-wide state (Pulumi's runtime, an event loop): one
# rendering at a time.
_render_lock = threading.Lock()


@cache
def render_pool(
    task_timeout: int, concurrency: int, max_stop_timeout: int | None, max_countdown: int | None,
    held_per_slot: int | None = None,
) -> WorkerDefinition:
    """The worker task definition the program renders for the pool ``POOL`` of a stack whose
    configuration holds it (as a ``Pulumi.<stack>.yaml`` would); None: the key is left out, the
    stack's default applies."""
    bench_pool: dict[str, object] = {"name": POOL, "queues": [QUEUE],
                                     "taskTimeout": task_timeout, "concurrency": concurrency}
    if max_stop_timeout is not None:
        bench_pool["maxStopTimeout"] = max_stop_timeout
    if held_per_slot is not None:
        bench_pool["heldPerSlot"] = held_per_slot
    # Another pool takes the example app's other queue, as the default stack's pools do.
    config: dict[str, object] = {"workers": [bench_pool, {"name": "others", "queues": ["long"]}]}
    if max_countdown is not None:
        config["maxCountdown"] = max_countdown
    with _render_lock:
        run = render.run_program(config, stack=BENCH_STACK)
    return worker_definitions(run)[POOL]


def project_worker(
    label: str, *, task_timeout: int, concurrency: int, max_stop_timeout: int | None = None,
    max_countdown: int | None = None, held_per_slot: int | None = None,
    environment_overrides: Mapping[str, str] | None = None,
) -> WorkerConfig:
    """A worker as the program renders it for a pool of a stack's configuration (None: the
    stack's default); ``environment_overrides``: only for what no config key sets."""
    return WorkerConfig(
        label=label,
        definition=render_pool(
            task_timeout, concurrency, max_stop_timeout, max_countdown, held_per_slot
        ),
        environment_overrides=dict(environment_overrides or {}),
    )


@cache
def defaults_image() -> Image:
    """The project's image with the defaults' app added, as ``FROM <it>`` then ``COPY
    bench/__init__.py bench/defaults_app.py /app/bench/`` would build it: the image holds only
    ``app/``, and a new image is how one runs other code on Fargate."""
    project = image()
    added = {f"{project.workdir}/bench/{name}": ROOT / "bench" / name
             for name in ("__init__.py", "defaults_app.py")}  # fmt: skip
    return replace(project, copies={**project.copies, **added})


def defaults_definition(concurrency: int, *, store_results: bool) -> WorkerDefinition:
    """Celery's defaults as a task definition derived from the stack's default pool's, as
    rendered: the same image, user, read-only root, ``/tmp`` volume, init and dropped
    capabilities; the defaults' command, no environment but the broker URL secret (and
    ``STORE_RESULTS``), ECS's default ``stopTimeout`` at the bench's scale, and no health
    check (it reads the heartbeat file only this project's worker writes)."""
    # The throughput pool's rendering: what differs between pools is all replaced here.
    base = throughput_project().definition.rendered
    container = {key: value for key, value in base.container.items() if key != "healthCheck"}
    container.update(
        command=["celery", "--app", "bench.defaults_app", "worker", "--queues", QUEUE,
                 "--concurrency", str(concurrency), "--hostname", "defaults@%h",
                 "--without-mingle", "--without-gossip"],
        environment=[{"name": STORE_RESULTS, "value": "1"}] if store_results else [],
        stopTimeout=DEFAULTS_STOP_TIMEOUT,
    )  # fmt: skip
    family = f"{base.family}-celery-defaults"
    rendered = replace(
        base, family=family, containers=[container],
        inputs={**base.inputs, "family": family, "containerDefinitions": json.dumps([container])},
    )  # fmt: skip
    return WorkerDefinition("celery-defaults", rendered)


def defaults_worker(label: str, concurrency: int, *, store_results: bool = False) -> WorkerConfig:
    """Celery's defaults, started with the same command line as the project's worker;
    ``store_results``: with a Redis result backend (``bench.defaults_app``)."""
    return WorkerConfig(
        label=label, definition=defaults_definition(concurrency, store_results=store_results),
        image=defaults_image(), celery_defaults=True,
    )  # fmt: skip


# The workers of the measurements, rendered when first asked for (rendering takes seconds).

@cache
def long_pool() -> WorkerConfig:
    """A drain row's pool (maxCountdown 0: it only lengthens the visibility timeout)."""
    return project_worker("this project, taskTimeout 60", task_timeout=60, concurrency=1,
                          max_stop_timeout=SCALED_STOP_CAP, max_countdown=0)  # fmt: skip


@cache
def short_pool() -> WorkerConfig:
    return project_worker("this project, taskTimeout 5", task_timeout=5, concurrency=1,
                          max_stop_timeout=SCALED_STOP_CAP, max_countdown=0)  # fmt: skip


@cache
def defaults() -> WorkerConfig:
    return defaults_worker("Celery defaults", concurrency=1)


@cache
def recovery_pools() -> tuple[WorkerConfig, ...]:
    """Crash recovery: unscaled pools (the stack's default maxCountdown, 300 s)."""
    return tuple(
        project_worker(f"this project, taskTimeout {timeout}", task_timeout=timeout, concurrency=1)
        for timeout in RECOVERY_TASK_TIMEOUTS
    )


@cache
def visibility_alone() -> WorkerConfig:
    """The visibility timeout alone at a scale one can wait for. No stack config key sets the
    liveness timeout: a container environment override."""
    return project_worker(
        f"visibility timeout alone, SCALED (taskTimeout {SCALED_VISIBILITY_TASK_TIMEOUT}, "
        f"maxCountdown 0, heldPerSlot 1, liveness timeout {SCALED_VISIBILITY_LIVENESS} s)",
        task_timeout=SCALED_VISIBILITY_TASK_TIMEOUT, concurrency=1, max_countdown=0,
        held_per_slot=1,
        environment_overrides={env_names.LIVENESS_TIMEOUT: str(SCALED_VISIBILITY_LIVENESS)},
    )


@cache
def throughput_project() -> WorkerConfig:
    """Throughput: the stack's default pool, unscaled."""
    return project_worker("this project, default pool (taskTimeout 300)",
                          task_timeout=stack_config.DEFAULT_TASK_TIMEOUT,
                          concurrency=THROUGHPUT_CONCURRENCY)  # fmt: skip


@cache
def throughput_defaults() -> WorkerConfig:
    return defaults_worker("Celery defaults", THROUGHPUT_CONCURRENCY)


@cache
def throughput_defaults_with_results() -> WorkerConfig:
    return defaults_worker("Celery defaults + a Redis result backend", THROUGHPUT_CONCURRENCY,
                           store_results=True)  # fmt: skip


# eq=False: hashed by identity (its image holds mappings); ``baseline`` makes one per revision.
@dataclass(frozen=True, eq=False)
class Baseline:
    """An earlier revision of this project, run as its image would run it."""

    #: The commit, abbreviated.
    revision: str
    #: Its Dockerfile, build context and requirements: what ``docker build`` of it makes.
    image: Image
    #: Whether it has the runtime package (``celery_ecs/``, its ``celery-ecs-health`` script);
    #: before it, the health check was ``python -m app.health``.
    has_runtime_package: bool


@cache
def baseline(revision: str) -> Baseline:
    """``revision``'s tree, extracted once into the twin's cache (``git archive``)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--short=12",
             f"{revision}^{{commit}}"], check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"--baseline {revision}: not a commit of this checkout "
                         f"({error.stderr.strip()})") from None  # fmt: skip
    tree = CACHE / f"source-{commit}"
    if not tree.exists():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 check=True, capture_output=True).stdout  # fmt: skip
        partial = tree.with_name(f"{tree.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            # This checkout's own commit. The "data" filter (PEP 706) where this Python has it:
            # 3.11.4 on; Debian 12's python3, which the virtualenv may be built from, is 3.11.2.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(partial, filter="data")
            else:
                tar.extractall(partial)
        partial.rename(tree)
    return Baseline(commit, parse_image(tree / "Dockerfile", tree),
                    (tree / "celery_ecs").is_dir())  # fmt: skip


def at_baseline(config: WorkerConfig, base: Baseline) -> WorkerConfig:
    """``config``'s task definition run from ``base``'s image; for a revision before the
    runtime package, with the health check that revision's image has."""
    definition = config.definition
    if not base.has_runtime_package:
        container = dict(definition.rendered.container)
        check = dict(container["healthCheck"])
        check["command"] = ["CMD", "python", "-m", "app.health", *check["command"][2:]]
        container["healthCheck"] = check
        rendered = replace(definition.rendered, containers=[container], inputs={
            **definition.rendered.inputs, "containerDefinitions": json.dumps([container])})
        definition = replace(definition, rendered=rendered)
    return replace(config, label=f"{config.label} at {base.revision}", image=base.image,
                   definition=definition)  # fmt: skip


def prepare(base: Baseline | None) -> None:
    """What a first start would otherwise do inside a measurement: render every definition and
    build the image venvs (once per set of requirements)."""
    long_pool(), short_pool(), defaults(), recovery_pools(), visibility_alone()
    throughput_subjects(base)
    image_venv(image())
    if base is not None:
        image_venv(base.image)


def overrides_note(configs: Sequence[WorkerConfig]) -> str:
    """Which rows got container environment overrides (everything else is stack config)."""
    notes = sorted({f"{name}={value} ({config.label})" for config in configs
                    for name, value in config.environment_overrides.items()})  # fmt: skip
    return "; ".join(notes) or "none"


class Bench:
    """The Redis server, the scratch directory and every container a measurement starts.

    Each measurement gets a database of its own on the one server, so measurements that only
    wait (the crash rows) can run beside the others. The server listens on the twin's bridge:
    every container has a network namespace of its own (awsvpc) and reaches it there.
    """

    def __init__(self, server: RedisServer, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        #: Every container started (their logs are printed if the run fails).
        self.containers: list[Container] = []
        #: The task networks not released yet.
        self.networks: list[TaskNetwork] = []
        self._lock = threading.Lock()
        self._databases = iter(range(16))  # redis-server has 16
        #: Set when one measurement failed: the others stop waiting.
        self.aborted = threading.Event()

    def database(self) -> tuple[str, redis.Redis]:
        with self._lock:
            number = next(self._databases)
        url = f"redis://{HOST_ADDRESS}:{self.server.port}/{number}"
        return url, redis.Redis.from_url(url, decode_responses=True)

    def recycle_databases(self) -> None:
        """Empty every database and hand them out again (16 are not enough for all the rows):
        only once no container is left to use them."""
        with self._lock:
            assert not self.networks, "containers still run"
            redis.Redis(port=self.server.port).flushall()
            self._databases = iter(range(16))

    def start_worker(self, config: WorkerConfig, broker_url: str, name: str) -> Container:
        """Start the worker's container as a task of its own (a standalone RunTask); return at
        once. In ECS the broker URL comes from the task definition's secrets."""
        network = allocate()
        with self._lock:
            self.networks.append(network)
        worker = start_worker_container(
            config.definition, broker_url, self.workdir, name, network=network,
            command=config.command, environment_overrides=config.environment_overrides,
            container_image=config.image,
        )  # fmt: skip
        with self._lock:
            self.containers.append(worker)
        return worker

    def stop_everything(self) -> None:
        """Kill every container still running (each at once, as a dying task), then give the
        task networks back."""
        with self._lock:
            containers, networks = list(self.containers), self.networks
            self.networks = []  # released once only: the address may be someone else's next
        for container in containers:
            container.kill()
        for network in networks:
            network.release()

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str,
                 interval: float = 0.02) -> float:
        """Poll until ``condition()`` is truthy; return the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            if self.aborted.wait(interval):
                raise RuntimeError(f"aborted while waiting for {what}")
        return time.monotonic()


def send_credit(broker_url: str, key: str, work_seconds: float) -> None:
    publisher = Celery("bench-publisher", set_as_current=False)
    with publisher.connection_for_write(broker_url) as connection:
        publisher.send_task(
            "app.tasks.apply_credit", queue=QUEUE, connection=connection,
            kwargs={"idempotency_key": key, "account": "bench", "amount": 1,
                    "work_seconds": work_seconds},
        )


def attempts(store: redis.Redis, key: str) -> int:
    return int(store.get(f"attempts:{key}") or 0)


def start_task(bench: Bench, config: WorkerConfig, name: str, work_seconds: float) -> tuple[
        Container, str, redis.Redis]:
    """A fresh database and worker, running one ``apply_credit`` of ``work_seconds``."""
    broker_url, store = bench.database()
    worker = bench.start_worker(config, broker_url, name)
    send_credit(broker_url, name, work_seconds)

    def started() -> bool:
        if not worker.alive():
            raise RuntimeError(f"{name} exited early:\n{worker.logs()}")
        return attempts(store, name) == 1

    bench.wait_for(started, WORKER_START_TIMEOUT, f"{name} to start its task")
    return worker, broker_url, store


# --- crash recovery -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CrashResult:
    config: WorkerConfig
    #: Seconds from the SIGKILL to the task's second start; None: not within the window.
    recovered_after: float | None
    #: Where the message was right after the kill: it can only come back from there.
    message_after_kill: str


def crash_recovery(bench: Bench, config: WorkerConfig, name: str) -> CrashResult:
    worker, broker_url, store = start_task(bench, config, name, CRASH_TASK_SECONDS)
    worker.kill()  # the whole container at once: PID 1's death ends its namespace
    killed_at = time.monotonic()
    held = config.held(store)
    message_after_kill = ("acknowledged before it ran: nowhere" if not held
                          else "unacknowledged" if config.celery_defaults
                          else "unacknowledged, in the dead worker's own set")
    bench.start_worker(config, broker_url, f"{name}-replacement")
    try:
        rerun_at = bench.wait_for(lambda: attempts(store, name) >= 2, CRASH_WINDOW,
                                  f"{name}: re-execution", interval=0.1)
    except TimeoutError:
        return CrashResult(config, None, message_after_kill)
    return CrashResult(config, rerun_at - killed_at, message_after_kill)


# --- drain ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DrainResult:
    config: WorkerConfig
    task_seconds: float
    #: Seconds from SIGTERM until the worker process was gone.
    gone_after: float
    killed: bool
    exit_code: int
    outcome: str
    lost: int


def drain(bench: Bench, config: WorkerConfig, name: str, task_seconds: float) -> DrainResult:
    worker, _, store = start_task(bench, config, name, task_seconds)
    started = time.monotonic()
    exit_code = worker.stop()  # SIGTERM, wait the definition's stopTimeout, SIGKILL
    gone_after = time.monotonic() - started
    if store.exists(f"idem:{name}"):
        outcome, lost = "completed", 0
    elif store.llen(QUEUE):
        outcome, lost = "requeued at once", 0
    elif config.held(store):
        outcome, lost = "unacknowledged: back when its liveness expires", 0
    else:
        outcome, lost = "lost (acked early)", 1
    return DrainResult(config, task_seconds, gone_after, exit_code == SIGKILL_EXIT_CODE,
                       exit_code, outcome, lost)


def idle_stop(bench: Bench, config: WorkerConfig, name: str) -> DrainResult:
    """The same stop with no task running: Celery's own time to exit."""
    broker_url, store = bench.database()
    worker = bench.start_worker(config, broker_url, name)
    send_credit(broker_url, name, 0.0)  # done and acknowledged = the worker consumes

    def idle() -> bool:
        if not worker.alive():
            raise RuntimeError(f"{name} exited early:\n{worker.logs()}")
        return bool(store.exists(f"idem:{name}")) and not config.held(store)

    bench.wait_for(idle, WORKER_START_TIMEOUT, f"{name} to be idle")
    started = time.monotonic()
    exit_code = worker.stop()
    return DrainResult(config, 0.0, time.monotonic() - started, exit_code == SIGKILL_EXIT_CODE,
                       exit_code, "no task running", 0)


# --- throughput -----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Host PIDs of a process's children (every thread's: a pool may fork from any)."""
    children: list[int] = []
    try:
        for thread in Path(f"/proc/{pid}/task").iterdir():
            children += map(int, (thread / "children").read_text().split())
    except FileNotFoundError:
        return []  # gone
    return children


def worker_pids(worker: Container) -> tuple[int, list[int]]:
    """Host PIDs of the worker's main process and its pool processes. The container's PID 1
    is the init (tini, ``initProcessEnabled``) and the worker its one child; inside, they are
    1 and 2 (a PID namespace of its own), but ``/proc`` here knows them by their host PIDs."""
    init = worker.init_pid()
    if worker.plan.init:
        (main,) = child_pids(init)
    else:
        main = init
    return main, child_pids(main)


@dataclass(frozen=True)
class Round:
    """One round of no-op tasks through one worker."""

    rate: float
    #: CPU microseconds per task: the worker's main process, its pool processes, redis-server.
    cpu_main: float
    cpu_pool: float
    cpu_redis: float
    #: Redis commands per task (those run inside a Lua script included), the bench's own not.
    commands: float


def release_noops(
    bench: Bench, worker: Container, broker_url: str, store: redis.Redis, config: WorkerConfig,
    count: int, *, ignore_result: bool = False,
) -> Round:
    """Publish ``count`` no-op tasks, release them at once, measure until all are done.

    They are published to a queue nobody consumes, then renamed onto the worker's queue in one
    step: the publisher's speed is not measured. Done = the queue and the worker's
    unacknowledged set are empty. With this project's late acks that is the last task's
    completion; with the defaults' early acks, at most ``concurrency`` no-op bodies are still
    finishing (microseconds).
    """
    publisher = Celery("bench-publisher", set_as_current=False)
    with publisher.connection_for_write(broker_url) as connection, \
            connection.Producer() as producer:
        for _ in range(count):
            publisher.send_task("app.tasks.noop", queue=STAGING_QUEUE, producer=producer,
                                ignore_result=ignore_result)
    admin = redis.Redis(port=bench.server.port)
    main, pool = worker_pids(worker)
    cpu_before = [cpu_seconds(main), sum(map(cpu_seconds, pool)),
                  cpu_seconds(bench.server.process.pid)]  # fmt: skip
    commands_before = worker_commands(admin)
    released = time.monotonic()
    with store.pipeline() as release:  # one step, MULTI
        release.rename(STAGING_QUEUE, QUEUE)
        # The wake tokens this project's publish pushes with the messages (capped as it caps
        # them): an idle worker of this project waits on them, not on the queue. The others
        # never read the list.
        release.lpush(wake_key(QUEUE), *[1] * min(count, WAKE_TOKENS_MAX))
        release.execute()

    def drained() -> bool:
        return store.llen(QUEUE) == 0 and config.held(store) == 0

    done = bench.wait_for(drained, 120, f"{config.label}: {count} no-op tasks", interval=0.005)
    cpu_after = [cpu_seconds(main), sum(map(cpu_seconds, pool)),
                 cpu_seconds(bench.server.process.pid)]  # fmt: skip
    per_task = [(after - before) / count * 1e6
                for before, after in zip(cpu_before, cpu_after, strict=True)]  # fmt: skip
    return Round(count / (done - released), *per_task,
                 commands=(worker_commands(admin) - commands_before) / count)  # fmt: skip


@dataclass(frozen=True)
class ThroughputSubject:
    label: str
    config: WorkerConfig
    ignore_result: bool


def project_subjects(project: WorkerConfig) -> tuple[ThroughputSubject, ThroughputSubject]:
    """The project's worker with results stored, then without."""
    return (
        ThroughputSubject(f"{project.label}, results stored (as the web sends)", project,
                          ignore_result=False),
        ThroughputSubject(f"{project.label}, no result (as beat sends)", project,
                          ignore_result=True),
    )


@cache
def throughput_subjects(base: Baseline | None = None) -> tuple[ThroughputSubject, ...]:
    """The project's two, ``base``'s two, the defaults with results, and last the defaults:
    the baseline of every ratio."""
    project, with_results = throughput_project(), throughput_defaults_with_results()
    earlier = () if base is None else project_subjects(at_baseline(project, base))
    return (
        *project_subjects(project),
        *earlier,
        ThroughputSubject(with_results.label, with_results, ignore_result=False),
        ThroughputSubject(throughput_defaults().label, throughput_defaults(),
                          ignore_result=False),
    )


@dataclass(frozen=True)
class ThroughputResult:
    subject: ThroughputSubject
    rounds: list[Round]

    def median(self, figure: str) -> float:
        return statistics.median(getattr(r, figure) for r in self.rounds)

    def ratio(self, baseline: ThroughputResult) -> float:
        """The median over rounds of this rate over the baseline's rate in the same round."""
        return statistics.median(mine.rate / theirs.rate
                                 for mine, theirs in zip(self.rounds, baseline.rounds,
                                                         strict=True))  # fmt: skip


def throughput(bench: Bench, base: Baseline | None) -> list[ThroughputResult]:
    """Rounds of every subject in turn (A, B, C, D, A, B, C, D...), so a change in the
    machine's load during the run affects them alike; each is compared with the baseline's
    round of the same turn. The workers wait idle on their own databases."""
    subjects = throughput_subjects(base)
    workers: dict[str, tuple[Container, str, redis.Redis]] = {}
    for index, subject in enumerate(subjects):
        if subject.config.label not in workers:
            broker_url, store = bench.database()
            worker = bench.start_worker(subject.config, broker_url, f"throughput-{index}")
            workers[subject.config.label] = worker, broker_url, store
            # Warm-up; it also waits until the worker consumes.
            release_noops(bench, worker, broker_url, store, subject.config, WARMUP_TASKS)
    rounds: dict[str, list[Round]] = {subject.label: [] for subject in subjects}
    for _ in range(THROUGHPUT_ROUNDS):
        for subject in subjects:
            worker, broker_url, store = workers[subject.config.label]
            rounds[subject.label].append(release_noops(
                bench, worker, broker_url, store, subject.config, THROUGHPUT_TASKS,
                ignore_result=subject.ignore_result))
    for label, (worker, _, _) in workers.items():
        worker.stop()  # as ECS stops it
        # A task that failed or was unknown is acknowledged too: make sure none did.
        if "ERROR" in worker.logs() or "CRITICAL" in worker.logs():
            raise RuntimeError(f"{label}: the worker logged errors:\n{worker.logs()[-3000:]}")
    return [ThroughputResult(subject, rounds[subject.label]) for subject in subjects]


# --- report ---------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                        strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join("  " + line.rstrip() for line in lines)


def redis_version(server: RedisServer) -> str:
    return str(redis.Redis(port=server.port).info("server")["redis_version"])


def before_liveness(config: WorkerConfig) -> str:
    """When the crashed worker's task came back before liveness: the first 5 s sweep after the
    visibility timeout (the defaults lose it: acknowledged before it ran)."""
    if config.celery_defaults:
        return "never: acknowledged early"
    vt = config.visibility_timeout
    return f"{vt}..{vt + MAX_SWEEP_INTERVAL:g} s"


def report(
    server: RedisServer, crashes: list[CrashResult], drains: list[DrainResult],
    rates: list[ThroughputResult], elapsed: float, base: Baseline | None,
) -> str:
    configs = [*(r.config for r in crashes), *(d.config for d in drains),
               *(r.subject.config for r in rates)]  # fmt: skip
    with_results, defaults_with_results, celery_defaults = rates[0], rates[-2], rates[-1]
    prefetch = throughput_project().environment[env_names.PREFETCH_MULTIPLIER]
    deadlines = Deadlines(recovery_pools()[0].liveness_timeout)
    lost = {is_default: sum(d.lost for d in drains if d.config.celery_defaults == is_default)
            for is_default in (False, True)}
    return "\n".join([
        f"Worker budget vs Celery defaults, measured {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"celery {celery.__version__}, kombu {kombu.__version__}, "
        f"redis-server {redis_version(server)}. Run took {elapsed:.0f} s.",
        f"SCALED: stop cap {SCALED_STOP_CAP} s instead of Fargate's {FARGATE_STOP_TIMEOUT_CAP} s;"
        f" Celery defaults get ECS's default stopTimeout {ECS_DEFAULT_STOP_TIMEOUT} s at the same "
        f"scale = {DEFAULTS_STOP_TIMEOUT:g} s.",
        "Every worker is a container on the ECS twin (tini, the image's user, read-only root, a "
        "network namespace of its own),",
        "run from the task definition the program renders for the pool (stack config: "
        "taskTimeout, concurrency, maxStopTimeout,",
        f"maxCountdown); redis-server on the twin's bridge ({HOST_ADDRESS}). Container "
        f"environment overrides: {overrides_note(configs)}.",
        "",
        "1. Crash recovery: the whole worker is SIGKILLed (the container dies) while a "
        f"{CRASH_TASK_SECONDS:g} s task runs; a replacement",
        "   worker starts at once. Seconds from the SIGKILL until the task starts again.",
        table(
            ["worker", "visibility timeout", "the message after the kill",
             "before liveness: back after", "measured: runs again after"],
            [[r.config.label, f"{r.config.visibility_timeout} s", r.message_after_kill,
              before_liveness(r.config),
              f"{r.recovered_after:.1f} s" if r.recovered_after is not None
              else f"never: LOST (watched {CRASH_WINDOW:.0f} s)"] for r in crashes],
        ),
        f"   Liveness (timeout {deadlines.timeout:g} s): the replacement's sweep finds the "
        "dead worker's key expired at most "
        f"{deadlines.timeout:g} s after its last refresh,",
        f"   and sweeps every {deadlines.sweep_interval:.2g} s: back within "
        f"{deadlines.timeout:g}..{deadlines.recovery_bound:.1f} s of the kill, whatever the "
        "taskTimeout. \"before liveness\": the first",
        f"   {MAX_SWEEP_INTERVAL:g} s sweep after the visibility timeout (computed from the "
        "budget); the SCALED row measures that mechanism",
        "   (this project's last resort) at a visibility timeout one can wait for, with the "
        "liveness timeout out of its way.",
        "",
        "2. Drain: ECS stops the worker (SIGTERM, wait stopTimeout, SIGKILL) while one task "
        "runs (\"none\": idle worker).",
        table(
            ["worker", "task", "stopTimeout", "shutdown", "gone after", "how", "the task"],
            [[d.config.label, f"{d.task_seconds:g} s" if d.task_seconds else "none",
              f"{d.config.stop_timeout:g} s", d.config.shutdown, f"{d.gone_after:.1f} s",
              "SIGKILL" if d.killed else f"exited ({d.exit_code})", d.outcome]
             for d in drains],
        ),
        f"   Tasks lost: {lost[False]} with this project, {lost[True]} with Celery defaults. "
        "\"gone after\" includes Celery's own exit (idle rows).",
        "   A cold-shutdown worker with a task running waits its whole soft shutdown even if the "
        "task ends sooner",
        "   (Celery sleeps the full timeout, celery#9505); an idle one exits at once.",
        "",
        f"3. Throughput: {THROUGHPUT_TASKS} no-op tasks released at once into one worker, "
        f"concurrency {THROUGHPUT_CONCURRENCY}, after {WARMUP_TASKS} warm-up",
        f"   tasks; tasks/s from the release until the last is acknowledged; {THROUGHPUT_ROUNDS} "
        "rounds, the workers in turns. \"vs defaults\":",
        "   the median over the rounds of the worker's rate over the Celery defaults' rate in "
        "the same turn. CPU: microseconds",
        "   per task in the worker's main process, its pool processes and redis-server (medians)."
        " Commands: Redis commands",
        "   per task, those a Lua script runs included (the bench's own not).",
        table(
            ["worker", "tasks/s", "vs defaults", "CPU main/pool/redis", "commands"],
            [[r.subject.label, f"{r.median('rate'):.0f}", f"{r.ratio(celery_defaults):.2f}",
              f"{r.median('cpu_main'):.0f} / {r.median('cpu_pool'):.0f} / "
              f"{r.median('cpu_redis'):.0f} us", f"{r.median('commands'):.1f}"]
             for r in rates],
        ),
        f"   With results stored, against Celery defaults storing theirs: "
        f"{with_results.ratio(defaults_with_results):.2f}.",
        f"   The project acks late with prefetch {prefetch} (its default pool's), arms time "
        "limits, restores a crashed worker's tasks (liveness) and stores",
        "   SUCCESS (one script) unless the sender ignores the result; the defaults ack early, "
        "prefetch 4 per process and",
        "   store SUCCESS (a read, then a write) only with a result backend. Neither logs a line "
        "per task (APP_LOG_TASKS).",
        *([] if base is None else against_baseline(base, crashes, rates)),
    ])


def against_baseline(
    base: Baseline, crashes: list[CrashResult], rates: list[ThroughputResult]
) -> list[str]:
    """Section 4: this revision over ``base``, from the rows above (the same run)."""
    now, then = (rates[0], rates[1]), (rates[2], rates[3])
    recovered = {r.config.label: r.recovered_after for r in crashes}
    pool = recovery_pools()[1]

    def seconds(label: str) -> str:
        value = recovered[label]
        return "LOST" if value is None else f"{value:.1f} s"

    return [
        "",
        f"4. Against {base.revision} (its app and image requirements, this revision's task "
        "definitions), from the rows above:",
        table(
            ["figure", "this revision", base.revision, "this / " + base.revision],
            [*([subject, f"{mine.median('rate'):.0f} tasks/s",
                f"{theirs.median('rate'):.0f} tasks/s", f"{mine.ratio(theirs):.2f}"]
               for subject, mine, theirs in zip(("throughput, results stored",
                                                 "throughput, no result"), now, then,
                                                strict=True)),
             ["crash recovery, taskTimeout 300", seconds(pool.label),
              seconds(at_baseline(pool, base).label), ""]],
        ),
        "   Throughput ratio: the median over the rounds of this revision's rate over "
        f"{base.revision}'s in the same turn.",
    ]


@contextmanager
def scratch_directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="celery-ecs-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def crashes_and_drains(
    bench: Bench, base: Baseline | None
) -> tuple[list[CrashResult], list[DrainResult]]:
    """The crash rows mostly wait for timers, so the drain rows run meanwhile."""

    def crash(config: WorkerConfig, name: str) -> CrashResult:
        try:
            return crash_recovery(bench, config, name)
        except BaseException:
            bench.aborted.set()  # the drains stop too
            raise

    crash_rows = [*recovery_pools(), visibility_alone(), defaults()]
    if base is not None:
        crash_rows.append(at_baseline(recovery_pools()[1], base))
    long, short, celery_defaults = long_pool(), short_pool(), defaults()
    with ThreadPoolExecutor(max_workers=len(crash_rows)) as executor:
        crash_futures = [executor.submit(crash, config, f"crash-{index}")
                         for index, config in enumerate(crash_rows)]
        try:
            drains = [
                idle_stop(bench, long, "drain-long-pool-idle"),
                drain(bench, long, "drain-long-pool-short", SHORT_TASK_SECONDS),
                drain(bench, long, "drain-long-pool-long", LONG_TASK_SECONDS),
                idle_stop(bench, short, "drain-short-pool-idle"),
                drain(bench, short, "drain-short-pool-short", SHORT_TASK_SECONDS),
                idle_stop(bench, celery_defaults, "drain-defaults-idle"),
                drain(bench, celery_defaults, "drain-defaults-short", SHORT_TASK_SECONDS),
                drain(bench, celery_defaults, "drain-defaults-long", LONG_TASK_SECONDS),
            ]
        except BaseException:
            bench.aborted.set()  # so the executor does not wait out the crash window
            raise
        return [future.result() for future in crash_futures], drains


def require_root() -> bool:
    """Whether this process can run containers on the twin; if not, say so."""
    if os.geteuid() == 0:
        return True
    print("The bench runs its workers as containers on the ECS twin (Linux namespaces, mounts, "
          "a bridge): run it as root.", file=sys.stderr)  # fmt: skip
    return False


@contextmanager
def running_bench() -> Iterator[Bench]:
    """A scratch directory and a redis-server on the twin's bridge, where the containers reach
    it (the bench itself too); every container is killed at the end, and its output printed if
    the run failed."""
    ensure_bridge()
    with scratch_directory() as workdir:
        server = start_redis(bind=("127.0.0.1", HOST_ADDRESS))
        bench = Bench(server, workdir)
        try:
            yield bench
        except BaseException:
            for container in bench.containers:
                print(f"--- {Path(container.plan.state_dir).name} ---\n{container.logs()[-3000:]}",
                      file=sys.stderr)  # fmt: skip
            raise
        finally:
            bench.stop_everything()
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_budget",
                                     description=(__doc__ or "").split("\n\n")[0])  # fmt: skip
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the worker of this git revision, and compare")  # fmt: skip
    arguments = parser.parse_args(argv)
    if not require_root():
        return 2
    base = None if arguments.baseline is None else baseline(arguments.baseline)
    began = time.monotonic()
    print("Measuring (about four minutes)...", file=sys.stderr, flush=True)
    prepare(base)
    with running_bench() as bench:
        crashes, drains = crashes_and_drains(bench, base)
        # Throughput runs alone, so no other worker takes CPU from it.
        bench.stop_everything()
        bench.recycle_databases()
        rates = throughput(bench, base)
        print(report(bench.server, crashes, drains, rates, time.monotonic() - began, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
