"""Which liveness timeout: recovery, false restores under saturation, Redis cost, side by side.

    python -m bench.liveness_timeouts          (part of ``make bench``; as root: containers)

For each liveness timeout ``L`` of ``TIMEOUTS`` (the sweep interval derives from it:
``Deadlines.sweep_interval``), in one run on this machine, every worker a container on the ECS
twin from the task definition the program renders for the bench's pool (``bench.worker_budget``),
``CELERY_LIVENESS_TIMEOUT`` set as a container environment override (no stack config key sets
it), each timeout on a redis-server of its own, the timeouts measured at the same time:

1. Recovery: a worker is SIGKILLed (the whole container) while it runs a task; a second worker
   of the pool is idle meanwhile. Seconds from the SIGKILL until the message is back on its
   queue (the dead worker's set is empty: a sweep restored it) and until the task starts again
   on the second worker. ``RECOVERY_TRIALS`` trials in a row per timeout, their kills spread
   evenly over the second worker's sweep cycle (the refresh cycle's phase is left to chance).
2. Saturation: a worker of the default pool's concurrency (one slot per CPU) runs one
   CPU-spinning task per slot (``bench.cpu_task``), while the bench runs one busy process per CPU
   on the host too; a second worker of the pool sweeps. For ``SATURATION_SECONDS``: messages
   restored while the busy worker still held them (its set shrank, or a task started twice),
   liveness losses it declared (each cancels its tasks: a false alarm), and the longest gap
   between two refreshes of its lease as redis-server received them (``MONITOR``'s timestamps),
   against the ``L/2`` after which the worker declares the loss.
3. Idle cost: two idle workers for ``IDLE_SECONDS``; Redis commands per second per worker,
   counted as ``bench.redis_commands`` counts them (``INFO commandstats`` deltas on the
   timeout's own server, where the bench sends nothing but ``INFO``), by name. The sweeps'
   scripts (the stamps, the pool's turn) are an ``EVALSHA`` each, as the event loop's ``FETCH``
   polls are: ``MONITOR`` counts theirs between the two ``INFO`` (``SweepScripts``).

Ratios are against ``TODAY`` (the liveness timeout before issue 21). Nothing here is asserted
by the test suite: figures on a shared machine are for reading, not for pass/fail.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, cast

import celery
import kombu
import redis
from celery import Celery

from bench.redis_commands import command_calls
from bench.worker_budget import (
    QUEUE,
    WORKER_START_TIMEOUT,
    Bench,
    WorkerConfig,
    attempts,
    project_worker,
    redis_version,
    require_root,
    scratch_directory,
    send_credit,
    table,
)
from celery_ecs import settings as env_names
from celery_ecs.liveness import REGISTRY_KEY, Deadlines, WorkerKeys
from celery_ecs.recovery import STAMP_SHA, TURN_SHA
from devtools.twin.awsvpc import HOST_ADDRESS, ensure_bridge
from devtools.twin.container import Container
from devtools.twin.dockerfile_image import Image, image_venv
from infra import config_tables as stack_config
from testkit.processes import ROOT
from testkit.redis_server import start_redis
from testkit.rendered_worker import image

#: The liveness timeouts compared, seconds; the sweep interval of each is its ``Deadlines``'.
TIMEOUTS = (15, 10, 8, 6)
#: The liveness timeout before issue 21: the baseline of the ratios.
TODAY = 15
RECOVERY_TRIALS = 4
#: The crashed task (a sleep): still running when the SIGKILL lands, however slowly the second
#: worker starts on a loaded machine. Its rerun is killed with the trial's workers.
CRASH_TASK_SECONDS = 30.0
#: How long a recovery trial waits for the message before it reports it lost.
RECOVERY_WINDOW = 60.0
SATURATION_SECONDS = 60.0
#: The busy tasks outlast the window, so the worker holds them throughout.
BUSY_TASK_SECONDS = SATURATION_SECONDS + 15
IDLE_SECONDS = 30.0
IDLE_WORKERS = 2
#: Before the idle count starts: the workers' start-up commands are not idle cost.
IDLE_SETTLE_SECONDS = 5.0
CPUS = os.cpu_count() or 1
#: ``bench.cpu_task``'s task (not imported: that module imports the example app, which needs a
#: broker URL to load).
BUSY_CPU = "bench.busy_cpu"
#: What the bench itself sends to the idle-cost servers.
IDLE_BENCH_COMMANDS = frozenset({"info"})
#: What an idle worker's sweeps send (``celery_ecs.recovery``), by name: the registry, the others'
#: leases, the ``PING`` of the connection each sweep opens, the ``SET`` of the pool's turn (its
#: only ``SET`` while idle: the lease's comes at the start), and what the stamp script of each set
#: of the pool runs (``EXISTS`` alone for an empty set; the others for a set that holds messages).
#: Not by name: the scripts' own ``EVALSHA`` (``SweepScripts``), and ``ZADD`` and ``DEL``, which the
#: queue metrics and the ``FETCH`` polls send too (the script runs them only for a set that holds
#: or held messages, none while idle). A gone worker's restore adds its transactions (none while
#: idle). The rest of an idle worker's commands (its ``FETCH`` and ``BRPOP`` polls, the queue
#: metrics) do not depend on the liveness timeout.
SWEEP_COMMANDS = frozenset(
    {"smembers", "exists", "ping", "set", "hkeys", "time", "zrange", "zrem"}
)


@cache
def busy_image() -> Image:
    """The project's image plus ``bench/cpu_task.py``, as ``FROM <it>`` and a ``COPY`` build it."""
    project = image()
    added = {f"{project.workdir}/bench/{name}": ROOT / "bench" / name
             for name in ("__init__.py", "cpu_task.py")}  # fmt: skip
    return replace(project, copies={**project.copies, **added})


