"""What publishing the queue metrics costs a worker's throughput.

    python -m bench.metrics_cost        (``make bench`` runs it too; as root)

One worker per subject, each a container on the ECS twin run from the task definition the
program renders for the stack's default pool (``bench.worker_budget.project_worker``), on a
database of its own of one redis-server on the twin's bridge: metrics off, metrics on as deployed
(a round every 10 s) and metrics on every 0.1 s (a hundred times as often: an upper bound on the
cost). Each round ends in its PutMetricData call, to moto's server (a stand-in of the CloudWatch
API, ``testkit.aws_standin``) on the twin's bridge: the publishing workers get its
endpoint, a region and stand-in credentials as environment overrides, where Fargate would give
the region and the task role. The rendered definition publishes (it names the stack's namespace)
and no stack config key turns that off: "metrics off" is a container environment override that
empties the namespace, and the 0.1 s worker a command override (both as a RunTask
``containerOverrides`` would be).
Each round releases no-op tasks at once and times them until the last is acknowledged; rounds
are taken in turns (A, B, C, A, B, C…), so load on the machine touches every subject alike, and
the ratio to "metrics off" in the same run is the figure to read.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping

import celery
import kombu
import redis

from bench.worker_budget import (
    THROUGHPUT_CONCURRENCY,
    WARMUP_TASKS,
    Bench,
    WorkerConfig,
    project_worker,
    redis_version,
    release_noops,
    require_root,
    running_bench,
    table,
)
from celery_ecs import settings as env_names
from celery_ecs.metrics import PUBLISH_INTERVAL_SECONDS
from devtools.twin.awsvpc import HOST_ADDRESS
from devtools.twin.container import Container
from devtools.twin.dockerfile_image import image_venv
from infra import config_tables as stack_config
from testkit.aws_standin import AwsStandIn
from testkit.rendered_worker import image

TASKS_PER_ROUND = 3000
ROUNDS = 5
FAST_INTERVAL = 0.1


def subjects(cloudwatch: Mapping[str, str]) -> tuple[WorkerConfig, ...]:
    """``cloudwatch``: the environment that points the publisher at the stand-in."""
    on = dataclasses.replace(
        project_worker(
            f"metrics on, every {PUBLISH_INTERVAL_SECONDS:g} s (as deployed)",
            task_timeout=stack_config.DEFAULT_TASK_TIMEOUT,
            concurrency=THROUGHPUT_CONCURRENCY,
        ),
        environment_overrides=dict(cloudwatch),
    )
    # Empty: off (celery_ecs.settings). No stack config key does it: a container override.
    off = dataclasses.replace(
        on, label="metrics off", environment_overrides={env_names.METRICS_NAMESPACE: ""}
    )
    # The worker command, with the module's interval shortened before Celery starts.
    fast = dataclasses.replace(
        on,
        label=f"metrics on, every {FAST_INTERVAL:g} s (100x as often)",
        command=[
            "python",
            "-c",
            "import sys, celery_ecs.metrics; "
            f"celery_ecs.metrics.PUBLISH_INTERVAL_SECONDS = {FAST_INTERVAL}; "
            "from celery.__main__ import main; sys.argv[0] = 'celery'; main()",
            *on.definition.command[1:],
        ],
    )
    return off, on, fast


def measure(bench: Bench, cloudwatch: Mapping[str, str]) -> dict[str, list[float]]:
    workers: dict[str, tuple[Container, str, redis.Redis]] = {}
    for index, subject in enumerate(subjects(cloudwatch)):
        broker_url, store = bench.database()
        worker = bench.start_worker(subject, broker_url, f"metrics-cost-{index}")
        workers[subject.label] = (worker, broker_url, store)
        # Warm-up; it also waits until the worker consumes.
        release_noops(bench, worker, broker_url, store, subject, WARMUP_TASKS)
    rates: dict[str, list[float]] = {subject.label: [] for subject in subjects(cloudwatch)}
    for _ in range(ROUNDS):
        for subject in subjects(cloudwatch):
            worker, broker_url, store = workers[subject.label]
            rates[subject.label].append(
                release_noops(bench, worker, broker_url, store, subject, TASKS_PER_ROUND).rate
            )
    for label, (worker, _, _) in workers.items():
        worker.stop()  # as ECS stops it
        logs = worker.logs()
        if "ERROR" in logs or "Traceback" in logs:
            raise RuntimeError(f"{label}: the worker logged errors:\n{logs[-3000:]}")
        if "CloudWatch did not take this round" in logs:
            raise RuntimeError(f"{label}: rounds were dropped:\n{logs[-3000:]}")
    return rates


def main() -> int:
    if not require_root():
        return 2
    began = time.monotonic()
    print("Measuring (about two minutes)...", file=sys.stderr, flush=True)
    image_venv(image())  # built once per set of requirements, before anything is timed
    with running_bench() as bench:
        cloudwatch = AwsStandIn(HOST_ADDRESS)
        try:
            rates = measure(bench, cloudwatch.environment())
            sent = received_backlog(cloudwatch)
        finally:
            cloudwatch.stop()
        if not sent:
            raise RuntimeError("no Backlog datapoint reached the CloudWatch stand-in")
        baseline = statistics.median(rates["metrics off"])
        print(
            f"Queue metrics cost, measured {time.strftime('%Y-%m-%d %H:%M')}: "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, celery {celery.__version__}, kombu "
            f"{kombu.__version__}, redis-server {redis_version(bench.server)}. Run took "
            f"{time.monotonic() - began:.0f} s.\n"
            f"{TASKS_PER_ROUND} no-op tasks released at once into one worker (concurrency "
            f"{THROUGHPUT_CONCURRENCY}), tasks/s until the last is acknowledged, median of "
            f"{ROUNDS} rounds taken in turns. Each worker a container on the ECS twin, from "
            "the rendered task definition\nof the stack's default pool; \"metrics off\": "
            f"environment override {env_names.METRICS_NAMESPACE}= (empty), the 0.1 s one a "
            "command override. Rounds sent with PutMetricData to moto's server on the twin's "
            "bridge."
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
    return 0


def received_backlog(cloudwatch: AwsStandIn) -> bool:
    """Whether the stand-in holds a Backlog metric: proof the rounds went out."""
    return bool(cloudwatch.client("cloudwatch").list_metrics(MetricName="Backlog")["Metrics"])


if __name__ == "__main__":
    sys.exit(main())
