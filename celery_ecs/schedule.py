"""The periodic schedule, defined once, as plain data.

Beat reads it through ``app.celery_app`` (converted to Celery schedules); the infrastructure
reads it to create one EventBridge rule per entry when ``scheduler: eventbridge``. It imports
nothing from Celery so the Pulumi program can read it without the app's dependencies.
All times are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Every:
    """A fixed interval, in whole seconds."""

    seconds: int


@dataclass(frozen=True)
class Cron:
    """A crontab in Celery's fields (day_of_week: 0-6 = Sunday-Saturday, or names)."""

    minute: str = "*"
    hour: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    day_of_week: str = "*"


@dataclass(frozen=True)
class PeriodicEntry:
    name: str
    task: str
    schedule: Every | Cron
    args: tuple[object, ...] = ()
    kwargs: dict[str, object] = field(default_factory=dict)
    queue: str = "default"


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