@dataclass(frozen=True)
class Timeout:
    """One liveness timeout under test, and the workers it runs."""

    seconds: int

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(self.seconds)

    @property
    def label(self) -> str:
        return f"L {self.seconds} s / sweep {self.deadlines.sweep_interval:.2g} s"

    def worker(self, concurrency: int = 1) -> WorkerConfig:
        """The bench's pool (the stack's default taskTimeout), this liveness timeout."""
        return project_worker(
            f"{self.label}, concurrency {concurrency}",
            task_timeout=stack_config.DEFAULT_TASK_TIMEOUT, concurrency=concurrency,
            environment_overrides={env_names.LIVENESS_TIMEOUT: str(self.seconds)},
        )  # fmt: skip

    def busy_worker(self) -> WorkerConfig:
        """One slot per CPU, as the stack's default pool, also running ``bench.cpu_task``."""
        config = self.worker(CPUS)
        return replace(config, command=[*config.definition.command, "--include", "bench.cpu_task"],
                       image=busy_image())  # fmt: skip


def new_member(store: redis.Redis, known: set[str], bench: Bench, what: str) -> WorkerKeys:
    """Wait until a worker not in ``known`` has registered with its lease (its consumer is
    about to consume), and return its keys."""
    found: list[WorkerKeys] = []

    def registered() -> bool:
        members = cast(set[str], store.smembers(REGISTRY_KEY)) - known
        found[:] = [WorkerKeys.from_member(m) for m in members
                    if store.exists(WorkerKeys.from_member(m).lease)]  # fmt: skip
        return bool(found)

    bench.wait_for(registered, WORKER_START_TIMEOUT, f"{what} to take its lease")
    known.add(found[0].member)
    return found[0]


# --- 1. recovery --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trial:
    #: Seconds from the SIGKILL until the message was back on its queue; None: not in the window.
    back_on_queue: float | None
    #: ... until the task started again on the other worker.
    runs_again: float | None


