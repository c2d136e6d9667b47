"""Measure what the worker timeout budget buys and costs, against Celery's defaults.

    python -m bench.worker_budget        (``make bench``)

One run on this machine, against a redis-server it starts on a free port, with real Celery
worker processes. Three measurements:

- Crash recovery: the whole worker is SIGKILLed (the container dies) while a task runs; a
  replacement worker starts at once, as ECS starts one. Seconds until the task runs again.
- Drain: ECS stops a worker with one task running (SIGTERM, wait ``stopTimeout``, SIGKILL).
  Seconds until the worker is gone, and tasks lost, for a short and a long task.
- Throughput: no-op tasks per second through one worker, median of three rounds.

"This project" is a worker started with the command and environment the program renders for a
pool (``infra.config`` + ``infra.containers``, the same functions the Pulumi program calls).
"Celery defaults" is ``bench.defaults_app``: the same task bodies, only a broker URL set.

Stop timeouts are scaled down so the run takes about three minutes: the stop cap is 20 s instead
of Fargate's 120 s, and the defaults get ECS's default ``stopTimeout`` of 30 s at the same scale
(5 s). The output says so next to every scaled number.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import celery
import kombu
import redis
from celery import Celery

from app import settings as env_names
from app.recovery import SWEEP_INTERVAL_SECONDS
from devtools.processes import ROOT, AppProcess, python_argv, start_process
from devtools.redis_server import RedisServer, start_redis
from infra import config as stack_config
from infra.budget import FARGATE_STOP_TIMEOUT_CAP, WorkerBudget
from infra.containers import worker_command, worker_environment

#: The stop cap every scaled row uses, instead of Fargate's 120 s.
SCALED_STOP_CAP = 20
STOP_SCALE = SCALED_STOP_CAP / FARGATE_STOP_TIMEOUT_CAP
#: ECS's default container stopTimeout, and the same at the bench's scale (what the defaults get).
ECS_DEFAULT_STOP_TIMEOUT = 30
DEFAULTS_STOP_TIMEOUT = ECS_DEFAULT_STOP_TIMEOUT * STOP_SCALE
#: Celery's default visibility timeout of the Redis transport (kombu), seconds.
CELERY_DEFAULT_VISIBILITY = 3600

SHORT_TASK_SECONDS = 2.0
LONG_TASK_SECONDS = 60.0
#: The crashed task: long enough to still be running when the SIGKILL lands.
CRASH_TASK_SECONDS = 5.0
#: How long the crash row waits for a re-execution before it reports the task lost: well past
#: this project's 83 s visibility timeout and its sweep.
CRASH_WINDOW = 125.0

THROUGHPUT_TASKS = 2000
WARMUP_TASKS = 200
THROUGHPUT_ROUNDS = 3
#: Both throughput workers get one process per CPU.
THROUGHPUT_CONCURRENCY = os.cpu_count() or 1

#: The queue every worker here consumes (a queue of ``app.routing``), and where throughput
#: rounds are staged before they are released all at once.
QUEUE = "default"
STAGING_QUEUE = "bench-staging"
POOL = "bench"
WORKER_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    """How to start one kind of worker, and what the ECS stop does to it."""

    label: str
    argv: Sequence[str]
    #: The configuration variables (the broker URL and local paths are added at start).
    environment: Mapping[str, str]
    #: Seconds between SIGTERM and SIGKILL.
    stop_timeout: float
    visibility_timeout: int
    shutdown: str
    #: The Redis keys where kombu keeps delivered, unacknowledged messages of this worker.
    unacked_key: str
    unacked_index_key: str
    celery_defaults: bool = False


def project_worker(
    label: str, *, task_timeout: int, concurrency: int, max_stop_timeout: int = 120,
    max_countdown: int = 300,
) -> WorkerConfig:
    """A worker as the program renders it for a pool of a stack's configuration."""
    bench_pool = {"name": POOL, "queues": [QUEUE], "taskTimeout": task_timeout,
                  "concurrency": concurrency, "maxStopTimeout": max_stop_timeout}
    # Another pool takes the other queue: a stack must consume every queue of app.routing.
    stack = stack_config.load({
        "maxCountdown": str(max_countdown),
        "workers": [bench_pool, {"name": "others", "queues": ["long"]}],
    })
    worker_pool = stack.workers[0]
    budget: WorkerBudget = worker_pool.budget
    shutdown = "warm" if budget.shutdown == "warm" else (
        f"cold, {budget.soft_shutdown_timeout} s soft shutdown")
    return WorkerConfig(
        label=label,
        argv=worker_command(worker_pool.name, worker_pool.queues, worker_pool.concurrency),
        environment=worker_environment(stack, worker_pool, namespace=""),
        stop_timeout=budget.stop_timeout,
        visibility_timeout=budget.visibility_timeout,
        shutdown=shutdown,
        unacked_key=f"unacked:{POOL}",
        unacked_index_key=f"unacked_index:{POOL}",
    )


