"""Bring back a crashed worker's tasks soon after the visibility timeout.

A worker that dies without shutting down (SIGKILL, OOM, host loss) leaves its messages in its
pool's unacked index in Redis. kombu puts back those older than the visibility timeout when a
worker starts and then only every ~100 s (every 10th call of a 10 s timer), so recovery takes
up to visibility timeout + 100 s. This step sweeps every few seconds instead; kombu's Redis
mutex keeps the sweeps of a pool's workers from overlapping, and the budget's visibility
timeout keeps them from touching a message whose first run could still be alive.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps

from app.periodic import PeriodicThread

log = logging.getLogger(__name__)

#: Seconds between sweeps: the most a crashed worker's task waits past the visibility timeout.
SWEEP_INTERVAL_SECONDS = 5.0
#: Seconds a broker round trip may take before this sweep gives up until the next one.
BROKER_TIMEOUT_SECONDS = 5.0


class UnackedSweeper:
    def __init__(self, app: Celery) -> None:
        self.app = app
        transport = app.connection_for_read()
        self._broker_errors: tuple[type[BaseException], ...] = (
            *transport.connection_errors,
            *transport.channel_errors,
        )

    def sweep(self) -> None:
        """Requeue every message of this pool unacknowledged for longer than the timeout."""
        timeouts = {
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
        }
        try:
            # A connection of its own (kombu's are not thread-safe) with the app's transport
            # options: the pool's unacked keys and visibility timeout.
            with self.app.connection_for_read(transport_options=timeouts) as connection:
                channel = connection.channel()
                try:
                    # interval=1: sweep now (kombu's own caller passes 10 and skips 9 in 10).
                    channel.qos.restore_visible(num=channel.unacked_restore_limit, interval=1)
                finally:
                    channel.close()  # restores nothing: this channel received no message
        except self._broker_errors as error:
            log.warning("unacked sweep: broker unreachable, retrying next round: %r", error)


class UnackedSweepStep(bootsteps.StartStopStep):
    """Worker bootstep running ``UnackedSweeper.sweep`` on a thread of the main process."""

    # Threads start once the pool has forked its children (see ``app.periodic``).
    requires = ("celery.worker.components:Pool",)
    label = "Unacked sweep"

    def create(self, worker: Any) -> PeriodicThread:
        sweeper = UnackedSweeper(worker.app)
        return PeriodicThread("unacked-sweep", SWEEP_INTERVAL_SECONDS, sweeper.sweep)
