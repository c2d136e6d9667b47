"""The types of a periodic schedule, as plain data: an entry, an interval, a crontab.

An app lists its entries (the example: ``app.schedule``); ``celery_ecs.equip`` turns them into
Celery's ``beat_schedule`` (``celery_ecs.runtime.beat_schedule``), and the infrastructure creates
one EventBridge rule per entry when ``scheduler: eventbridge``. It imports nothing from Celery,
so the Pulumi program can read it without the app's dependencies. All times are UTC.
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
    """One periodic task: ``task`` (a registered name) sent to ``queue`` on ``schedule``."""

    name: str
    task: str
    schedule: Every | Cron
    args: tuple[object, ...] = ()
    kwargs: dict[str, object] = field(default_factory=dict)
    queue: str = "default"

