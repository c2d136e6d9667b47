"""The worker's task consumer: a broker outage costs time, never a task or the worker.

When the broker goes away (an ElastiCache restart, node replacement or failover), Celery's own
consumer cancels the tasks running late-acknowledged messages and asks kombu to put every
unacknowledged message back on its queue. With the broker down, both steps write to Redis and
fail: the cancellation records a RETRY state in the result backend (the same Redis), and that
error ends the worker; kombu's restore fails and marks the messages as restored anyway, so they
only come back after the visibility timeout.

This consumer instead, when the connection is lost (or the worker's liveness,
``celery_ecs.liveness``, which it handles the same way):

- drops the channel's unacknowledged deliveries from kombu's keeping (kombu then restores
  nothing, so nothing is restored twice),
- cancels the running tasks without writing anything to the broker (their messages are among
  those deliveries; a cancelled task runs again, as at-least-once delivery allows),
- after reconnecting, and before it consumes anything new, sends again the acknowledgements
  whose reply it never got, then puts back at the head of their queues every message of its
  own unacknowledged set (``RestoreLostDeliveries``): a consumer that starts holds nothing, so
  all of them are messages it held at the loss, including one whose delivery reached Redis but
  whose reply never reached the worker.

A broker that comes back without its data (a restart without persistence or replica: the
dev stack's) has lost that set, and every other record of those messages. The worker keeps
in memory, from the loss until it is back, the messages it held (running, prefetched, waiting
for their ETA); when the broker's epoch (``celery_ecs.liveness``) read with its new lease is not the
one they were recorded under, it puts them back on their queues from memory (their tasks run
again, cut ones from the start) before the own set. Nobody else can hold them: every record
that could have given them to another worker is gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kombu
from celery import bootsteps
from celery.worker import WorkController
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.state import active_requests
from kombu.common import QoS
from redis.exceptions import OutOfMemoryError

from celery_ecs.liveness import LivenessLost, lease_of
from celery_ecs.recovery import recovery_for
from celery_ecs.transport import Channel

log = logging.getLogger(__name__)

#: Seconds between two starts of the consumer while Redis is at maxmemory: the first wait, the
#: longest (each doubles the last).
MAXMEMORY_FIRST_WAIT = 0.5
MAXMEMORY_LONGEST_WAIT = 5.0


class Consumer(CeleryConsumer):
    """``worker_consumer`` of the app (see the module docstring)."""

    # Set by Celery, and not declared by celery-types: the worker this consumer runs in, and the
    # task message consumer (Celery's Tasks step), None until that step starts.
    controller: WorkController
    task_consumer: kombu.Consumer | None
    #: The prefetch counter (Celery's Tasks step), replaced by ``BoundedPrefetch``.
    qos: QoS | None
    #: What Celery's ``start`` retries as a lost connection (kombu's connection errors; here
    #: also maxmemory).
    connection_errors: tuple[type[BaseException], ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Acknowledgements sent with a FETCH whose reply never came (``celery_ecs.transport``):
        #: sent again before the own set is put back, so that no completed task runs again.
        self.unconfirmed_acks: list[str] = []
        #: kombu's messages this worker held at a lost connection or liveness, in delivery
        #: order, until the consumer is back (``RestoreLostDeliveries``), and the broker's
        #: epoch they were recorded under.
        self.held_at_loss: list[Any] = []
        self.held_epoch: str | None = None
        # At maxmemory (noeviction) Redis refuses every command that may grow its memory, and a
        # MULTI or script containing one, whole: nothing was written. The consumer's start
        # writes (kombu's queue bindings, the lease, the restores): it fails, and is started
        # again as after a lost connection, after a wait (``_wait_for_memory``), instead of
        # ending the worker (Celery retries other errors than a connection's only with
        # broker_channel_error_retry, and then every one of them). Nothing is consumed
        # meanwhile: the event loop starts after those steps.
        self.connection_errors = (*self.connection_errors, OutOfMemoryError)
        self._maxmemory_wait = 0.0
        self._maxmemory_waited_at = float("-inf")

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        self._drop_unacked_deliveries(exc)
        # Cancel first, without the RETRY state Celery would write to the unreachable result
        # backend. Cancelled requests leave ``active_requests``, so Celery's own loop below
        # finds only requests that never started, and it writes nothing for those.
        if self.app.conf.worker_cancel_long_running_tasks_on_connection_loss:
            for request in tuple(active_requests):
                if request.task.acks_late and not request.acknowledged:
                    request.cancel(self.pool, emit_retry=False)
        super().on_connection_error_after_connected(exc)
        if isinstance(exc, OutOfMemoryError):
            self._wait_for_memory()

    def _wait_for_memory(self) -> None:
        """Wait before the consumer starts again, doubling from one start to the next while
        Redis stays at maxmemory (a start within twice the longest wait of the last wait)."""
        now = time.monotonic()
        if now - self._maxmemory_waited_at > 2 * MAXMEMORY_LONGEST_WAIT:
            self._maxmemory_wait = MAXMEMORY_FIRST_WAIT
            log.warning("the broker is at maxmemory: this worker takes no message until "
                        "memory frees, trying again every %g s at most",
                        MAXMEMORY_LONGEST_WAIT)  # fmt: skip
        else:
            self._maxmemory_wait = min(2 * self._maxmemory_wait, MAXMEMORY_LONGEST_WAIT)
        time.sleep(self._maxmemory_wait)
        self._maxmemory_waited_at = time.monotonic()

    def _drop_unacked_deliveries(self, exc: BaseException) -> None:
        consumer = self.task_consumer
        channel = consumer.channel if consumer is not None else None
        # The app's transport (celery_ecs.settings) once consuming.
        if not isinstance(channel, Channel):
            return
        qos = channel.qos
        # kombu's private bookkeeping (celery_ecs.upstream): delivered messages, minus the tags
        # acknowledged since the last flush.
        held = [message for tag, message in qos._delivered.items() if tag not in qos._dirty]
        qos._delivered.clear()
        qos._dirty.clear()
        self.unconfirmed_acks.extend(channel.unconfirmed_acks())
        if not self.held_at_loss:  # else still those of an earlier loss, with their epoch
            self.held_epoch = lease_of(self.controller).epoch
        self.held_at_loss.extend(held)
        log.warning(
            "%s with %d unacknowledged message(s): running tasks are cancelled and every "
            "message this worker holds goes back on its queue before it consumes again",
            "liveness lost" if isinstance(exc, LivenessLost)
            else "broker at maxmemory" if isinstance(exc, OutOfMemoryError)
            else "broker connection lost",
            len(held),
        )


class RestoreLostDeliveries(bootsteps.StartStopStep):
    """Consumer bootstep: puts back this worker's own unacknowledged set once the task consumer
    is set up again (with its lease, ``celery_ecs.liveness``), before the event loop (always the
    last step) consumes new messages; first, if the broker lost its data meanwhile (another epoch),
    the messages it held at the loss, from memory."""

    requires = ("celery_ecs.liveness:ConsumerLiveness",)
    label = "Restore lost deliveries"

    def start(self, c: Consumer) -> None:
        assert c.connection is not None  # connected: the steps of a consumer start after that
        channel = c.connection.default_channel
        assert isinstance(channel, Channel)  # the app's transport (celery_ecs.settings)
        if c.unconfirmed_acks:
            # Their first send may have reached Redis: finding them gone is no news.
            channel.acknowledge_now(c.unconfirmed_acks, report_gone=False)
            c.unconfirmed_acks.clear()
        recovery = recovery_for(c.controller)
        if c.held_at_loss:
            epoch = lease_of(c.controller).epoch
            if c.held_epoch is not None and c.held_epoch != epoch:
                log.warning("the broker's epoch changed (%s, now %s): it lost its data",
                            c.held_epoch, epoch)  # fmt: skip
                recovery.restore_lost(channel, c.held_at_loss)
            c.held_at_loss.clear()
            c.held_epoch = None
        recovery.restore_own(channel)


class HeldMessagesQoS(QoS):
    """The consumer's prefetch count, capped at Celery's ``worker_eta_task_limit`` without
    drifting below the worker's own prefetch.

    Celery raises the count by one for each countdown/ETA message it receives and lowers it by
    one when the message is due (``celery/worker/strategy.py``, ``Consumer.apply_eta_task``).
    kombu's ``QoS`` drops the part of a raise that the cap refuses but applies every lowering
    in full: a worker at the cap that receives more such messages ends, once they are due,
    below its prefetch (down to 1, one task at a time whatever its concurrency) until other
    messages raise it again. This one counts every raise and lowering (``wanted``) and caps only
    the value it sets, so the count returns to the prefetch.

    The undocumented names it relies on are listed in ``celery_ecs.upstream``.
    """

    def __init__(self, callback: Any, initial_value: int, max_prefetch: int | None) -> None:
        self.wanted = initial_value
        super().__init__(callback, initial_value, max_prefetch=max_prefetch)

    @property
    def value(self) -> int:
        wanted = self.wanted
        return wanted if self.max_prefetch is None else min(wanted, self.max_prefetch)

    @value.setter
    def value(self, value: int) -> None:
        # Set directly by kombu's constructor and by Celery's restore of a prefetch it reduced
        # after a lost connection: what is set is what is wanted from then on.
        self.wanted = value

    def increment_eventually(self, n: int = 1) -> int:
        with self._mutex:
            if self.wanted:  # 0: prefetch disabled, as kombu's
                self.wanted += max(n, 0)
        return self.value

    def decrement_eventually(self, n: int = 1) -> int:
        with self._mutex:
            if self.wanted:
                self.wanted = max(self.wanted - n, 1)
        return self.value


class BoundedPrefetch(bootsteps.StartStopStep):
    """Consumer bootstep: replaces the prefetch counter Celery's Tasks step made with a
    ``HeldMessagesQoS`` of the same callback, value and cap, before the event loop (always the
    last step, and the one that reads the counter) starts."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "Bounded prefetch"

    def start(self, c: Consumer) -> None:
        celery_qos = c.qos
        assert celery_qos is not None  # the Tasks step made it
        c.qos = HeldMessagesQoS(
            celery_qos.callback, celery_qos.value, max_prefetch=celery_qos.max_prefetch
        )
