"""A task that keeps one CPU busy: what ``bench.liveness_timeouts``'s saturated worker runs.

Added to the project's image and loaded with ``celery worker --include bench.cpu_task``, as a
new image and a RunTask command override would run it on Fargate: the example app itself has
no CPU-bound task.
"""

from __future__ import annotations

import time

from app.celery_app import app
from app.store import client


# bench.liveness_timeouts.BUSY_CPU: the name the bench sends.
@app.task(name="bench.busy_cpu")
def busy_cpu(key: str, seconds: float) -> None:
    """Count the start in ``attempts:<key>`` (as ``app.tasks.apply_credit`` does), then spin
    the CPU for ``seconds``: a second start means the message was taken from its worker."""
    client().incr(f"attempts:{key}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
