"""The example app's queues and task routes. The stack does not read them: its pools' queues are
stack configuration (``workers[].queues``; the defaults consume both queues here)."""

from __future__ import annotations

#: Every queue a worker pool may consume. ``default`` takes anything not routed elsewhere.
QUEUES: tuple[str, ...] = ("default", "long")
DEFAULT_QUEUE = "default"

#: Task name -> queue, for tasks that must not share a pool with short ones.
ROUTES: dict[str, str] = {
    "app.tasks.generate_report": "long",
}
