"""Revokes that outlive the worker that received them.

Celery keeps a revoke in the memory of each worker that receives its broadcast
(``celery.worker.state.revoked``, for ``REVOKE_EXPIRES`` s, 3 h by default) and skips the task
when its message comes. A worker that starts learns earlier revokes only from other live workers
(mingle) or from its state file (``--statedb``). The workers here run ``--without-mingle`` and
without a state file (a Fargate task's disk is new at every start), while liveness hands a dead
worker's messages to exactly those new workers (``celery_ecs.recovery``): a task revoked while its
message was held (prefetched, waiting for its ETA) would run on the replacement.

So every worker that receives a revoke also records it in Redis, in one sorted set
(``REVOKED_KEY``: task id -> when the record expires, epoch seconds), and a consumer loads every
record still valid into Celery's set before it consumes, at its first start and at every
reconnection (a broadcast sent while it was disconnected never reached it). A record lives
``keep_seconds``: the longest of Celery's own memory of a revoke and the pool's visibility
timeout, past which no message delivered before the revoke is still held anywhere (the sweep
has put it back by then). Every pool's workers receive the broadcast and record it; the longest
keep wins (``ZADD GT``). The set is trimmed to Celery's ``REVOKES_MAX`` newest records.

Why not mingle: it asks the live workers, and a pool whose only worker died has none; it also
costs every start a broadcast round. The record survives the last worker.

What still holds as in stock Celery: a revoke broadcast while no worker is connected reaches
nobody and is lost (Redis's PUBLISH keeps nothing); a broker that loses its data loses the
records; ``revoke_by_stamped_headers`` is not recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import redis
from celery import bootsteps
from celery.utils.functional import maybe_list
from celery.worker import control as celery_control
from celery.worker import state as worker_state
from celery.worker.control import control_command
from kombu.utils.encoding import bytes_to_str

log = logging.getLogger(__name__)

#: Every recorded revoke: a sorted set of task ids scored by when their record expires.
REVOKED_KEY = "liveness:revoked"


def keep_seconds(visibility_timeout: float) -> float:
    """How long a revoke is kept, in Redis and in a worker's memory (see the module docstring)."""
    return max(float(visibility_timeout), float(worker_state.REVOKE_EXPIRES))


def record(client: redis.Redis, task_ids: Iterable[str], keep: float) -> None:
    """Record revokes of ``task_ids`` for ``keep`` seconds (never shortening a longer one), and
    drop expired records and those beyond Celery's ``REVOKES_MAX``, in one transaction."""
    now = time.time()
    expires = {task_id: now + keep for task_id in task_ids}
    if not expires:
        return
    with client.pipeline() as pipe:
        pipe.zadd(REVOKED_KEY, expires, gt=True)
        pipe.zremrangebyscore(REVOKED_KEY, "-inf", now)
        pipe.zremrangebyrank(REVOKED_KEY, 0, -worker_state.REVOKES_MAX - 1)
        pipe.execute()


def recorded(client: redis.Redis) -> list[str]:
    """The task ids whose revoke record has not expired."""
    ids = cast("list[bytes] | list[str]", client.zrangebyscore(REVOKED_KEY, time.time(), "+inf"))
    return [bytes_to_str(task_id) for task_id in ids]


def _record_received(state: Any, task_ids: Iterable[str]) -> None:
    """Record what a control command revoked, on the consumer's synchronous connection (the
    command runs in the event loop). A failure is logged: the revoke still holds in this worker,
    and every other worker that received the broadcast records it too."""
    consumer = state.consumer
    keep = keep_seconds(consumer.app.conf.broker_transport_options["visibility_timeout"])
    ids = [str(task_id) for task_id in task_ids]
    try:
        with consumer.connection.default_channel.conn_or_acquire() as client:
            record(client, ids, keep)
    except redis.RedisError as error:
        log.error("revoke of %s not recorded in Redis (%r): a worker that replaces this one "
                  "will not know it", ", ".join(ids), error)  # fmt: skip


# Celery's control commands of the same names, replaced in its registry (the last registration
# of a name wins: celery.worker.control.Panel) by ones that also record. Same signatures.
@control_command(variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(state: Any, task_id: Any, terminate: bool = False, signal: str | None = None,
           **kwargs: Any) -> Any:  # fmt: skip
    """Revoke task by task id (or list of ids), and record the revoke in Redis."""
    # celery-types' stub of celery.worker.control has no command functions.
    reply = celery_control.revoke(  # type: ignore[attr-defined]
        state, task_id, terminate=terminate, signal=signal, **kwargs
    )
    _record_received(state, maybe_list(task_id) or [])
    return reply


@control_command(variadic="task_id", args=[("signal", str)],
                 signature="<signal> [id1 [id2 [... [idN]]]]")  # fmt: skip
def terminate(state: Any, signal: str, task_id: Any, **kwargs: Any) -> Any:
    """Terminate task by task id (or list of ids), and record the revoke in Redis."""
    reply = celery_control.terminate(state, signal, task_id, **kwargs)  # type: ignore[attr-defined]
    _record_received(state, maybe_list(task_id) or [])
    return reply


class LoadRevokes(bootsteps.StartStopStep):
    """Consumer bootstep: loads the recorded revokes into Celery's set before the event loop
    (always the last step) takes any message, and keeps them in memory as long as in Redis."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "Load revokes"

    def start(self, c: Any) -> None:
        keep = keep_seconds(c.app.conf.broker_transport_options["visibility_timeout"])
        revoked = worker_state.revoked
        revoked.expires = max(revoked.expires, keep)
        with c.connection.default_channel.conn_or_acquire() as client:
            ids = recorded(client)
        revoked.update(ids)
        if ids:
            log.info("%d recorded revoke(s) loaded: those tasks will not run here", len(ids))