def recovery_trial(bench: Bench, timeout: Timeout, name: str, phase: float) -> Trial:
    """A worker runs a task, a second one idles; SIGKILL the first ``phase`` x the sweep
    interval after the second one's consumer started (see the module docstring).

    The phase matters: the second worker's sweeps come every sweep interval from its start and
    the lease lives a whole number of sweep intervals (``L = 3 x sweep``), so a kill at the same
    point of that cycle in every trial would find the same sweep every time."""
    broker_url, store = bench.database()
    known: set[str] = set()
    config = timeout.worker()
    victim = bench.start_worker(config, broker_url, f"{name}-victim")
    victim_keys = new_member(store, known, bench, f"{name}: the first worker")
    send_credit(broker_url, name, CRASH_TASK_SECONDS)
    bench.wait_for(lambda: attempts(store, name) == 1, WORKER_START_TIMEOUT, f"{name}: the task")
    # The second worker only once the first holds the task: it cannot take it first.
    bench.start_worker(config, broker_url, f"{name}-rescuer")
    new_member(store, known, bench, f"{name}: the second worker")
    time.sleep(phase * timeout.deadlines.sweep_interval)
    if attempts(store, name) != 1 or not store.hlen(victim_keys.unacked.hash):
        raise RuntimeError(f"{name}: the task ended before the kill: lengthen CRASH_TASK_SECONDS")
    victim.kill()
    killed = time.monotonic()
    back: float | None = None
    deadline = killed + RECOVERY_WINDOW
    while time.monotonic() < deadline:
        if back is None and not store.hlen(victim_keys.unacked.hash):
            back = time.monotonic() - killed
        if attempts(store, name) >= 2:
            runs = time.monotonic() - killed
            return Trial(back if back is not None else runs, runs)
        if bench.aborted.wait(0.02):
            raise RuntimeError(f"{name}: aborted")
    return Trial(back, None)


def recovery(bench: Bench, timeout: Timeout) -> list[Trial]:
    trials = []
    for trial in range(RECOVERY_TRIALS):
        # Kills spread evenly over the sweep cycle: 1/8, 3/8, 5/8, 7/8 of it with four trials.
        phase = (trial + 0.5) / RECOVERY_TRIALS
        trials.append(recovery_trial(bench, timeout, f"recovery-{timeout.seconds}-{trial}",
                                     phase))  # fmt: skip
        bench.stop_everything()  # the rescuer and its rerun too: each trial starts afresh
    return trials


# --- 2. saturation ------------------------------------------------------------------------------

class RefreshGaps:
    """The times redis-server received each refresh of one lease (``MONITOR``): a thread reads
    them as they come, so the bench's own scheduling does not shift them."""

    def __init__(self, port: int, lease: str) -> None:
        self.lease = lease
        self.times: list[float] = []
        self._client = redis.Redis(host=HOST_ADDRESS, port=port)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, name=f"monitor {lease}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                # redis-py's Monitor is untyped: a dict with the server's "time" and "command".
                entry = cast(dict[str, Any], self._monitor.next_command())  # type: ignore[no-untyped-call]
                words = str(entry["command"]).split()
                if len(words) >= 2 and words[0].upper() in ("PEXPIRE", "SET") \
                        and words[1] == self.lease:  # fmt: skip
                    self.times.append(float(entry["time"]))
        except (redis.ConnectionError, OSError, ValueError):
            return  # closed by ``close`` (ValueError: its socket file), or the server stopped

    def close(self) -> None:
        self._monitor.connection.disconnect()

    def worst_gap(self, since: float, until: float) -> float:
        """The longest stretch without a refresh received in [since, until] (server time)."""
        marks = [since, *(t for t in self.times if since < t < until), until]
        return max(later - earlier for earlier, later in itertools.pairwise(marks))


@dataclass(frozen=True)
class Saturation:
    #: Messages taken from the busy worker while it held them (its set shrank, a task restarted).
    restored_while_held: int
    #: Liveness losses the busy worker declared (each cancels its tasks: a false alarm).
    liveness_lost: int
    #: The longest gap between two refreshes redis-server received, seconds.
    worst_gap: float
    refreshes: int
    #: The host's 1-minute load average at the end of the window.
    load: float


