"""Worker liveness: positive evidence that a worker runs, so that a dead one's tasks come back fast.

Redis cannot tell a dead worker from a slow one by the age of a message. A worker can say that
it is alive, though, and a message whose worker cannot say so is taken back within seconds
instead of after the visibility timeout (``app.recovery``). The README's "Liveness" section has
the whole argument; in short:

Keys (``<member>`` is ``<pool>:<worker>``, ``<worker>`` is the Celery hostname plus 12 random hex
digits, new at every start of a worker process, so no two processes ever share keys):

- ``liveness:<member>``, the lease: a string with a time to live of ``L`` seconds
  (``CELERY_LIVENESS_TIMEOUT``). Set by the worker's consumer before it consumes, extended by a
  thread of the worker's main process every ``L/15`` seconds, never recreated by that thread.
- ``unacked:<member>`` / ``unacked_index:<member>``: kombu's hash and index of unacknowledged
  messages, this worker's alone, so that they can be restored as one set.
- ``liveness:workers``: the registry, every member that may hold unacknowledged messages. A
  worker adds itself with its lease and with every message it records (``app.transport``), in
  the same transaction; only a sweeper that finds a member without lease and without messages
  removes it.

Deadlines, on the worker's own monotonic clock, from the moment it sent its last successful
refresh (the key expires ``L`` after Redis received it, so no sooner than ``L`` after that):

- ``L/2``: without a successful refresh since, the liveness is lost; the consumer's event loop
  (a timer every ``L/15`` s) then handles it as a lost broker connection: it cancels its running
  tasks without writing anything, drops what it had prefetched, reconnects, takes a new lease and
  puts its own set back on the queues before it consumes again.
- ``3L/4``: if the liveness was lost and the event loop has not done that (it may be stuck in a
  blocking call), the thread SIGKILLs the pool processes itself, once. The thread checks every
  ``L/15`` s and a refresh waits at most ``L/15`` s, so that happens by ``0.89 L``: before the
  key can expire. A refresh that finds the key gone (the worker was paused, or starved, past
  ``L``) loses the liveness and kills at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import bootsteps
from celery.worker import state as worker_state
from kombu.utils.encoding import bytes_to_str
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.periodic import PeriodicThread

log = logging.getLogger(__name__)

#: Every worker that may hold unacknowledged messages, as ``<pool>:<worker>``.
REGISTRY_KEY = "liveness:workers"
#: Seconds between two sweeps at most (see ``Deadlines.sweep_interval``).
MAX_SWEEP_INTERVAL = 5.0


class LivenessLost(redis.ConnectionError):
    """Raised in the consumer's event loop: kombu and Celery treat it as a lost connection."""


@dataclass(frozen=True)
class UnackedSet:
    """Where kombu keeps a set of unacknowledged messages, and what says its owner is alive."""

    hash: str
    index: str
    #: The owner's lease key; None for a set without an owner (the pool-level keys).
    lease: str | None


@dataclass(frozen=True)
class WorkerKeys:
    """The Redis keys of one worker process (see the module docstring)."""

    pool: str
    worker: str

    @classmethod
    def new(cls, pool: str, hostname: str) -> WorkerKeys:
        return cls(pool, f"{hostname}/{secrets.token_hex(6)}")

    @classmethod
    def from_member(cls, member: str) -> WorkerKeys:
        # Pool names have no ':' (app.settings), so the first one ends the pool.
        pool, _, worker = member.partition(":")
        return cls(pool, worker)

    @property
    def member(self) -> str:
        return f"{self.pool}:{self.worker}"

    @property
    def lease(self) -> str:
        return f"liveness:{self.member}"

    @property
    def unacked(self) -> UnackedSet:
        return UnackedSet(
            hash=f"unacked:{self.member}",
            index=f"unacked_index:{self.member}",
            lease=self.lease,
        )

    def transport_options(self) -> dict[str, str]:
        """What the worker's kombu channels need to keep their messages in this worker's set."""
        return {
            "unacked_key": self.unacked.hash,
            "unacked_index_key": self.unacked.index,
            "worker_registry_key": REGISTRY_KEY,
            "worker_member": self.member,
        }


def pool_unacked(pool: str) -> UnackedSet:
    """The pool-level set: what workers without keys of their own (older versions) used."""
    return UnackedSet(hash=f"unacked:{pool}", index=f"unacked_index:{pool}", lease=None)