def defaults_worker(label: str, concurrency: int, stop_timeout: float) -> WorkerConfig:
    """Celery's defaults, started with the same command line as the project's worker."""
    argv = [
        "celery", "--app", "bench.defaults_app", "worker", "--queues", QUEUE,
        "--concurrency", str(concurrency), "--hostname", "defaults@%h",
        "--without-mingle", "--without-gossip",
    ]
    return WorkerConfig(
        label=label, argv=argv, environment={}, stop_timeout=stop_timeout,
        visibility_timeout=CELERY_DEFAULT_VISIBILITY, shutdown="warm",
        unacked_key="unacked", unacked_index_key="unacked_index", celery_defaults=True,
    )


# The pools the rows run. maxCountdown 0 keeps the visibility timeout (and so the crash row)
# short; with the default 300 s it would be 300 s longer.
LONG_POOL = project_worker("this project, taskTimeout 60", task_timeout=60, concurrency=1,
                           max_stop_timeout=SCALED_STOP_CAP, max_countdown=0)
SHORT_POOL = project_worker("this project, taskTimeout 5", task_timeout=5, concurrency=1,
                            max_stop_timeout=SCALED_STOP_CAP, max_countdown=0)
DEFAULTS = defaults_worker("Celery defaults", concurrency=1, stop_timeout=DEFAULTS_STOP_TIMEOUT)
# Throughput: the stack's default pool, unscaled.
THROUGHPUT_PROJECT = project_worker("this project, default pool (taskTimeout 300)",
                                    task_timeout=stack_config.DEFAULT_TASK_TIMEOUT,
                                    concurrency=THROUGHPUT_CONCURRENCY)
THROUGHPUT_DEFAULTS = defaults_worker("Celery defaults", THROUGHPUT_CONCURRENCY,
                                      DEFAULTS_STOP_TIMEOUT)


class Bench:
    """The Redis server, the scratch directory and every process a measurement starts.

    Each measurement gets a database of its own on the one server, so measurements that only
    wait (the crash rows) can run beside the others.
    """

    def __init__(self, server: RedisServer, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.processes: list[AppProcess] = []
        self._lock = threading.Lock()
        self._databases = iter(range(1, 16))
        #: Set when one measurement failed: the others stop waiting.
        self.aborted = threading.Event()

    def database(self) -> tuple[str, redis.Redis]:
        with self._lock:
            number = next(self._databases)
        url = f"redis://127.0.0.1:{self.server.port}/{number}"
        return url, redis.Redis.from_url(url, decode_responses=True)

    def start_worker(self, config: WorkerConfig, broker_url: str, name: str) -> AppProcess:
        heartbeat_dir = self.workdir / name
        heartbeat_dir.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CELERY_", "WEB_", "APP_")) and k != env_names.REMAP_SIGTERM}
        env.update(config.environment)
        env.update({
            # In ECS the broker URL comes from the task definition's secrets.
            env_names.BROKER_URL: broker_url,
            env_names.HEARTBEAT_DIR: str(heartbeat_dir),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        })
        with self._lock:
            worker = start_process(name, python_argv(config.argv), env, self.workdir)
            self.processes.append(worker)
        return worker

    def stop_everything(self) -> None:
        for process in self.processes:
            process.kill_all()

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
        AppProcess, str, redis.Redis]:
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
    worker.kill_all()
    killed_at = time.monotonic()
    held = store.hlen(config.unacked_key)
    message_after_kill = (f"{held} unacknowledged (kombu restores it)" if held
                          else "acknowledged before it ran: nowhere")
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
    exit_code = worker.stop(config.stop_timeout)  # SIGTERM, wait stopTimeout, SIGKILL
    gone_after = time.monotonic() - started
    if store.exists(f"idem:{name}"):
        outcome, lost = "completed", 0
    elif store.llen(QUEUE):
        outcome, lost = "requeued at once", 0
    elif store.hlen(config.unacked_key):
        outcome, lost = f"unacked: back after {config.visibility_timeout} s", 0
    else:
        outcome, lost = "lost (acked early)", 1
    return DrainResult(config, task_seconds, gone_after, exit_code == -signal.SIGKILL,
                       exit_code, outcome, lost)


