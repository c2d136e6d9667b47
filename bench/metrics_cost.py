"""What publishing the queue metrics costs a worker's throughput.

    python -m bench.metrics_cost        (``make bench`` runs it too)

One worker per subject, each started with the command and environment the program renders for
the stack's default pool (``bench.worker_budget.project_worker``), on a database of its own of
one local redis-server: metrics off, metrics on as deployed (a round every 10 s), and metrics
on every 0.1 s (a hundred times as often: an upper bound on the cost). Each round releases
no-op tasks at once and times them until the last is acknowledged; rounds are taken in turns
(A, B, C, A, B, C…), so load on the machine touches every subject alike, and the ratio to
"metrics off" in the same run is the figure to read.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time

import celery
import kombu

from app import settings as env_names
from app.metrics import PUBLISH_INTERVAL_SECONDS
from bench.worker_budget import (
    THROUGHPUT_CONCURRENCY,
    WARMUP_TASKS,
    Bench,
    WorkerConfig,
    project_worker,
    redis_version,
    release_noops,
    scratch_directory,
    table,
)
from devtools.redis_server import start_redis
from infra import config as stack_config

TASKS_PER_ROUND = 3000
ROUNDS = 5
FAST_INTERVAL = 0.1
NAMESPACE = "CeleryEcs/bench"

BASE = project_worker(
    "metrics off",
    task_timeout=stack_config.DEFAULT_TASK_TIMEOUT,
    concurrency=THROUGHPUT_CONCURRENCY,
)
ON = dataclasses.replace(
    BASE,
    label=f"metrics on, every {PUBLISH_INTERVAL_SECONDS:g} s (as deployed)",
    environment={**BASE.environment, env_names.METRICS_NAMESPACE: NAMESPACE},
)
# The worker command, with the module's interval shortened before Celery starts.
FAST = dataclasses.replace(
    ON,
    label=f"metrics on, every {FAST_INTERVAL:g} s (100x as often)",
    argv=[
        "python",
        "-c",
        f"import sys, app.metrics; app.metrics.PUBLISH_INTERVAL_SECONDS = {FAST_INTERVAL}; "
        "from celery.__main__ import main; sys.argv[0] = 'celery'; main()",
        *BASE.argv[1:],
    ],
)
SUBJECTS: tuple[WorkerConfig, ...] = (BASE, ON, FAST)


def measure(bench: Bench) -> dict[str, list[float]]:
    workers = {}
    for index, subject in enumerate(SUBJECTS):
        broker_url, store = bench.database()
        worker = bench.start_worker(subject, broker_url, f"metrics-cost-{index}")
        workers[subject.label] = (worker, broker_url, store)
        release_noops(bench, broker_url, store, subject, WARMUP_TASKS)
    rates: dict[str, list[float]] = {subject.label: [] for subject in SUBJECTS}
    for _ in range(ROUNDS):
        for subject in SUBJECTS:
            _, broker_url, store = workers[subject.label]
            rates[subject.label].append(
                release_noops(bench, broker_url, store, subject, TASKS_PER_ROUND)
            )
    for label, (worker, _, _) in workers.items():
        worker.stop(30)
        logs = worker.logs()
        if "ERROR" in logs or "Traceback" in logs:
            raise RuntimeError(f"{label}: the worker logged errors:\n{logs[-3000:]}")
        if label != BASE.label and '"Backlog"' not in logs:
            raise RuntimeError(f"{label}: no metric line was written:\n{logs[-3000:]}")
    return rates


def main() -> int:
    began = time.monotonic()
    print("Measuring (about two minutes)...", file=sys.stderr, flush=True)
    with scratch_directory() as workdir:
        server = start_redis()
        bench = Bench(server, workdir)
        try:
            rates = measure(bench)
            baseline = statistics.median(rates[BASE.label])
            print(
                f"Queue metrics cost, measured {time.strftime('%Y-%m-%d %H:%M')}: "
                f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}, celery {celery.__version__}, kombu "
                f"{kombu.__version__}, redis-server {redis_version(server)}. Run took "
                f"{time.monotonic() - began:.0f} s.\n"
                f"{TASKS_PER_ROUND} no-op tasks released at once into one worker (concurrency "
                f"{THROUGHPUT_CONCURRENCY}), tasks/s until the last is acknowledged, median of "
                f"{ROUNDS} rounds taken in turns."
            )
            print(
                table(
                    ["worker", "median", "vs metrics off", "rounds (tasks/s)"],
                    [
                        [
                            label,
                            f"{statistics.median(values):.0f} tasks/s",
                            f"{statistics.median(values) / baseline:.2f}",
                            ", ".join(f"{value:.0f}" for value in values),
                        ]
                        for label, values in rates.items()
                    ],
                )
            )
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