def registered_workers(client: redis.Redis) -> list[WorkerKeys]:
    # redis-py types a reply for its synchronous and asyncio clients alike (or an awaitable).
    # Members are bytes, or str from a client that decodes replies; decoded, they sort as the
    # bytes do (UTF-8 keeps the order).
    members = cast("set[bytes] | set[str]", client.smembers(REGISTRY_KEY))
    return [WorkerKeys.from_member(member) for member in sorted(map(bytes_to_str, members))]


def unacked_count(client: redis.Redis, pool: str) -> int:
    """Messages the pool's workers hold unacknowledged (their sets and the pool-level one)."""
    sets = [worker.unacked for worker in registered_workers(client) if worker.pool == pool]
    with client.pipeline(transaction=False) as pipe:
        for unacked in [*sets, pool_unacked(pool)]:
            pipe.hlen(unacked.hash)
        return sum(pipe.execute())


@dataclass(frozen=True)
class Deadlines:
    """Every liveness interval, derived from the lease's time to live ``timeout`` (seconds)."""

    timeout: float

    @property
    def tick(self) -> float:
        """Between two refreshes, and two checks of the event loop; also a refresh's timeout."""
        return self.timeout / 15

    @property
    def lost_after(self) -> float:
        return self.timeout / 2

    @property
    def kill_after(self) -> float:
        return self.timeout * 3 / 4

    @property
    def sweep_interval(self) -> float:
        """Between two sweeps (app.recovery): a third of the timeout, at most 5 s, so a gone
        worker's messages wait little past its key's expiry, and the visibility timeout's last
        resort comes at most 5 s late."""
        return min(MAX_SWEEP_INTERVAL, self.timeout / 3)

    @property
    def latest_kill(self) -> float:
        """The latest the thread kills after a refresh it sent: a tick late and a refresh's
        timeout on top of ``kill_after``. Must stay below ``timeout``."""
        return self.kill_after + 2 * self.tick

    @property
    def recovery_bound(self) -> float:
        """Longest from a worker's death until a sweeper finds its lease gone."""
        return self.timeout + self.sweep_interval


#: What a refresh found: True the lease was extended, False it had expired, None no answer.
RefreshOutcome = bool | None


