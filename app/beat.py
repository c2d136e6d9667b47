"""Beat's scheduler: celery-redbeat plus a heartbeat file for the container health check."""

from __future__ import annotations

from typing import Any

from redbeat import RedBeatScheduler

from app.celery_app import settings
from app.health import HeartbeatFile


class HeartbeatRedBeatScheduler(RedBeatScheduler):
    """RedBeat keeps last-run times and a lock in Redis; this touches the heartbeat each tick.

    The lock is extended on every tick (``beat_max_loop_interval``), so a beat whose loop is
    stuck stops touching the file and loses the lock at about the same time.
    """

    heartbeat = HeartbeatFile("beat", settings.heartbeat_dir)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = super().tick(*args, **kwargs)
        self.heartbeat.touch()
        return interval
