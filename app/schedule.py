"""The example app's periodic schedule, defined once, as plain data (its types:
``celery_ecs.schedule``).

Beat reads it through ``app.celery_app`` (``celery_ecs.equip(app, schedule=SCHEDULE)``); the
infrastructure reads it to create one EventBridge rule per entry when ``scheduler: eventbridge``.
It imports nothing but the standard library and ``celery_ecs.schedule``, so the Pulumi program can
read it without the app's dependencies. All times are UTC.
"""

from __future__ import annotations

from celery_ecs.schedule import Cron, Every, PeriodicEntry

SCHEDULE: tuple[PeriodicEntry, ...] = (
    PeriodicEntry(
        name="purge-expired-idempotency-keys",
        task="app.tasks.purge_expired_records",
        schedule=Every(seconds=3600),
    ),
    PeriodicEntry(
        name="nightly-report",
        task="app.tasks.nightly_report",
        schedule=Cron(minute="30", hour="2"),
    ),
)
