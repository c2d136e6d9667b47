"""Worker liveness: positive evidence that a worker runs, so that a dead one's tasks come back fast.

Redis cannot tell a dead worker from a slow one by the age of a message. A worker can say that
it is alive, though, and a message whose worker cannot say so is taken back within seconds
instead of after the visibility timeout (``celery_ecs.recovery``). The README's "Liveness" section
has the whole argument; in short:

Keys (``<member>`` is ``<pool>:<worker>``, ``<worker>`` is the Celery hostname plus 12 random hex
digits, new at every start of a worker process, so no two processes ever share keys):

- ``liveness:<member>``, the lease: a string with a time to live of ``L`` seconds
  (``CELERY_LIVENESS_TIMEOUT``). Set by the worker's consumer before it consumes, extended by a
  thread of the worker's main process every ``L/15`` seconds, never recreated by that thread.
- ``unacked:<member>`` / ``unacked_index:<member>``: kombu's hash of unacknowledged messages,
  this worker's alone, so that they can be restored as one set, and kombu's index, where here the
  sweeps (``celery_ecs.recovery``), not the worker, record when they first saw each one held.
- ``liveness:workers``: the registry, every member that may hold unacknowledged messages. A
  worker adds itself with its lease and with every message it records (``celery_ecs.transport``), in
  the same transaction; only a sweeper that finds a member without lease and without messages
  removes it.

- ``liveness:epoch``: the broker's epoch, a random id set once by the first worker to take a
  lease (``SET NX``, no expiry; ``noeviction`` keeps it). Read with every lease: a different or
  missing one after a reconnect means the broker lost its data meanwhile (``celery_ecs.consumer``).

Deadlines, on the worker's own monotonic clock, from the moment it sent its last successful
refresh (the key expires ``L`` after Redis received it, so no sooner than ``L`` after that).
Three parties, none waiting on another: the refresher thread only refreshes (network I/O, each
step bounded: name resolution by ``BoundedResolver``, connect and reply by timeouts); the event
loop and a watchdog thread read the clock and decide, without I/O, so a refresher stuck anywhere
cannot hold the decision back:

- ``L/2``: without a successful refresh since, the liveness is lost, decided by whichever of the
  event loop (a timer every ``L/15`` s) and the watchdog checks first. The event loop then handles
  it as a lost broker connection: it cancels its running tasks without writing anything, drops
  what it had prefetched, reconnects, takes a new lease and puts its own set back on the queues
  before it consumes again.
- ``3L/4``: if the liveness was lost and the event loop has not done that (it may be stuck in a
  blocking call), the watchdog SIGKILLs the pool processes itself, once. It checks every ``L/15``
  s and does nothing else, so that happens by ``0.82 L``: before the key can expire. A refresh
  that finds the key gone (the worker was paused, or starved, past ``L``) loses the liveness and
  the watchdog kills at its next check.

A checker that finds it has itself not run for more than two ticks (the whole process was
paused: a frozen container) decides no loss for three ticks, and never past ``3L/4``: a paused
process's refresher, resumed too, gets that long to find its key still there, and then nothing
is lost.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import bootsteps
from celery.concurrency import (  # type: ignore[attr-defined]  # celery-types: not in the stub
    ALIASES as POOL_ALIASES,
)
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.exceptions import ImproperlyConfigured
from celery.worker import state as worker_state
from kombu.utils.encoding import bytes_to_str
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_ecs.periodic import PeriodicThread

log = logging.getLogger(__name__)

#: Every worker that may hold unacknowledged messages, as ``<pool>:<worker>``.
REGISTRY_KEY = "liveness:workers"
#: The broker's epoch (see the module docstring).
EPOCH_KEY = "liveness:epoch"
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
        # Pool names have no ':' (celery_ecs.settings), so the first one ends the pool.
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
        """Between two refreshes, and two checks of the event loop and of the watchdog."""
        return self.timeout / 15

    @property
    def lost_after(self) -> float:
        return self.timeout / 2

    @property
    def kill_after(self) -> float:
        return self.timeout * 3 / 4

    @property
    def sweep_interval(self) -> float:
        """Between two sweeps (celery_ecs.recovery): a third of the timeout, at most 5 s, so a gone
        worker's messages wait little past its key's expiry, and the visibility timeout's last
        resort comes at most two sweeps late (one to stamp a message, one to find it expired)."""
        return min(MAX_SWEEP_INTERVAL, self.timeout / 3)

    @property
    def latest_kill(self) -> float:
        """The latest the watchdog kills after the last successful refresh was sent: its check
        comes at most a tick after ``kill_after`` (it does nothing else). Must stay below
        ``timeout``."""
        return self.kill_after + self.tick

    @property
    def recovery_bound(self) -> float:
        """Longest from a worker's death until a sweeper finds its lease gone."""
        return self.timeout + self.sweep_interval