class Lease:
    """This worker's liveness as the worker itself knows it. Thread-safe.

    ``acquire`` runs in the event loop's thread (the consumer, before it consumes); ``tick`` on
    the liveness thread; ``lost`` is read by both.
    """

    def __init__(
        self, keys: WorkerKeys, deadlines: Deadlines,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.keys = keys
        self.deadlines = deadlines
        self._clock = clock
        self._lock = threading.Lock()
        #: When the last successful acquire or refresh was sent; None before the first acquire.
        self._refreshed_at: float | None = None
        self._lost: str | None = None
        self._key_gone = False
        self._killed = False

    def acquire(self, client: redis.Redis) -> None:
        """Take a fresh lease and register; from then on the thread keeps it alive."""
        sent = self._clock()
        with client.pipeline() as pipe:
            pipe.set(self.keys.lease, f"pid {os.getpid()}",
                     px=int(self.deadlines.timeout * 1000))  # fmt: skip
            pipe.sadd(REGISTRY_KEY, self.keys.member)
            pipe.execute()
        with self._lock:
            self._refreshed_at = sent
            self._lost = None
            self._key_gone = self._killed = False

    def lost(self) -> str | None:
        """Why the liveness is lost, or None while it holds."""
        with self._lock:
            return self._lost

    def tick(self, refresh: Callable[[], RefreshOutcome]) -> bool:
        """One round of the liveness thread: refresh, then check the deadlines.

        ``refresh`` extends the key by the full timeout. Returns True when the worker must kill
        its pool processes now (once per loss).
        """
        with self._lock:
            held_since, lost = self._refreshed_at, self._lost
        if held_since is None:
            return False
        if lost is None:  # once lost, the key is left to expire: only the consumer retakes it
            sent = self._clock()
            extended = refresh()
            with self._lock:
                if self._refreshed_at != held_since:
                    return False  # the consumer took a new lease meanwhile
                if extended:
                    self._refreshed_at = sent
                elif extended is False:
                    self._lose("its liveness key had expired: the worker was paused or starved "
                               "for longer than the liveness timeout")  # fmt: skip
                    self._key_gone = True
        with self._lock:
            assert self._refreshed_at is not None
            silent = self._clock() - self._refreshed_at
            if self._lost is None and silent >= self.deadlines.lost_after:
                self._lose(f"no successful refresh of its liveness key for {silent:.1f} s")
            if self._lost is None or self._killed:
                return False
            if self._key_gone or silent >= self.deadlines.kill_after:
                self._killed = True
                return True
            return False

    def _lose(self, reason: str) -> None:
        self._lost = reason
        log.warning(
            "liveness lost (%s): the worker cancels its tasks and hands back its messages, "
            "as after a lost broker connection",
            reason,
        )


class LeaseRefresher:
    """The liveness thread's Redis side: ``PEXPIRE`` within one tick, or no answer.

    A client of its own (redis-py is thread-safe, kombu's connections are not), with no retries
    and timeouts of half a tick each for connecting and for the answer, so a refresh never holds
    up the deadline checks by more than a tick.
    """

    def __init__(self, broker_url: str, lease_key: str, deadlines: Deadlines) -> None:
        self.lease_key = lease_key
        self.ttl_ms = int(deadlines.timeout * 1000)
        self.client = redis.Redis.from_url(
            broker_url,
            socket_timeout=deadlines.tick / 2,
            socket_connect_timeout=deadlines.tick / 2,
            retry=Retry(NoBackoff(), 0),
        )
        self._failing = False

    def __call__(self) -> RefreshOutcome:
        try:
            extended = bool(self.client.pexpire(self.lease_key, self.ttl_ms))
        except redis.RedisError as error:
            if not self._failing:
                log.warning("liveness: cannot refresh %s: %r", self.lease_key, error)
            self._failing = True
            return None
        if self._failing:
            log.info("liveness: refreshing %s again", self.lease_key)
            self._failing = False
        return extended


def kill_pool_processes(pool: Any) -> int:
    """SIGKILL every process of a prefork pool: nothing of this worker runs a task any more.

    The pool notices in the event loop, like an OOM kill (task_reject_on_worker_lost).
    """
    pids = [pid for pid in pool.info.get("processes", []) if pid != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return len(pids)


class LivenessStep(bootsteps.StartStopStep):
    """Worker bootstep: the liveness thread (``app.periodic``) of the main process.

    Why a thread and not the event loop's timer: the timer would be evidence that the loop runs,
    but a loop that is merely busy or blocked for a while must keep its tasks (they run in the
    pool's processes meanwhile), and only a thread can still stop those tasks when the loop
    cannot. A loop that hangs for good keeps its lease, and its messages come back after the
    visibility timeout, or sooner when the container health check (the heartbeat touched from
    the loop) gets the container replaced.

    The thread runs until the process exits: a warm shutdown's last tasks keep their lease, and
    the key expires ``L`` after the exit.
    """

    requires = ("celery.worker.components:Pool",)
    label = "Liveness"

    # celery-types has Step.create return None; StartStopStep keeps what it returns as its obj.
    def create(self, worker: Any) -> PeriodicThread:  # type: ignore[override]
        lease: Lease = worker.liveness
        refresh = LeaseRefresher(worker.app.conf.broker_url, lease.keys.lease, lease.deadlines)

        def tick() -> None:
            # Nothing to stop when the event loop already cancelled every running task.
            if lease.tick(refresh) and worker_state.active_requests:
                killed = kill_pool_processes(worker.pool)
                log.error(
                    "liveness lost and not yet handled by the event loop: killed the %d pool "
                    "process(es), so that no task of this worker runs on", killed,
                )

        return PeriodicThread("liveness", lease.deadlines.tick, tick)

    def stop(self, parent: Any) -> None:
        """Deliberately nothing: see the class docstring."""

    terminate = stop


class ConsumerLiveness(bootsteps.StartStopStep):
    """Consumer bootstep: takes the lease before the consumer consumes, and from the event loop
    turns a lost liveness into a lost connection (``LivenessLost``)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "Liveness lease"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, c: Any) -> None:
        lease: Lease = c.controller.liveness
        with c.connection.default_channel.conn_or_acquire() as client:
            lease.acquire(client)

        def check() -> None:
            reason = lease.lost()
            if reason is not None:
                raise LivenessLost(f"liveness lost: {reason}")

        self.tref = c.timer.call_repeatedly(lease.deadlines.tick, check)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
