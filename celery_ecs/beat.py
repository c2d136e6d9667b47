"""Beat's scheduler: celery-redbeat plus a heartbeat file for the container health check, with
the periodic entries the stack hands it in ``CELERY_BEAT_SCHEDULE_JSON``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from redbeat import RedBeatScheduler

from celery_ecs.health import HeartbeatFile
from celery_ecs.metrics import BeatHeartbeat
from celery_ecs.runtime import BROKER_OUTAGE_ERRORS, beat_schedule, runtime_settings
from celery_ecs.schedule import ScheduleFormatError, entries_from_json
from celery_ecs.settings import BEAT_SCHEDULE, ConfigError

log = logging.getLogger(__name__)

#: Seconds between two attempts while Redis is unreachable.
OUTAGE_RETRY_SECONDS = 1.0


def beat_schedule_from_env(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``CELERY_BEAT_SCHEDULE_JSON`` as Celery's ``beat_schedule``; empty when unset. A malformed
    value raises ``ConfigError`` naming the entry and key, and beat does not start."""
    env = os.environ if env is None else env
    text = env.get(BEAT_SCHEDULE, "").strip()
    if not text:
        return {}
    try:
        return beat_schedule(entries_from_json(text))
    except (ScheduleFormatError, ValueError) as error:  # Celery's crontab raises ValueError
        raise ConfigError(f"{BEAT_SCHEDULE}: {error}") from None


class HeartbeatRedBeatScheduler(RedBeatScheduler):
    """RedBeat keeps last-run times and a lock in Redis; this touches the heartbeat each tick.

    The lock is extended on every tick (``beat_max_loop_interval``), so a beat whose loop is
    stuck stops touching the file and loses the lock at about the same time. A tick that cannot
    reach Redis (a restart, a failover) is retried instead of ending beat; the heartbeat stays
    stale meanwhile, so a long outage fails the health check. A lock lost meanwhile (expired)
    still ends beat when the next tick cannot extend it: never two beats.
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        settings = runtime_settings(app)
        self.heartbeat = HeartbeatFile("beat", settings.heartbeat_dir)
        #: The ``BeatHeartbeat`` metric (only with ``CELERY_METRICS_NAMESPACE``): an alarm
        #: notices a beat that stopped scheduling, which a health check of the task cannot see
        #: once ECS has nothing left to replace.
        self.heartbeat_metric = BeatHeartbeat(settings.metrics_namespace)
        # Before redbeat reads it: the stack's entries join any the app defines itself (an entry
        # of the same name is the stack's).
        app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **beat_schedule_from_env()}
        super().__init__(app, *args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            interval = super().tick(*args, **kwargs)
        except BROKER_OUTAGE_ERRORS as error:
            log.warning("beat: Redis unreachable (%r); next attempt in %g s", error,
                        OUTAGE_RETRY_SECONDS)  # fmt: skip
            return OUTAGE_RETRY_SECONDS
        self.heartbeat.touch()
        self.heartbeat_metric.tick()
        return float(interval)
