"""The example's Celery app: the ``-A`` target of the worker, beat, the web and the enqueue
command.

Its own parts are its queues, routes and tasks (its periodic entries are the stack's `schedule`
configuration); ``celery_ecs.equip`` gives it the runtime (settings from the environment,
refusing an unsafe configuration here, at import, before any process connects to anything).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

import celery_ecs
from app import routing

app = Celery("celery_ecs", include=["app.tasks"])
app.conf.update(
    task_queues=[Queue(name, Exchange(name), routing_key=name) for name in routing.QUEUES],
    task_default_queue=routing.DEFAULT_QUEUE,
    task_routes={task: {"queue": queue} for task, queue in routing.ROUTES.items()},
)
settings = celery_ecs.equip(app)