#: What a refresh found: True the lease was extended, False it had expired, None no answer.
RefreshOutcome = bool | None


class Lease:
    """This worker's liveness as the worker itself knows it. Thread-safe.

    ``acquire`` runs in the event loop's thread (the consumer, before it consumes); ``refresh``
    on the refresher thread; ``check`` in the event loop and on the watchdog thread, and
    ``must_kill`` on the watchdog thread. Nothing here waits on network I/O while holding the
    lock: a refresh runs between two short critical sections.
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
        #: Counts acquires: a refresh sent under an older lease is not this lease's evidence.
        self._generation = 0
        self._lost: str | None = None
        self._key_gone = False
        self._killed = False
        #: When each checker (``check``'s ``checker``) last checked, and the earliest a loss
        #: may be decided after one of them found the process had been paused.
        self._checked_at: dict[str, float] = {}
        self._acquired_at = float("-inf")
        self._decide_after = float("-inf")
        #: The broker's epoch read with the last acquire; None before the first.
        self.epoch: str | None = None

    def acquire(self, client: redis.Redis) -> None:
        """Take a fresh lease and register; from then on the refresher keeps it alive. Reads
        the broker's epoch, setting it first if nobody has (``epoch``)."""
        sent = self._clock()
        with client.pipeline() as pipe:
            pipe.set(self.keys.lease, f"pid {os.getpid()}",
                     px=int(self.deadlines.timeout * 1000))  # fmt: skip
            pipe.sadd(REGISTRY_KEY, self.keys.member)
            # One transaction: of two workers setting it at once, both read the one that won.
            pipe.set(EPOCH_KEY, secrets.token_hex(16), nx=True)
            pipe.get(EPOCH_KEY)
            *_, epoch = pipe.execute()
        with self._lock:
            self._refreshed_at = sent
            self._generation += 1
            self._lost = None
            self._key_gone = self._killed = False
            self._acquired_at = sent
            self._decide_after = float("-inf")
            self.epoch = bytes_to_str(epoch)

    def lost(self) -> str | None:
        """Why the liveness is lost, or None while it holds (as last decided; see ``check``)."""
        with self._lock:
            return self._lost

    def check(self, checker: str) -> str | None:
        """Decide from the clock alone whether the liveness is lost; return why, or None.

        ``checker`` names who asks (the event loop, the watchdog). One that finds it has itself
        not run for more than two ticks (the process was paused) gives the refresher, resumed
        too, three ticks (its interval and a refresh's timeouts) to refresh before a loss is
        decided, never past ``kill_after``.
        """
        with self._lock:
            now = self._clock()
            # Since its last check, or the lease if later: the event loop's checks start with it.
            previous = max(self._checked_at.get(checker, self._acquired_at), self._acquired_at)
            self._checked_at[checker] = now
            tick = self.deadlines.tick
            if now - previous > 2 * tick:
                self._decide_after = max(self._decide_after, now + 3 * tick)
            if self._lost is None and self._refreshed_at is not None:
                silent = now - self._refreshed_at
                if silent >= self.deadlines.lost_after and (
                    now >= self._decide_after or silent >= self.deadlines.kill_after
                ):
                    self._lose(f"no successful refresh of its liveness key for {silent:.1f} s")
            return self._lost

    def must_kill(self) -> bool:
        """The watchdog's check: True when the worker must kill its pool processes now (once
        per loss): the liveness is lost and its key gone, or ``kill_after`` has passed."""
        self.check("watchdog")
        with self._lock:
            if self._lost is None or self._killed or self._refreshed_at is None:
                return False
            silent = self._clock() - self._refreshed_at
            if self._key_gone or silent >= self.deadlines.kill_after:
                self._killed = True
                return True
            return False

    def refresh(self, extend: Callable[[], RefreshOutcome]) -> RefreshOutcome:
        """One refresh (the refresher thread): ``extend`` extends the key by the full timeout;
        its outcome is recorded unless a new lease was taken meanwhile. Once the liveness is
        lost the key is left to expire (only the consumer takes a new lease): returns None."""
        with self._lock:
            generation, lost = self._generation, self._lost
            if self._refreshed_at is None or lost is not None:
                return None
        sent = self._clock()
        extended = extend()
        with self._lock:
            if self._generation != generation:
                return None  # the consumer took a new lease meanwhile
            if extended:
                # Late news is still news: the key was there, so nobody can have taken anything
                # (unless the loss was decided meanwhile: lost stays lost).
                self._refreshed_at = sent
            elif extended is False and self._lost is None:
                self._lose("its liveness key had expired: the worker was paused or starved "
                           "for longer than the liveness timeout")  # fmt: skip
                self._key_gone = True
        return extended

    def _lose(self, reason: str) -> None:
        self._lost = reason
        log.warning(
            "liveness lost (%s): the worker cancels its tasks and hands back its messages, "
            "as after a lost broker connection",
            reason,
        )


