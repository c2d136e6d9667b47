"""What one task costs the broker, written to ``bench/figures.json`` for the plan's ceiling.

    python -m bench.broker_figures [--tasks 3000] [--rounds 3]     (part of ``make bench``)

One redis-server (``testkit.redis_server``, the broker's settings) and one worker, started as
the worker task definition starts it (``infra.containers.worker_command``, concurrency 2, no
line per task, as deployed), as a process here: what is measured is the broker's side, which
the worker's container does not change. Per round, for results stored (as the web sends) and
for no result (as beat sends):

1. Publish: ``tasks`` no-op tasks sent with the app's own producer (``app.celery_app``: the
   transport's publish script, message and wake token in one command) onto a queue no worker
   consumes.
2. Consume: the queue renamed onto the worker's in one step, with the wake tokens its publish
   would have pushed (as ``bench.worker_budget`` releases its rounds), until every task is
   acknowledged.

Each phase reads, before and after, the commands redis-server ran (``INFO commandstats``, those
a Lua script runs included, ``bench.redis_commands``), the CPU time of the redis-server process
(``/proc``: user + system) and the bytes it read and wrote (``INFO stats``
``total_net_input_bytes``/``total_net_output_bytes``). The medians over the rounds, per task,
are written with what a queued message weighs: its length as published (``LINDEX``) and
``MEMORY USAGE`` of the staged list over its length (the message, plus the list's per-element
overhead), and ``MEMORY USAGE`` of one stored result. ``devtools.plan.broker_ceiling`` turns them
into the tasks a second a node type carries; the plan reads the file and never runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from bench.redis_commands import BENCH_COMMANDS
from celery_ecs import settings as env_names
from celery_ecs.liveness import unacked_count
from celery_ecs.transport import WAKE_TOKENS_MAX, wake_key
from infra.containers import worker_command
from testkit.processes import ROOT, AppProcess, python_argv, start_process
from testkit.redis_server import RedisServer, start_redis

#: Where the figures go (checked in: ``devtools.plan.broker_ceiling`` reads them).
FIGURES = ROOT / "bench" / "figures.json"
QUEUE, STAGING_QUEUE = "default", "figures-staging"
POOL = "figures"
#: As the bench's throughput rounds: one process per CPU of a 2-CPU task.
CONCURRENCY = 2
WARMUP_TASKS = 200
#: The bench's own polls while a round drains (LLEN, SMEMBERS, HLEN) every this many seconds:
#: their bytes count in the round's (about 100 bytes a poll: a few bytes a task).
POLL_INTERVAL = 0.02


@dataclass(frozen=True)
class PhaseCost:
    """What one phase cost redis-server, per task."""

    commands: float
    cpu_us: float
    bytes_in: float
    bytes_out: float


@dataclass(frozen=True)
class Reading:
    calls: int
    cpu: float
    bytes_in: int
    bytes_out: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read(admin: redis.Redis, server: RedisServer) -> Reading:
    """The server's counters now: every command but the bench's (a script's own included)."""
    stats = admin.info("stats")
    calls = sum(
        int(value["calls"])
        for key, value in admin.info("commandstats").items()
        if key.removeprefix("cmdstat_").split("|")[0] not in BENCH_COMMANDS
    )
    return Reading(calls, cpu_seconds(server.process.pid), int(stats["total_net_input_bytes"]),
                   int(stats["total_net_output_bytes"]))  # fmt: skip


def cost(before: Reading, after: Reading, tasks: int) -> PhaseCost:
    return PhaseCost(
        commands=(after.calls - before.calls) / tasks,
        cpu_us=(after.cpu - before.cpu) / tasks * 1e6,
        bytes_in=(after.bytes_in - before.bytes_in) / tasks,
        bytes_out=(after.bytes_out - before.bytes_out) / tasks,
    )


def publish(broker_url: str, tasks: int, *, ignore_result: bool) -> None:
    """``tasks`` no-ops onto the staging queue, with the app's own producer (as the web's).
    The app reads its settings when first imported: they name this broker."""
    os.environ[env_names.BROKER_URL] = broker_url
    from app.celery_app import app

    with app.connection_for_write(broker_url) as connection, connection.Producer() as producer:
        for _ in range(tasks):
            app.send_task("app.tasks.noop", queue=STAGING_QUEUE, producer=producer,
                          ignore_result=ignore_result)  # fmt: skip


def release(store: redis.Redis, tasks: int) -> None:
    """The staged tasks onto the worker's queue in one step, with their wake tokens."""
    with store.pipeline() as step:  # MULTI
        step.rename(STAGING_QUEUE, QUEUE)
        step.lpush(wake_key(QUEUE), *[1] * min(tasks, WAKE_TOKENS_MAX))
        step.execute()


def wait_drained(store: redis.Redis, worker: AppProcess, tasks: int) -> None:
    deadline = time.monotonic() + 120
    while store.llen(QUEUE) or unacked_count(store, POOL):
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.logs()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tasks} no-op tasks not done within 120 s")
        time.sleep(POLL_INTERVAL)


