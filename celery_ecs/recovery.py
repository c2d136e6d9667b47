"""Put unacknowledged messages back on their queues: a gone worker's within seconds, any late.

Every worker sweeps every ``min(5, L/3)`` seconds (``L`` = ``CELERY_LIVENESS_TIMEOUT``) on a
thread of its main process, and once in its consumer before it consumes (``RestoreGoneWorkers``):

1. Gone workers, of every pool: each registered worker (``celery_ecs.liveness``) whose lease key has
   expired had all its messages put back at the head of their queues, oldest first in line (to
   within one sweep interval: below), then leaves the registry. Its tasks run again as soon as a
   worker has a free slot.
2. The visibility timeout, this pool only: any message of the pool held for longer than the
   pool's visibility timeout is put back, as kombu's ``restore_visible`` does: the last resort
   for what liveness cannot decide (a worker alive but stuck holding a message). The pool-level
   keys, where workers of versions before per-worker keys kept their messages, are swept this
   way too.

How long a message has been held is the sweep's own record. kombu writes each message's
delivery time into its index (``unacked_index``) when it takes the message and removes it at the
acknowledgement: two commands a task. The transport (``celery_ecs.transport``) writes neither;
instead, for each set of the pool, a sweep runs ``STAMP``, one script: every message held
without an entry in the index gets one, scored with Redis's clock as the script runs (the first
sweep that saw it held), entries of messages no longer held go, and those stamped at least a
visibility timeout ago are returned, to be put back. One clock, Redis's, writes the stamps and
decides their age: the hosts' clocks, and their skew, play no part. A gone worker's set goes
back stamped messages first, oldest stamp first, then the ones no sweep has stamped yet (held
for less than a sweep interval), in no particular order.

While a pool has more than one worker, one of them stamps the pool's sets per turn: a sweep
first takes the pool's turn (``TURN``, a key that lasts 0.9 sweep interval), and a sweep that
finds it another worker's stamps nothing. A pool of N workers so runs N + 1 stamp scripts a
sweep interval, not N x (N + 1). The worker whose turn it was sweeps again an interval after
taking it, and finds it free: the stamps run at least once an interval; should that worker die,
another's next sweep takes the turn within 1.9 intervals of the last. Hence, for the visibility
timeout, a message goes back no earlier than the visibility timeout after its delivery (its
stamp comes after its record, on the same clock) and at most one sweep interval later than a
delivery-time index would put it back (1.9 once, after the death of the worker whose turn it
was): the stamp is at most that late.

Each message is put back in a transaction that watches its set's hash (and, for a gone worker,
its lease): of two sweepers, or a sweeper and a worker acknowledging, restoring or revived, one
wins and the other finds nothing to do, so no message is put back twice, and none is taken from
a worker that has its lease again. The destination list (queue and priority) is kombu's choice
(``Channel._do_restore_message``), and a claim key keeps concurrent periodic sweepers from
repeating each other's work on one gone worker (an optimisation; the transactions alone are
exactly-once). The consumer's sweep before it consumes ignores claims: it returns only once every
gone worker's messages are back, whoever else is restoring them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis
from celery import Celery, bootsteps
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from celery_ecs.liveness import (
    REGISTRY_KEY,
    Lease,
    UnackedSet,
    WorkerKeys,
    pool_unacked,
    registered_workers,
)
from celery_ecs.periodic import PeriodicThread

log = logging.getLogger(__name__)

#: Seconds a broker round trip of the sweep thread may take before it gives up until next time.
BROKER_TIMEOUT_SECONDS = 5.0

#: Stamps one set's held messages and returns those held for longer than the visibility timeout
#: (the module docstring). KEYS: the set's hash, its index. ARGV: the visibility timeout,
#: seconds. Returns the expired tags, the most recently stamped first (as ZREVRANGEBYSCORE).
#: Redis's own clock (TIME; scripts replicate their effects, so Redis 7 allows it before writes)
#: for stamp and ceiling alike: a stamp can be neither earlier than the script that saw the
#: message held nor skewed by a host's clock. Flagged allow-oom: at maxmemory, a refused stamp
#: would keep a stuck worker's message from ever coming back; the entries are small. A tag
#: acknowledged keeps its stamp until this removes it: harmless, as no tag comes back once
#: acknowledged (a publish gives a new one, and every restore removes the stamp with the record).
#: ZADD and ZREM in slices: ``unpack`` is bounded by Lua's stack.
STAMP = """#!lua flags=allow-oom
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
  return {}
end
local held = redis.call('HKEYS', KEYS[1])
if #held == 0 then
  redis.call('DEL', KEYS[2])
  return {}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local ceiling = now - tonumber(ARGV[1])
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local holding = {}
for _, tag in ipairs(held) do
  holding[tag] = true