@contextmanager
def host_load(processes: int) -> Iterator[None]:
    """One busy process per CPU, as ``stress --cpu N`` runs: the host is loaded too."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(processes)]  # fmt: skip
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@dataclass
class BusyWorker:
    """The saturation measurement of one timeout, prepared: both workers run, the tasks too."""

    timeout: Timeout
    bench: Bench
    store: redis.Redis
    keys: WorkerKeys
    task_keys: list[str]
    gaps: RefreshGaps
    #: The busy worker's container, then the sweeping one's.
    containers: list[Container] = field(default_factory=list)


def prepare_busy(bench: Bench, timeout: Timeout) -> BusyWorker:
    broker_url, store = bench.database()
    known: set[str] = set()
    busy = bench.start_worker(timeout.busy_worker(), broker_url, f"busy-{timeout.seconds}")
    keys = new_member(store, known, bench, f"busy {timeout.seconds}: the busy worker")
    task_keys = [f"busy-{timeout.seconds}-{slot}" for slot in range(CPUS)]
    publisher = Celery("bench-publisher", set_as_current=False)
    with publisher.connection_for_write(broker_url) as connection:
        for key in task_keys:
            publisher.send_task(BUSY_CPU, queue=QUEUE, connection=connection,
                                kwargs={"key": key, "seconds": BUSY_TASK_SECONDS})  # fmt: skip
    bench.wait_for(lambda: all(attempts(store, key) == 1 for key in task_keys),
                   WORKER_START_TIMEOUT, f"busy {timeout.seconds}: every slot busy")  # fmt: skip
    sweeper = bench.start_worker(timeout.worker(), broker_url, f"sweeper-{timeout.seconds}")
    new_member(store, known, bench, f"busy {timeout.seconds}: the sweeping worker")
    # Every timeout has a server of its own: MONITOR sees only this one's traffic.
    gaps = RefreshGaps(bench.server.port, keys.lease)
    return BusyWorker(timeout, bench, store, keys, task_keys, gaps, [busy, sweeper])


def watch_busy(busy: BusyWorker, until: float) -> Saturation:
    """Poll the busy worker's set and its tasks' starts until ``until`` (monotonic)."""
    server_started = server_time(busy.store)
    held_least = len(busy.task_keys)
    started_most = 1
    while time.monotonic() < until:
        held_least = min(held_least, int(busy.store.hlen(busy.keys.unacked.hash)))
        started_most = max(started_most, *(attempts(busy.store, key) for key in busy.task_keys))
        time.sleep(0.5)
    server_ended = server_time(busy.store)
    busy.gaps.close()
    restarted = sum(attempts(busy.store, key) - 1 for key in busy.task_keys)
    lost = sum(container.logs().count("liveness lost (") for container in busy.containers[:1])
    refreshes = sum(server_started < t < server_ended for t in busy.gaps.times)
    return Saturation(
        restored_while_held=max(len(busy.task_keys) - held_least, restarted),
        liveness_lost=lost, worst_gap=busy.gaps.worst_gap(server_started, server_ended),
        refreshes=refreshes, load=os.getloadavg()[0],
    )  # fmt: skip


def server_time(store: redis.Redis) -> float:
    seconds, microseconds = cast(tuple[int, int], store.time())
    return seconds + microseconds / 1e6


# --- 3. idle cost -------------------------------------------------------------------------------

class SweepScripts:
    """The sweeps' scripts (``EVALSHA`` of ``celery_ecs.recovery.STAMP`` and ``TURN``) that
    redis-server ran between the bench's first two ``INFO commandstats`` after this starts
    (``MONITOR``, which shows the commands in the order the server ran them): ``INFO`` counts
    every ``EVALSHA`` under one name, the ``FETCH`` polls' too."""

    def __init__(self, port: int) -> None:
        self.runs = 0
        self._infos = 0
        self._done = threading.Event()
        self._client = redis.Redis(host=HOST_ADDRESS, port=port)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()  # MONITOR answered: from here on every command is seen
        self._thread = threading.Thread(target=self._read, name=f"monitor {port}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while self._infos < 2:
                # redis-py's Monitor is untyped: a dict with the server's "time" and "command".
                entry = cast(dict[str, Any], self._monitor.next_command())  # type: ignore[no-untyped-call]
                words = str(entry["command"]).split()
                if [word.upper() for word in words[:2]] == ["INFO", "COMMANDSTATS"]:
                    self._infos += 1
                elif self._infos == 1 and words[:1] == ["EVALSHA"] and words[1:2] in (
                    [STAMP_SHA], [TURN_SHA]
                ):
                    self.runs += 1
        except (redis.ConnectionError, OSError, ValueError):
            return  # closed by ``count`` (ValueError: its socket file), or the server stopped
        finally:
            self._done.set()

    def count(self) -> int:
        """The runs between the two ``INFO``, once the second has been sent."""
        finished = self._done.wait(30)
        self._monitor.connection.disconnect()
        if not finished or self._infos < 2:
            raise RuntimeError("MONITOR did not see the bench's two INFO commandstats")
        return self.runs


@dataclass(frozen=True)
class IdleCost:
    #: Commands per second per idle worker, by name.
    per_second: dict[str, float]
    #: The sweeps' scripts (stamps and turns) per second per idle worker (their ``EVALSHA``, in
    #: ``per_second``'s with the ``FETCH`` polls').
    stamps: float

    @property
    def total(self) -> float:
        return sum(self.per_second.values())

    @property
    def lease(self) -> float:
        return self.per_second.get("pexpire", 0.0)

    @property
    def sweeps(self) -> float:
        """What the sweeps send (``SWEEP_COMMANDS``, and the scripts' ``EVALSHA``)."""
        return self.stamps + sum(count for name, count in self.per_second.items()
                                 if name in SWEEP_COMMANDS)  # fmt: skip

    @property
    def rest(self) -> float:
        return self.total - self.lease - self.sweeps


def idle_cost(bench: Bench, timeout: Timeout) -> IdleCost:
    broker_url, store = bench.database()
    known: set[str] = set()
    for index in range(IDLE_WORKERS):
        bench.start_worker(timeout.worker(), broker_url, f"idle-{timeout.seconds}-{index}")
        new_member(store, known, bench, f"idle {timeout.seconds}: worker {index}")
    time.sleep(IDLE_SETTLE_SECONDS)
    admin = redis.Redis(host=HOST_ADDRESS, port=bench.server.port)
    stamps = SweepScripts(bench.server.port)
    before = command_calls(admin, excluded=IDLE_BENCH_COMMANDS)
    started = time.monotonic()
    time.sleep(IDLE_SECONDS)
    after = command_calls(admin, excluded=IDLE_BENCH_COMMANDS)
    elapsed = time.monotonic() - started
    delta = Counter(after)
    delta.subtract(before)
    bench.stop_everything()
    return IdleCost({name: calls / elapsed / IDLE_WORKERS
                     for name, calls in delta.most_common() if calls > 0},
                    stamps.count() / elapsed / IDLE_WORKERS)  # fmt: skip


# --- the run ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    timeout: Timeout
    trials: list[Trial]
    saturation: Saturation
    idle: IdleCost


def seconds_range(values: Sequence[float | None]) -> str:
    if any(value is None for value in values):
        return f"LOST in {sum(v is None for v in values)} of {len(values)}"
    present = [value for value in values if value is not None]
    return f"{min(present):.1f}..{max(present):.1f} s"


def median_of(values: Sequence[float | None]) -> float:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else float("nan")


def report(rows: list[Row], versions: str, elapsed: float) -> str:
    today = next(row for row in rows if row.timeout.seconds == TODAY)
    today_back = median_of([t.back_on_queue for t in today.trials])
    lines = [
        f"Liveness timeout and sweep interval, measured {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{platform.machine()}, {CPUS} CPUs, {versions}. Run took {elapsed:.0f} s.",
        "Every worker a container on the ECS twin from the rendered task definition "
        f"(taskTimeout {stack_config.DEFAULT_TASK_TIMEOUT}); CELERY_LIVENESS_TIMEOUT a container "
        "environment override; each timeout on its own redis-server.",
        "",
        f"1. Recovery: SIGKILL of a worker running a {CRASH_TASK_SECONDS:g} s task, a second "
        f"worker idle; {RECOVERY_TRIALS} trials each. Seconds from the kill.",
        table(
            ["liveness / sweep", "bound L + sweep", "back on queue", "runs again", "median back",
             "vs today"],
            [[row.timeout.label, f"{row.timeout.deadlines.recovery_bound:.1f} s",
              seconds_range([t.back_on_queue for t in row.trials]),
              seconds_range([t.runs_again for t in row.trials]),
              f"{median_of([t.back_on_queue for t in row.trials]):.1f} s",
              f"{median_of([t.back_on_queue for t in row.trials]) / today_back:.2f}"]
             for row in rows],
        ),
        "",
        f"2. Saturation: {CPUS} CPU-spinning tasks in a worker of {CPUS} slots, {CPUS} busy "
        f"processes on the host, a second worker sweeping; {SATURATION_SECONDS:g} s, every "
        "timeout at once.",
        table(
            ["liveness / sweep", "restored while held", "liveness lost", "worst refresh gap",
             "lost after (L/2)", "margin", "refreshes", "load (1 min)"],
            [[row.timeout.label, str(row.saturation.restored_while_held),
              str(row.saturation.liveness_lost), f"{row.saturation.worst_gap:.2f} s",
              f"{row.timeout.deadlines.lost_after:g} s",
              f"{row.timeout.deadlines.lost_after - row.saturation.worst_gap:.2f} s",
              str(row.saturation.refreshes), f"{row.saturation.load:.1f}"] for row in rows],
        ),
        "",
        f"3. Idle cost: Redis commands per second per idle worker ({IDLE_WORKERS} workers, "
        f"{IDLE_SECONDS:g} s; INFO commandstats, the bench's INFO not counted).",
        table(
            ["liveness / sweep", "lease", "sweeps", "the rest", "total", "vs today",
             "by name"],
            [[row.timeout.label, f"{row.idle.lease:.2f}", f"{row.idle.sweeps:.2f}",
              f"{row.idle.rest:.2f}", f"{row.idle.total:.2f}",
              f"{row.idle.total / today.idle.total:.2f}",
              ", ".join(f"{name} {count:.2f}" for name, count in row.idle.per_second.items())
              + f" (of evalsha, sweep scripts {row.idle.stamps:.2f})"]
             for row in rows],
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    if not require_root():
        return 2
    began = time.monotonic()
    print("Measuring (about three minutes)...", file=sys.stderr, flush=True)
    timeouts = [Timeout(seconds) for seconds in TIMEOUTS]
    for timeout in timeouts:  # render before measuring: rendering takes seconds
        timeout.worker(), timeout.busy_worker()
    image_venv(image())
    ensure_bridge()
    with scratch_directory() as workdir, ExitStack() as stack:
        benches = {}
        for timeout in timeouts:
            server = start_redis(bind=("127.0.0.1", HOST_ADDRESS))
            stack.callback(server.stop)
            bench = Bench(server, workdir)
            stack.callback(bench.stop_everything)
            benches[timeout.seconds] = bench
        versions = (f"Python {platform.python_version()}, celery {celery.__version__}, kombu "
                    f"{kombu.__version__}, redis-server "
                    f"{redis_version(benches[TODAY].server)}")  # fmt: skip
        try:
            with ThreadPoolExecutor(max_workers=len(timeouts)) as executor:
                idle = list(executor.map(lambda t: idle_cost(benches[t.seconds], t), timeouts))
                trials = list(executor.map(lambda t: recovery(benches[t.seconds], t), timeouts))
                busy = list(executor.map(lambda t: prepare_busy(benches[t.seconds], t),
                                         timeouts))  # fmt: skip
            with host_load(CPUS):
                until = time.monotonic() + SATURATION_SECONDS
                with ThreadPoolExecutor(max_workers=len(timeouts)) as executor:
                    saturation = list(executor.map(lambda b: watch_busy(b, until), busy))
        except BaseException:
            for bench in benches.values():
                bench.aborted.set()
                for container in bench.containers:
                    print(f"--- {container.name} ---\n{container.logs()[-3000:]}",
                          file=sys.stderr)  # fmt: skip
            raise
        rows = [Row(*parts) for parts in zip(timeouts, trials, saturation, idle, strict=True)]
        print(report(rows, versions, time.monotonic() - began))
    return 0


if __name__ == "__main__":
    sys.exit(main())
