"""The seed tutorial's Celery app ("How to Deploy a Celery Background Worker"), as it wrote it,
with its two elided task bodies filled in. The lines marked ``# celery-ecs`` adopt the runtime.

The tutorial's ``app.conf.beat_schedule`` is not here: the stack file's ``schedule`` key holds
it, so that beat or EventBridge (``scheduler``) runs it, never both.
"""

import logging
import os
import time

from celery import Celery

import celery_ecs  # celery-ecs

app = Celery(
    "tasks",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)

app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
)
celery_ecs.equip(app)  # celery-ecs

log = logging.getLogger(__name__)


@app.task
def send_email(user_id: int) -> None:
    # Stands in for rendering the message and the mail service's API call (the tutorial leaves
    # the body out): it takes a moment, as that call does.
    time.sleep(0.3)
    log.info("sent the email to user %s", user_id)


@app.task
def cleanup() -> None:
    # The tutorial's periodic job (its beat_schedule names it); here, it only says it ran.
    log.info("cleanup done")
