"""The worker's task consumer: a broker outage costs time, never a task or the worker.

When the broker goes away (an ElastiCache restart, node replacement or failover), Celery's own
consumer cancels the tasks running late-acknowledged messages and asks kombu to put every
unacknowledged message back on its queue. With the broker down, both steps write to Redis and
fail: the cancellation records a RETRY state in the result backend (the same Redis), and that
error ends the worker; kombu's restore fails and marks the messages as restored anyway, so they
only come back after the visibility timeout.

This consumer instead:

- takes the channel's unacknowledged deliveries into its own keeping when the connection is
  lost (kombu then restores nothing, so nothing is restored twice),
- cancels the running tasks without writing anything to the broker (their messages are among
  those deliveries; a cancelled task runs again, as at-least-once delivery allows),
- after reconnecting, and before it consumes anything new, puts those messages back at the
  head of their queues.

A message whose delivery is older than the visibility timeout is left to the pool's unacked
sweep (``app.recovery``), which may already have put it back: restoring it here as well could
run a redelivered copy twice at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.state import active_requests

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    """``worker_consumer`` of the app (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Delivery tags this worker held unacknowledged when its broker connection was lost.
        self.lost_deliveries: set[str] = set()

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        self._keep_unacked_deliveries()
        # Cancel first, without the RETRY state Celery would write to the unreachable result
        # backend. Cancelled requests leave ``active_requests``, so Celery's own loop below
        # finds only requests that never started, and it writes nothing for those.
        if self.app.conf.worker_cancel_long_running_tasks_on_connection_loss:
            for request in tuple(active_requests):
                if request.task.acks_late and not request.acknowledged:
                    request.cancel(self.pool, emit_retry=False)
        super().on_connection_error_after_connected(exc)

    def _keep_unacked_deliveries(self) -> None:
        channel = getattr(self.task_consumer, "channel", None)
        qos = getattr(channel, "qos", None) if channel is not None else None
        if qos is None:
            return
        # kombu's private bookkeeping (kombu is pinned): delivered messages, minus the tags
        # acknowledged since the last flush.
        unacked = [tag for tag in qos._delivered if tag not in qos._dirty]
        qos._delivered.clear()
        qos._dirty.clear()
        if unacked:
            self.lost_deliveries.update(unacked)
            log.warning(
                "broker connection lost with %d unacknowledged message(s); running tasks are "
                "cancelled and every message goes back on its queue once the broker answers",
                len(unacked),
            )

    def restore_lost_deliveries(self) -> None:
        """Put the messages held at the last connection loss back at the head of their queues.

        Raises the transport's errors while the broker is unreachable: the consumer then
        reconnects and calls this again, with the tags not yet restored.
        """
        if not self.lost_deliveries:
            return
        qos = self.connection.default_channel.qos
        client = self.connection.default_channel.client
        oldest_safe = time.time() - qos.visibility_timeout
        restored = left_to_sweep = 0
        for tag in sorted(self.lost_deliveries):
            delivered_at = client.zscore(qos.unacked_index_key, tag)
            if delivered_at is not None and delivered_at >= oldest_safe:
                # Atomic (WATCH/MULTI): a concurrent sweep and this cannot both requeue it.
                qos.restore_by_tag(tag, client=client)
                restored += 1
            elif delivered_at is not None:
                left_to_sweep += 1
            self.lost_deliveries.discard(tag)
        log.info(
            "after the connection loss: %d message(s) back on their queues, %d left to the "
            "visibility-timeout sweep, the rest already acknowledged or restored",
            restored, left_to_sweep,
        )  # fmt: skip


class RestoreLostDeliveries(bootsteps.StartStopStep):
    """Consumer bootstep: restores the lost deliveries once the task consumer is set up again,
    before the event loop (always the last step) consumes new messages."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "Restore lost deliveries"

    def start(self, c: Consumer) -> None:
        c.restore_lost_deliveries()