def idle_stop(bench: Bench, config: WorkerConfig, name: str) -> DrainResult:
    """The same stop with no task running: Celery's own time to exit."""
    broker_url, store = bench.database()
    worker = bench.start_worker(config, broker_url, name)
    send_credit(broker_url, name, 0.0)  # done and acknowledged = the worker consumes

    def idle() -> bool:
        if not worker.alive():
            raise RuntimeError(f"{name} exited early:\n{worker.logs()}")
        return bool(store.exists(f"idem:{name}")) and not store.hlen(config.unacked_key)

    bench.wait_for(idle, WORKER_START_TIMEOUT, f"{name} to be idle")
    started = time.monotonic()
    exit_code = worker.stop(config.stop_timeout)
    return DrainResult(config, 0.0, time.monotonic() - started, exit_code == -signal.SIGKILL,
                       exit_code, "no task running", 0)


# --- throughput -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThroughputResult:
    label: str
    rounds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


def release_noops(
    bench: Bench, broker_url: str, store: redis.Redis, config: WorkerConfig, count: int,
    *, ignore_result: bool = False,
) -> float:
    """Publish ``count`` no-op tasks, release them at once, return tasks/s until all are done.

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
    released = time.monotonic()
    store.rename(STAGING_QUEUE, QUEUE)

    def drained() -> bool:
        queued, unacked = store.pipeline().llen(QUEUE).zcard(config.unacked_index_key).execute()
        return queued == 0 and unacked == 0

    done = bench.wait_for(drained, 120, f"{config.label}: {count} no-op tasks", interval=0.005)
    return count / (done - released)


@dataclass(frozen=True)
class ThroughputSubject:
    label: str
    config: WorkerConfig
    ignore_result: bool


THROUGHPUT_SUBJECTS = (
    ThroughputSubject(THROUGHPUT_PROJECT.label, THROUGHPUT_PROJECT, ignore_result=False),
    ThroughputSubject(f"{THROUGHPUT_PROJECT.label}, sent with ignore_result",
                      THROUGHPUT_PROJECT, ignore_result=True),
    ThroughputSubject(THROUGHPUT_DEFAULTS.label, THROUGHPUT_DEFAULTS, ignore_result=False),
)


def throughput(bench: Bench) -> list[ThroughputResult]:
    """Rounds of every subject in turn (A, B, C, A, B, C...), so a change in the machine's load
    during the run affects them alike. The workers wait idle on their own databases."""
    workers: dict[str, tuple[AppProcess, str, redis.Redis]] = {}
    for index, subject in enumerate(THROUGHPUT_SUBJECTS):
        if subject.config.label not in workers:
            broker_url, store = bench.database()
            worker = bench.start_worker(subject.config, broker_url, f"throughput-{index}")
            workers[subject.config.label] = worker, broker_url, store
            # Warm-up; it also waits until the worker consumes.
            release_noops(bench, broker_url, store, subject.config, WARMUP_TASKS)
    rounds: dict[str, list[float]] = {subject.label: [] for subject in THROUGHPUT_SUBJECTS}
    for _ in range(THROUGHPUT_ROUNDS):
        for subject in THROUGHPUT_SUBJECTS:
            _, broker_url, store = workers[subject.config.label]
            rounds[subject.label].append(release_noops(
                bench, broker_url, store, subject.config, THROUGHPUT_TASKS,
                ignore_result=subject.ignore_result))
    for label, (worker, _, _) in workers.items():
        worker.stop(30)
        # A task that failed or was unknown is acknowledged too: make sure none did.
        if "ERROR" in worker.logs() or "CRITICAL" in worker.logs():
            raise RuntimeError(f"{label}: the worker logged errors:\n{worker.logs()[-3000:]}")
    return [ThroughputResult(label, rates) for label, rates in rounds.items()]


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


def report(
    server: RedisServer, crashes: list[CrashResult], drains: list[DrainResult],
    rates: list[ThroughputResult], elapsed: float,
) -> str:
    baseline = rates[-1].median
    default_pool = stack_config.load({}).workers[0].budget
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
        "The project's scaled pools run with maxCountdown 0 (the visibility timeout grows with "
        "it).",
        "",
        "1. Crash recovery: the whole worker is SIGKILLed (the container dies) while a "
        f"{CRASH_TASK_SECONDS:g} s task runs; a replacement",
        "   worker starts at once. Seconds from the SIGKILL until the task starts again.",
        table(
            ["worker", "visibility timeout", "the message after the kill", "task runs again"],
            [[r.config.label, f"{r.config.visibility_timeout} s", r.message_after_kill,
              f"after {r.recovered_after:.1f} s" if r.recovered_after is not None
              else f"never: LOST (watched {CRASH_WINDOW:.0f} s)"] for r in crashes],
        ),
        "   It comes back at the first sweep after the visibility timeout (the running "
        f"replacement sweeps every {SWEEP_INTERVAL_SECONDS:g} s,",
        "   app/recovery.py). Unscaled default pool (taskTimeout 300, maxCountdown 300): "
        f"visibility {default_pool.visibility_timeout} s, so",
        f"   {default_pool.visibility_timeout}.."
        f"{default_pool.visibility_timeout + SWEEP_INTERVAL_SECONDS:g} s after a crash.",
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
        "   tasks; tasks/s from the release until the last is acknowledged; median of "
        f"{THROUGHPUT_ROUNDS} rounds, taken in turns.",
        table(
            ["worker", "median", "vs defaults", "rounds (tasks/s)"],
            [[r.label, f"{r.median:.0f} tasks/s", f"{r.median / baseline:.2f}",
              ", ".join(f"{rate:.0f}" for rate in r.rounds)] for r in rates],
        ),
        "   The project acks late with prefetch 1, arms time limits, logs each task at INFO and, "
        "unless the sender",
        "   ignores the result, stores STARTED and SUCCESS states. The defaults ack early, "
        "prefetch 4 per process, log",
        "   warnings only and have no result backend.",
    ])


@contextmanager
def scratch_directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="celery-ecs-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def crashes_and_drains(bench: Bench) -> tuple[list[CrashResult], list[DrainResult]]:
    """The crash rows mostly wait for timers, so the drain rows run meanwhile."""

    def crash(config: WorkerConfig, name: str) -> CrashResult:
        try:
            return crash_recovery(bench, config, name)
        except BaseException:
            bench.aborted.set()  # the drains stop too
            raise

    with ThreadPoolExecutor(max_workers=2) as executor:
        crash_futures = [executor.submit(crash, LONG_POOL, "crash-project"),
                         executor.submit(crash, DEFAULTS, "crash-defaults")]
        try:
            drains = [
                idle_stop(bench, LONG_POOL, "drain-long-pool-idle"),
                drain(bench, LONG_POOL, "drain-long-pool-short", SHORT_TASK_SECONDS),
                drain(bench, LONG_POOL, "drain-long-pool-long", LONG_TASK_SECONDS),
                idle_stop(bench, SHORT_POOL, "drain-short-pool-idle"),
                drain(bench, SHORT_POOL, "drain-short-pool-short", SHORT_TASK_SECONDS),
                idle_stop(bench, DEFAULTS, "drain-defaults-idle"),
                drain(bench, DEFAULTS, "drain-defaults-short", SHORT_TASK_SECONDS),
                drain(bench, DEFAULTS, "drain-defaults-long", LONG_TASK_SECONDS),
            ]
        except BaseException:
            bench.aborted.set()  # so the executor does not wait out the crash window
            raise
        return [future.result() for future in crash_futures], drains


def main() -> int:
    began = time.monotonic()
    print("Measuring (about three minutes)...", file=sys.stderr, flush=True)
    with scratch_directory() as workdir:
        server = start_redis()
        bench = Bench(server, workdir)
        try:
            crashes, drains = crashes_and_drains(bench)
            # Throughput runs alone, so no other worker takes CPU from it.
            bench.stop_everything()
            rates = throughput(bench)
            print(report(server, crashes, drains, rates, time.monotonic() - began))
        except BaseException:
            for process in bench.processes:
                print(f"--- {process.name} ---\n{process.logs()[-3000:]}", file=sys.stderr)
            raise
        finally:
            bench.stop_everything()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