def lease_of(worker: Any) -> Lease:
    """A worker's lease: ``celery_ecs.runtime`` gives every worker process one, as ``liveness``."""
    lease: Lease = worker.liveness
    return lease


#: One ``getaddrinfo`` query: (host, port, family, type, proto, flags).
AddressQuery = tuple[str, int, int, int, int, int]
AddressInfo = list[tuple[Any, ...]]


class BoundedResolver:
    """``getaddrinfo`` that answers within ``timeout`` seconds.

    ``socket_connect_timeout`` does not cover the name lookup before the connect, which the
    system resolver may stretch to its own timeouts times its attempts times the name servers.
    Here each lookup runs on a daemon thread of its own and the caller waits at most
    ``timeout``: then it gets the last answer for the same query, if there is one (an
    ElastiCache endpoint's address changes only at a failover, and a stale one fails that
    connection, nothing worse), or ``socket.timeout``. A lookup still running is joined, not
    repeated, so a resolver that hangs costs one thread, not one per call.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._lookups: dict[AddressQuery, Future[AddressInfo]] = {}
        self._answers: dict[AddressQuery, AddressInfo] = {}

    def getaddrinfo(self, host: str, port: int, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> AddressInfo:  # fmt: skip
        query: AddressQuery = (host, port, family, type, proto, flags)
        with self._lock:
            lookup = self._lookups.get(query)
            if lookup is None:
                lookup = self._lookups[query] = Future()
                # Named after the thread that asked: a stuck lookup says whose it is.
                asker = threading.current_thread().name
                threading.Thread(target=self._look_up, args=(query, lookup), daemon=True,
                                 name=f"{asker}:resolve").start()  # fmt: skip
        try:
            return lookup.result(timeout=self.timeout)
        except OSError as error:  # the lookup failed, or TimeoutError: it takes too long
            with self._lock:
                known = self._answers.get(query)
            if known is None:
                if isinstance(error, TimeoutError):
                    message = f"no address for {host} within {self.timeout:g} s"
                    raise TimeoutError(message) from error
                raise
            log.warning("liveness: resolving %s: %r; using its last address", host, error)
            return known

    def _look_up(self, query: AddressQuery, lookup: Future[AddressInfo]) -> None:
        try:
            answer = socket.getaddrinfo(*query)
        except OSError as error:
            with self._lock:
                del self._lookups[query]
            lookup.set_exception(error)
        else:
            with self._lock:
                del self._lookups[query]
                self._answers[query] = answer
            lookup.set_result(answer)


class ResolvedConnection(redis.Connection):
    """redis-py's TCP connection, resolving its host with a ``BoundedResolver``: each address
    is handed to redis-py's own connect as a numeric host (which needs no lookup), and the name
    is back in ``host`` before anything else reads it (TLS checks the certificate against it)."""

    def __init__(self, *, resolver: BoundedResolver, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]  # redis-py: untyped
        self.resolver = resolver

    def _connect(self) -> socket.socket:
        name = self.host
        answers = self.resolver.getaddrinfo(name, self.port, self.socket_type,
                                            socket.SOCK_STREAM)  # fmt: skip
        failure: OSError = OSError(f"getaddrinfo returned no address for {name}")
        try:
            for *_, address in answers:
                self.host = address[0]
                try:
                    connected = super()._connect()  # type: ignore[no-untyped-call]
                    return cast(socket.socket, connected)
                except OSError as error:
                    failure = error
        finally:
            self.host = name
        raise failure


class ResolvedSSLConnection(redis.SSLConnection, ResolvedConnection):
    """The same for ``rediss://``: TLS wraps the socket ``ResolvedConnection`` connected."""