end
local stamped, gone, expired = {}, {}, {}
for i = #entries - 1, 1, -2 do
  local tag = entries[i]
  if holding[tag] then
    stamped[tag] = true
    if tonumber(entries[i + 1]) <= ceiling then
      expired[#expired + 1] = tag
    end
  else
    gone[#gone + 1] = tag
  end
end
local stamps = {}
for _, tag in ipairs(held) do
  if not stamped[tag] then
    stamps[#stamps + 1] = now
    stamps[#stamps + 1] = tag
  end
end
for i = 1, #stamps, 1000 do
  redis.call('ZADD', KEYS[2], unpack(stamps, i, math.min(i + 999, #stamps)))
end
for i = 1, #gone, 500 do
  redis.call('ZREM', KEYS[2], unpack(gone, i, math.min(i + 499, #gone)))
end
return expired
"""
STAMP_SHA = hashlib.sha1(STAMP.encode()).hexdigest()

#: Takes the pool's stamping turn (the module docstring) for ARGV[1], the sweeper, for ARGV[2]
#: milliseconds, unless another sweeper has it; 1 when the turn is the sweeper's. KEYS: the
#: turn's key. One command (SET's NX with GET, Redis 7): a sweep that is not the pool's turn
#: costs two with the script's own EVALSHA. Flagged allow-oom for STAMP's reason: a SET refused
#: at maxmemory would stop the stamps, and with them the last resort.
TURN = """#!lua flags=allow-oom
local holder = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2], 'GET')
if not holder or holder == ARGV[1] then
  return 1
end
return 0
"""
TURN_SHA = hashlib.sha1(TURN.encode()).hexdigest()


def stamp(client: redis.Redis, sets: Sequence[UnackedSet], visibility_timeout: float
          ) -> list[list[str]]:  # fmt: skip
    """Run ``STAMP`` on each of ``sets``, in one round trip; the expired tags of each."""
    with client.pipeline(transaction=False) as pipe:
        for unacked in sets:
            pipe.evalsha(STAMP_SHA, 2, unacked.hash, unacked.index, str(visibility_timeout))
        replies = pipe.execute(raise_on_error=False)
    expired = []
    for unacked, reply in zip(sets, replies, strict=True):
        if isinstance(reply, NoScriptError):
            # Nothing ran (a new or restarted server, a flushed script cache): with its source,
            # which also caches it for the next sweep.
            reply = client.eval(STAMP, 2, unacked.hash, unacked.index, str(visibility_timeout))
        elif isinstance(reply, Exception):
            raise reply
        expired.append([bytes_to_str(tag) for tag in cast("list[bytes]", reply)])
    return expired


def take_turn(client: redis.Redis, key: str, sweeper: str, milliseconds: int) -> bool:
    """Run ``TURN``: whether ``sweeper`` has the turn of ``key`` (taken now, or already its)."""
    try:
        reply = client.evalsha(TURN_SHA, 1, key, sweeper, str(milliseconds))
    except NoScriptError:
        reply = client.eval(TURN, 1, key, sweeper, str(milliseconds))
    return bool(reply)


def oldest_last(newest_first: Iterable[bytes], held: Iterable[bytes]) -> list[str]:
    """The order to push a set's messages to the head of their queues, so the oldest is taken
    first: the messages without an index entry (no sweep has stamped them yet: the most recent)
    first, then the newest stamp first."""
    indexed = [bytes_to_str(tag) for tag in newest_first]
    known = set(indexed)
    return [tag for tag in map(bytes_to_str, held) if tag not in known] + indexed


class Recovery:
    """The sweeps of one worker (see the module docstring)."""

    def __init__(self, app: Celery, lease: Lease, visibility_timeout: float) -> None:
        self.app = app
        self.keys: WorkerKeys = lease.keys
        self.claim_ms = int(lease.deadlines.timeout * 1000)
        #: How long the pool's stamping turn lasts: less than an interval, so that the worker
        #: that had it finds it free at its next sweep (the module docstring).
        self.turn_ms = int(lease.deadlines.sweep_interval * 900)
        self.turn_key = f"liveness-stamp-turn:{self.keys.pool}"
        self.visibility_timeout = visibility_timeout

    def restore(
        self, channel: Any, unacked: UnackedSet, tags: Sequence[str], *, unless_alive: bool
    ) -> int:
        """Put each message of ``tags`` still in ``unacked`` back at the head of its queue.

        ``unless_alive``: not if the set's owner has a lease (then it keeps the rest). Returns
        how many this call put back; the others were acknowledged, or put back by someone else.
        """
        guard = unacked.lease if unless_alive else None
        watched = [unacked.hash] if guard is None else [unacked.hash, guard]
        restored = 0
        with channel.conn_or_acquire() as client:
            for tag in tags:

                def put_back(pipe: Any, tag: str = tag) -> str:
                    if guard is not None and pipe.exists(guard):
                        return "owner alive"
                    raw = pipe.hget(unacked.hash, tag)
                    pipe.multi()
                    # The stamp goes with the record: taken again into this set, the message
                    # must not look as old as this delivery.
                    pipe.zrem(unacked.index, tag)
                    pipe.hdel(unacked.hash, tag)
                    if raw is None:
                        return "gone"
                    message, exchange, routing_key = loads(bytes_to_str(raw))
                    # kombu decides the list (queue, priority); RPUSH: the consuming end.
                    channel._do_restore_message(message, exchange, routing_key, pipe)
                    return "restored"

                outcome = client.transaction(put_back, *watched, value_from_callable=True)
                if outcome == "owner alive":
                    break  # the owner took a lease again: what is left is its own
                restored += outcome == "restored"
        return restored

    def restore_set(self, channel: Any, unacked: UnackedSet, *, unless_alive: bool) -> int:
        """Put back every message of ``unacked``, the oldest first in line (``oldest_last``)."""
        with channel.conn_or_acquire() as client, client.pipeline() as pipe:  # one snapshot
            newest_first, held = pipe.zrevrange(unacked.index, 0, -1).hkeys(unacked.hash).execute()
        return self.restore(channel, unacked, oldest_last(newest_first, held),
                            unless_alive=unless_alive)  # fmt: skip

    def restore_own(self, channel: Any) -> int:
        """Put back everything in this worker's own set: at a consumer (re)start, all of it is
        what the worker held when it lost its connection or its liveness."""
        restored = self.restore_set(channel, self.keys.unacked, unless_alive=False)
        if restored:
            log.warning(
                "%d message(s) held when the connection or the liveness was lost are back at "
                "the head of their queues", restored,
            )  # fmt: skip
        return restored

    def restore_lost(self, channel: Any, held: Sequence[Any]) -> int:
        """Put back the messages (kombu's, in delivery order) this worker held at a lost
        connection when the broker has lost its data since (``celery_ecs.consumer``): the worker's
        memory is then their only record. Each goes to the head of its queue, the oldest first
        in line, in one transaction; one still in the worker's own set is left to
        ``restore_own`` (the data was not lost after all: the epoch key alone was)."""
        with channel.conn_or_acquire() as client:
            recorded = {bytes_to_str(tag) for tag in client.hkeys(self.keys.unacked.hash)}
            lost = [m for m in held if m.delivery_tag not in recorded]
            with client.pipeline() as pipe:
                for message in reversed(lost):  # RPUSH, newest first: the oldest ends first
                    delivery = message.delivery_info
                    channel._do_restore_message(message._raw, delivery["exchange"],
                                                delivery["routing_key"], pipe)  # fmt: skip
                pipe.execute()
        if lost:
            log.warning(
                "the broker lost its data while this worker was disconnected: the %d "
                "message(s) it held, known only to this worker, are back at the head of "
                "their queues", len(lost),
            )  # fmt: skip
        return len(lost)

    def sweep(self, channel: Any, *, before_consuming: bool = False) -> None:
        """Both passes of the module docstring.

        ``before_consuming``: the consumer's sweep before it takes anything. It must find every
        gone worker's messages back when it returns, so it does not leave a gone worker to a
        sweeper holding the claim (another worker's, or this worker's own sweep thread, which
        starts first): it restores alongside, and the transactions keep that exactly-once."""
        with channel.conn_or_acquire() as client:
            workers = registered_workers(client)
            others = [worker for worker in workers if worker != self.keys]
            with client.pipeline(transaction=False) as pipe:
                for worker in others:
                    pipe.exists(worker.lease)
                alive = pipe.execute()
        for worker, is_alive in zip(others, alive, strict=True):
            if not is_alive:
                self.restore_gone(channel, worker, claim=not before_consuming)
        pool = [worker for worker in workers if worker.pool == self.keys.pool]
        if any(worker != self.keys for worker in pool):
            with channel.conn_or_acquire() as client:
                if not take_turn(client, self.turn_key, self.keys.member, self.turn_ms):
                    return  # another worker of the pool stamps this turn
        self.restore_expired(channel, [*[w.unacked for w in pool], pool_unacked(self.keys.pool)])

    def restore_gone(self, channel: Any, worker: WorkerKeys, *, claim: bool = True) -> int:
        """Put back every message of a worker whose lease expired, then forget the worker.

        ``claim``: skip the worker while another sweeper holds its claim (then that one is on
        it; the claim expires should it die meanwhile)."""
        with channel.conn_or_acquire() as client:
            claim_key = f"liveness-claim:{worker.member}"
            if claim and not client.set(claim_key, self.keys.member, nx=True, px=self.claim_ms):
                return 0
            # Each restore checks the lease again: a worker back meanwhile keeps the rest.
            restored = self.restore_set(channel, worker.unacked, unless_alive=True)
            if restored:
                log.warning(
                    "worker %s is gone (its liveness key expired): %d of its message(s) are "
                    "back at the head of their queues", worker.member, restored,
                )  # fmt: skip
            self.forget(client, worker)
        return restored

    @staticmethod
    def forget(client: redis.Redis, worker: WorkerKeys) -> bool:
        """Remove a worker without lease and without messages from the registry."""
        unacked = worker.unacked

        def remove(pipe: Pipeline) -> bool:
            if pipe.exists(worker.lease) or pipe.hlen(unacked.hash):
                return False
            pipe.multi()
            pipe.srem(REGISTRY_KEY, worker.member)
            pipe.delete(unacked.index)  # stamps of messages acknowledged since the last sweep
            return True

        # redis-py types the function as returning None: value_from_callable returns its value.
        return bool(client.transaction(remove, worker.lease, unacked.hash,  # type: ignore[arg-type]
                                       value_from_callable=True))  # fmt: skip

    def restore_expired(self, channel: Any, sets: list[UnackedSet]) -> int:
        """Stamp this pool's sets and put back their messages held for longer than the
        visibility timeout (see the module docstring)."""
        with channel.conn_or_acquire() as client:
            expired = stamp(client, sets, self.visibility_timeout)
        total = 0
        for unacked, tags in zip(sets, expired, strict=True):
            if tags:
                restored = self.restore(channel, unacked, tags, unless_alive=False)
                if restored:
                    log.warning(
                        "%d message(s) of %s unacknowledged for longer than the visibility "
                        "timeout (%g s) are back at the head of their queues",
                        restored, unacked.hash, self.visibility_timeout,
                    )  # fmt: skip
                total += restored
        return total


class UnackedSweeper:
    """One sweep on a connection of its own (kombu's are not thread-safe), short timeouts."""

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery
        transport = recovery.app.connection_for_read()
        self._broker_errors: tuple[type[BaseException], ...] = (
            *transport.connection_errors,
            *transport.channel_errors,
        )

    def sweep(self) -> None:
        timeouts = {
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            # The lookup of the broker's name too (celery_ecs.transport): a resolver that hangs
            # costs a round, and the next round uses its last answer.
            "resolve_timeout": BROKER_TIMEOUT_SECONDS,
        }
        try:
            # The channel is closed on leaving, which restores nothing: it received no message.
            with (
                self.recovery.app.connection_for_read(transport_options=timeouts) as connection,
                connection.channel() as channel,
            ):
                self.recovery.sweep(channel)
        except self._broker_errors as error:
            # Unreachable, or at maxmemory: a restore refused whole took nothing from its set.
            log.warning("unacked sweep: broker unreachable or refusing writes, retrying next "
                        "round: %r", error)  # fmt: skip


def recovery_for(worker: Any) -> Recovery:
    visibility_timeout = worker.app.conf.broker_transport_options["visibility_timeout"]
    return Recovery(worker.app, worker.liveness, visibility_timeout)


class UnackedSweepStep(bootsteps.StartStopStep):
    """Worker bootstep running ``UnackedSweeper.sweep`` every ``min(5, L/3)`` s on a thread of
    the main process."""

    # Threads start once the pool has forked its children (see ``celery_ecs.periodic``).
    requires = ("celery.worker.components:Pool",)
    label = "Unacked sweep"

    # celery-types has Step.create return None; StartStopStep keeps what it returns as its obj.
    def create(self, worker: Any) -> PeriodicThread:  # type: ignore[override]
        sweeper = UnackedSweeper(recovery_for(worker))
        return PeriodicThread(
            "unacked-sweep", worker.liveness.deadlines.sweep_interval, sweeper.sweep
        )


class RestoreGoneWorkers(bootsteps.StartStopStep):
    """Consumer bootstep: sweeps once before the event loop (always the last step) consumes, so
    a replacement puts a gone worker's messages ahead of newer ones before it takes any."""

    requires = ("celery_ecs.consumer:RestoreLostDeliveries",)
    label = "Restore gone workers"

    def start(self, c: Any) -> None:
        recovery_for(c.controller).sweep(c.connection.default_channel, before_consuming=True)