@dataclass(frozen=True)
class Sizes:
    """What queued messages and a stored result weigh."""

    message_bytes: int
    queued_bytes_per_message: float
    result_bytes: int


def sizes(broker_url: str, store: redis.Redis, tasks: int) -> Sizes:
    """Publish ``tasks`` messages as the web does and weigh them while queued; then one stored
    result (``celery-task-meta-<id>``) of the last round."""
    publish(broker_url, tasks, ignore_result=False)
    message = store.lindex(STAGING_QUEUE, 0)
    assert isinstance(message, bytes)
    queued = int(store.memory_usage(STAGING_QUEUE, samples=0) or 0)
    store.delete(STAGING_QUEUE, wake_key(STAGING_QUEUE))
    result_key = next(store.scan_iter("celery-task-meta-*", count=1000))
    return Sizes(len(message), queued / tasks, int(store.memory_usage(result_key) or 0))


@contextmanager
def running_worker(broker_url: str, workdir: Path) -> Iterator[AppProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "WEB_"))}
    env.update(CELERY_BROKER_URL=broker_url, CELERY_HEARTBEAT_DIR=str(workdir),
               PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", APP_LOG_TASKS="false")  # fmt: skip
    env[env_names.WORKER_POOL] = POOL
    argv = python_argv(worker_command(POOL, (QUEUE,), CONCURRENCY))
    worker = start_process(POOL, argv, env, workdir)
    try:
        heartbeat = workdir / "celery-worker.heartbeat"
        deadline = time.monotonic() + 60
        while not heartbeat.exists():
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{worker.logs()[-3000:]}")
            time.sleep(0.1)
        yield worker
    finally:
        worker.stop(10)


def measure(tasks: int, rounds: int) -> dict[str, object]:
    server = start_redis()
    try:
        broker_url = server.url
        store = redis.Redis.from_url(broker_url)
        with tempfile.TemporaryDirectory(prefix="celery-ecs-figures-") as scratch, \
                running_worker(broker_url, Path(scratch)) as worker:
            phases: dict[str, dict[str, list[PhaseCost]]] = {
                kind: {"publish": [], "consume": []} for kind in ("results", "noResult")
            }
            for ignore_result in (False, True):
                publish(broker_url, WARMUP_TASKS, ignore_result=ignore_result)
                release(store, WARMUP_TASKS)
                wait_drained(store, worker, WARMUP_TASKS)
            for _ in range(rounds):  # in turns: the machine's load changes alike for both
                for kind, ignore_result in (("results", False), ("noResult", True)):
                    before = read(store, server)
                    publish(broker_url, tasks, ignore_result=ignore_result)
                    published = read(store, server)
                    release(store, tasks)
                    wait_drained(store, worker, tasks)
                    after = read(store, server)
                    phases[kind]["publish"].append(cost(before, published, tasks))
                    phases[kind]["consume"].append(cost(published, after, tasks))
            weights = sizes(broker_url, store, tasks)
            if "ERROR" in worker.logs():
                raise RuntimeError(f"the worker logged errors:\n{worker.logs()[-3000:]}")
        version = str(store.info("server")["redis_version"])
    finally:
        server.stop()
    return {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}, redis-server {version}",
        "tasksPerRound": tasks,
        "rounds": rounds,
        **{kind: {phase: medians(costs) for phase, costs in by_phase.items()}
           for kind, by_phase in phases.items()},
        "messageBytes": weights.message_bytes,
        "queuedBytesPerMessage": round(weights.queued_bytes_per_message, 1),
        "resultBytes": weights.result_bytes,
    }  # fmt: skip


def medians(costs: list[PhaseCost]) -> Mapping[str, float]:
    return {name: round(statistics.median(asdict(c)[name] for c in costs), 2)
            for name in asdict(costs[0])}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_figures",
                                     description=(__doc__ or "").split("\n\n")[0])  # fmt: skip
    parser.add_argument("--tasks", type=int, default=3000, help="tasks a round (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--note", default="", help="a note kept with the figures (the load)")
    parser.add_argument("--output", type=Path, default=FIGURES, help="where to write them")
    arguments = parser.parse_args(argv)
    figures = measure(arguments.tasks, arguments.rounds)
    if arguments.note:
        figures["note"] = arguments.note
    arguments.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