class LeaseRefresher:
    """The refresher's Redis side: one ``PEXPIRE``, each step of it bounded.

    A client of its own (redis-py is thread-safe, kombu's connections are not), with no retries,
    the name lookup bounded (``BoundedResolver``) and timeouts of half a tick for connecting and
    for the answer. None of that bounds the decision, which never waits for a refresh (``Lease``);
    it keeps a slow resolver or network from costing the lease when a refresh could succeed.
    """

    def __init__(self, broker_url: str, lease_key: str, deadlines: Deadlines) -> None:
        self.lease_key = lease_key
        self.ttl_ms = int(deadlines.timeout * 1000)
        tls = broker_url.startswith("rediss://")
        self.client = redis.Redis.from_url(
            broker_url,
            socket_timeout=deadlines.tick / 2,
            socket_connect_timeout=deadlines.tick / 2,
            retry=Retry(NoBackoff(), 0),
            connection_class=ResolvedSSLConnection if tls else ResolvedConnection,
            resolver=BoundedResolver(deadlines.tick / 2),
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


def require_prefork(pool: Any) -> None:
    """Refuse, at the worker's start, a pool whose tasks ``kill_pool_processes`` cannot stop.

    Only the prefork pool runs tasks in processes of their own; solo, threads, gevent and
    eventlet run them in the worker's main process, where the watchdog could stop a task only
    by killing the worker itself, and a custom pool may be anything.
    """
    if isinstance(pool, PreforkPool):
        return
    kind = type(pool)
    path = f"{kind.__module__}:{kind.__qualname__}"
    name = next((alias for alias, where in POOL_ALIASES.items() if where == path), path)
    raise ImproperlyConfigured(
        f"worker pool {name!r} (celery worker --pool, or the worker_pool setting): the "
        "liveness watchdog (celery_ecs.liveness) stops a task that must not run on by killing the "
        "pool process running it, which only the 'prefork' pool has; use --pool prefork "
        "(Celery's default)"
    )


def kill_pool_processes(pool: Any) -> int:
    """SIGKILL every process of a prefork pool (``require_prefork``): nothing of this worker
    runs a task any more.

    The pool notices in the event loop, like an OOM kill (task_reject_on_worker_lost).
    """
    pids = [pid for pid in pool.info.get("processes", []) if pid != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return len(pids)


class LivenessThreads:
    """The refresher and the watchdog, started and stopped together (a bootstep's ``obj``).

    Neither ever waits for a fork (``celery_ecs.periodic``): the refresher's imports are done before
    the pool forks (its client is made in ``LivenessStep.create``, the IDNA codec by
    ``celery_ecs.periodic``), and the watchdog only reads the clock, logs and signals.
    """

    def __init__(self, refresher: PeriodicThread, watchdog: PeriodicThread) -> None:
        self.refresher = refresher
        self.watchdog = watchdog

    def start(self) -> None:
        self.refresher.start()
        self.watchdog.start()

    def stop(self) -> None:
        self.watchdog.stop()
        self.refresher.stop()


class LivenessStep(bootsteps.StartStopStep):
    """Worker bootstep: the refresher and the watchdog threads of the main process.

    Why threads and not the event loop's timer: a refresh from the timer would be evidence that
    the loop runs, but a loop that is merely busy or blocked for a while must keep its tasks
    (they run in the pool's processes meanwhile), and only a thread can still stop those tasks
    when the loop cannot. A loop that hangs for good keeps its lease, and its messages come
    back after the visibility timeout, or sooner when the container health check (the heartbeat
    touched from the loop) gets the container replaced. Two threads, so that the one that stops
    tasks never waits for the one that talks to Redis.

    The threads run until the process exits: a warm shutdown's last tasks keep their lease, and
    the key expires ``L`` after the exit.
    """

    requires = ("celery.worker.components:Pool",)
    label = "Liveness"

    # celery-types has Step.create return None; StartStopStep keeps what it returns as its obj.
    def create(self, worker: Any) -> LivenessThreads:  # type: ignore[override]
        require_prefork(worker.pool)
        lease: Lease = worker.liveness
        extend = LeaseRefresher(worker.app.conf.broker_url, lease.keys.lease, lease.deadlines)

        def refresh() -> None:
            lease.refresh(extend)

        def watch() -> None:
            # Nothing to stop when the event loop already cancelled every running task.
            if lease.must_kill() and worker_state.active_requests:
                killed = kill_pool_processes(worker.pool)
                log.error(
                    "liveness lost and not yet handled by the event loop: killed the %d pool "
                    "process(es), so that no task of this worker runs on", killed,
                )

        tick = lease.deadlines.tick
        return LivenessThreads(
            PeriodicThread("liveness-refresh", tick, refresh),
            PeriodicThread("liveness-watchdog", tick, watch),
        )

    def stop(self, parent: Any) -> None:
        """Deliberately nothing: see the class docstring."""

    terminate = stop


class ConsumerLiveness(bootsteps.StartStopStep):
    """Consumer bootstep: takes the lease before the consumer consumes, and from the event loop
    turns a lost liveness into a lost connection (``LivenessLost``), deciding the loss from the
    clock itself (``Lease.check``): a stuck refresher cannot hold it back."""

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
            reason = lease.check("event loop")
            if reason is not None:
                raise LivenessLost(f"liveness lost: {reason}")

        self.tref = c.timer.call_repeatedly(lease.deadlines.tick, check)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
