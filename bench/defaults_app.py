"""Celery with its default configuration: the baseline ``bench.worker_budget`` compares against.

Only the broker URL is set: no ``acks_late`` (a task is acknowledged when it starts), prefetch
multiplier 4, visibility timeout 3600 s, no time limits, no result backend, SIGTERM = warm
shutdown. With ``BENCH_STORE_RESULTS=1``, the broker's Redis is also the result backend, Celery's
own way to store results (SUCCESS only: no STARTED by default).

The task bodies behave like ``app.tasks`` (same names, arguments and Redis keys) but
do not import the project's app, so none of its configuration leaks in.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

import redis
from celery import Celery

app = Celery(
    "bench_defaults",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ["CELERY_BROKER_URL"] if os.environ.get("BENCH_STORE_RESULTS") else None,
)


@lru_cache(maxsize=1)
def store() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], decode_responses=True)


@app.task(name="app.tasks.apply_credit")
def apply_credit(
    idempotency_key: str, account: str, amount: int, work_seconds: float = 0.0
) -> None:
    """Count the attempt, work, then credit ``amount`` once per key (as ``app.tasks``)."""
    store().incr(f"attempts:{idempotency_key}")
    time.sleep(work_seconds)
    if store().set(f"idem:{idempotency_key}", "1", nx=True):
        store().hincrby("ledger:balances", account, amount)


@app.task(name="app.tasks.noop")
def noop() -> None:
    return None
