"""Queues and task routes, as plain data (the infrastructure checks pool queues against it)."""

from __future__ import annotations

#: Every queue a worker pool may consume. ``default`` takes anything not routed elsewhere.
QUEUES: tuple[str, ...] = ("default", "long")
DEFAULT_QUEUE = "default"

#: Task name -> queue, for tasks that must not share a pool with short ones.
ROUTES: dict[str, str] = {
    "app.tasks.generate_report": "long",
}
