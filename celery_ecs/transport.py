"""kombu's Redis transport, with one way to take a message off a queue: a script that records it.

kombu delivers a message in two steps: ``BRPOP`` takes it off its queue, then a ``MULTI``
transaction records it in the consumer's unacknowledged hash and index. A worker that dies
between the two steps, or a connection that drops while ``BRPOP``'s reply is on its way (an
ElastiCache failover), loses the message: it is neither on its queue nor among the
unacknowledged. The same holds for ``basic_get`` (``RPOP``, then the record).

Here every message a consumer acknowledges later leaves its queue inside one Lua script,
``FETCH``, that records it in the same step (kombu's own record in kombu's hash: same key,
the same ``[payload, exchange, routing_key]`` value, so kombu's restores read it unchanged), and
adds the consuming worker to the liveness registry (``celery_ecs.liveness``). Nothing else in
this transport pops a queue list, so there is no window in which a message is off its queue and
unrecorded. Unlike kombu's, neither the take nor the acknowledgement writes kombu's index of
delivery times (``ZADD``, ``ZREM``): the sweep (``celery_ecs.recovery``) stamps what it finds
held, a few commands a sweep instead of two a task. ``FETCH`` is sent through the event loop as
kombu sends ``BRPOP``, with ``EVALSHA``; ``NOSCRIPT`` (a new or restarted server, a flushed
cache, or from Redis 7.4 an ``EVAL``-loaded script evicted) means nothing ran, and the same
``FETCH`` is sent again with ``EVAL``.

Redis has no blocking command that moves from several lists atomically, and a script cannot
block. So an idle consumer never blocks on a queue; it blocks on something it may lose:

- Publishing through this transport pushes the message and a *wake token* onto the queue's wake
  list (``_kombu.wake.<queue>``, capped at ``WAKE_TOKENS_MAX``) in one step (``PUBLISH``).
- When ``FETCH`` finds every queue of the consumer empty, it deletes their wake lists in the
  same script (any token there is stale: the queues are empty), and the consumer blocks with
  ``BRPOP`` on those wake lists, for at most the transport's polling interval (kombu's
  ``brpop_timeout``, 1 s). On a token or on the timeout it sends ``FETCH`` again.

A lost token, or a connection cut while that ``BRPOP`` waits, loses nothing: the message is
still on its queue. Messages that come without a token (restored by a sweep or by kombu,
published by stock kombu) are taken within the polling interval. Because ``FETCH``'s check and
the deletion are one step and a publish's message and token are one step, no wake-up is lost.

``FETCH`` declares itself with a Redis 7 shebang and no ``allow-oom`` flag: at ``maxmemory``
(``noeviction``) Redis refuses the whole script before it runs (redis.io, "Scripting with Lua",
"Script flags"; ``scripts_flags_def`` in Redis's ``src/script.c``; checked on redis-server 7.0.15
by ``tests/test_transport.py``), so no message is taken that cannot be recorded, and no task
starts that could not store its result. (Without a shebang, Redis 7.0 runs the script and lets
its writes after the first pass the limit: ``RPOP`` is not ``denyoom``.) The consumer
then waits as when idle and tries again. Acknowledgements that rode on the refused script are
sent at once with ``ACK``, a script flagged ``allow-oom`` (it only deletes): at ``maxmemory``
Redis rejects every command queued in ``MULTI``, kombu's own acknowledgement included.

Acknowledgements ride on the next ``FETCH``: one sent at once when the event loop's connection
is free for one, or pipelined behind the ``FETCH`` in flight when the consumer has room for a
message from each (``FETCHES_IN_FLIGHT_MAX``), else the one sent once that reply is read (one
``EVALSHA`` fewer than an ``ACK`` of their own). When no ``FETCH`` follows that reply (the queues
are empty, the consumer has no room, the channel closes), they go at once with ``ACK``. One
whose send fails, or whose reply is lost, is sent again with the next ``FETCH`` and, by the
consumer (``celery_ecs.consumer``), after a reconnection.

A slot freed while a ``FETCH`` is in flight is refilled at once by a second ``FETCH`` on the same
connection (Redis answers in order), not once the first reply is read: with one ``FETCH`` at a
time a worker takes at most one message per round trip, and a pool slot whose task is shorter
than a round trip idles (measured: a 2-slot worker held one message at 81 % of its
acknowledgements; issue 18). A ``FETCH`` is only sent while the consumer has room for a message
from every ``FETCH`` in flight, so the worker never holds more than its prefetch count.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from queue import Empty
from time import monotonic
from typing import Any, NamedTuple

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError, OutOfMemoryError
from redis.retry import Retry

from celery_ecs.liveness import BoundedResolver, ResolvedConnection, ResolvedSSLConnection

log = logging.getLogger(__name__)

#: Prefix of a queue's wake list (kombu names its own keys ``_kombu.binding.<exchange>``).
WAKE_PREFIX = "_kombu.wake."
#: Longest a wake list grows while no consumer waits on it (no worker idle, or none at all): a
#: waiting consumer takes a token as it is pushed, so the cap only bounds what piles up; it is
#: larger than any pool's worker count, so a burst can wake every idle worker at once.
WAKE_TOKENS_MAX = 1000

#: Acknowledges the given messages, then takes the first message of the first non-empty queue
#: list and records it in kombu's hash as kombu's QoS does (not in its index: the sweep stamps
#: it); when every list is empty, deletes the wake lists.
#: KEYS: the unacked hash, the worker registry, the queue lists in BRPOP's order (priority
#: steps, then queues), then the wake lists. ARGV: the registry member ('' for none), one
#: character per queue list ('1': record what comes from it, '0': its consumer does not
#: acknowledge), then the delivery tags to acknowledge.
#: Returns {list, message, recorded tag, tags acknowledged but already gone...}; list and
#: message '' when every list is empty, recorded tag '' when the message was not recorded (its
#: consumer does not acknowledge, or it is not kombu's JSON: it fails in Python as after BRPOP).
#: The shebang without flags: Redis refuses the script as a whole at maxmemory.
FETCH = """#!lua
local lists = #ARGV[2]
local gone = {}
for j = 3, #ARGV do
  if redis.call('HDEL', KEYS[1], ARGV[j]) == 0 then
    gone[#gone + 1] = ARGV[j]
  end
end
for i = 1, lists do
  local key = KEYS[2 + i]
  local item = redis.call('RPOP', key)
  if item then
    local recorded = ''
    if string.sub(ARGV[2], i, i) == '1' then
      local ok, message = pcall(cjson.decode, item)
      local properties = ok and type(message) == 'table' and message['properties']
      if type(properties) == 'table' and type(properties['delivery_tag']) == 'string' then
        local info = properties['delivery_info']
        if type(info) ~= 'table' then info = {} end
        recorded = properties['delivery_tag']
        redis.call('HSET', KEYS[1], recorded, '[' .. item .. ',' .. cjson.encode(info['exchange'])
          .. ',' .. cjson.encode(info['routing_key']) .. ']')
        if ARGV[1] ~= '' then
          redis.call('SADD', KEYS[2], ARGV[1])
        end
      end
    end
    return {key, item, recorded, unpack(gone)}
  end
end
for k = 3 + lists, #KEYS do
  redis.call('DEL', KEYS[k])
end
return {'', '', '', unpack(gone)}
"""

#: Acknowledges the given messages (HDEL from kombu's hash; their stamps in its index, if a sweep
#: wrote any, go with the next sweep), allowed at maxmemory (it frees memory). KEYS: the
#: unacked hash. ARGV: the delivery tags. Returns the tags already gone.
ACK = """#!lua flags=allow-oom
local gone = {}
for j = 1, #ARGV do
  if redis.call('HDEL', KEYS[1], ARGV[j]) == 0 then
    gone[#gone + 1] = ARGV[j]
  end
end
return gone
"""

#: Records a message already taken (one FETCH could not record: see ``QoS.append``) in kombu's
#: hash as kombu's QoS does, allowed at maxmemory: refusing the record of a message off its
#: queue would lose it. KEYS: the unacked hash, the worker registry. ARGV: the delivery tag, the
#: record's value, the registry member ('' for none).
RECORD = """#!lua flags=allow-oom
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[3])
end
"""

#: Publishes a message and a wake token in one step (one command: cheaper for the client than
#: a MULTI of three), capping the wake list. KEYS: the queue's list, its wake list. ARGV: the
#: message, the cap. The shebang without flags: refused as a whole at maxmemory, as LPUSH is.
PUBLISH = """#!lua
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], 0, ARGV[2] - 1)
"""

#: What the polling connection waits on: a FETCH reply, or a wake list's BRPOP reply.
_FETCHING, _WAKING = "EVALSHA", "BRPOP"
#: FETCHes on the polling connection at once: a second refills a slot freed while the first is
#: on its way (see the module docstring); more would only matter for tasks shorter than half a
#: round trip, and each is one more reply to read in one event.
FETCHES_IN_FLIGHT_MAX = 2


class _Sent(NamedTuple):
    """A command on the polling connection whose reply is not read yet."""

    #: ``_FETCHING`` or ``_WAKING``.
    command: str
    #: What was sent after the command's name (a FETCH is sent again with them after NOSCRIPT).
    arguments: Sequence[Any]
    #: The acknowledgements it carries: whether they reached Redis is known with its reply.
    acks: list[str]


def log_taken_back(tags: Sequence[str]) -> None:
    for tag in tags:
        log.warning(
            "message %s was acknowledged after another worker had taken it back (this worker "
            "lost its liveness, or the visibility timeout passed): its task ran here and runs, "
            "or ran, there too",
            tag,
        )


def wake_key(queue: str) -> str:
    return f"{WAKE_PREFIX}{queue}"


class QoS(kombu_redis.QoS):
    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        channel = self.channel
        if delivery_tag == channel.recorded_tag:
            channel.recorded_tag = ""  # FETCH wrote the record with the take
        else:
            # Only a message FETCH left unrecorded gets here: its delivery tag is not a string
            # (no kombu producer writes that), or it was taken for a consumer without
            # acknowledgements and kombu hands it to one with. Recorded as kombu does, by a
            # script Redis runs even at maxmemory (kombu's MULTI would be refused: lost).
            delivery = message.delivery_info
            record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            *_, record_script = channel.scripts()
            with channel.conn_or_acquire() as client:
                record_script(
                    [self.unacked_key, channel.worker_registry_key or "-"],
                    [delivery_tag, record, channel.worker_member], client=client,
                )  # fmt: skip
        VirtualQoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        VirtualQoS.ack(self, delivery_tag)
        if self.channel.connection is None:  # closed (kombu's close_channel unsets it)
            self._after_close("acknowledged", delivery_tag)
            return
        self.channel.acknowledge(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.channel.connection is None:
            VirtualQoS.ack(self, delivery_tag)  # forgotten here, as kombu's reject ends
            self._after_close("rejected", delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)

    @staticmethod
    def _after_close(outcome: str, delivery_tag: str) -> None:
        """A task of a channel closed since (its connection was lost) ended after the consumer
        moved on: nothing is written through a channel without a connection (kombu would build a
        client from it and fail, ending the worker). The message is still in this worker's own
        set, which the consumer put back on its queue when it reconnected, or a sweep will:
        it runs again (at least once)."""
        log.warning(
            "message %s %s after its connection was lost: it is back on its queue from this "
            "worker's set and runs again", delivery_tag, outcome,
        )  # fmt: skip

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """Nothing: the sweep (``celery_ecs.recovery``) puts back what outlived the visibility
        timeout, from every set of the pool, this channel's included, in transactions that take
        no lock.

        kombu's, called when the event loop starts (``on_poll_init``) and every 10 s, takes a
        lock with ``SET NX``, which Redis refuses at maxmemory (``noeviction``): from the timer
        kombu's hub logged the error and went on; at the loop's start it ended the worker
        (a channel error, which Celery does not retry)."""


#: One resolver per lookup bound, shared by every channel of the process: a lookup that hangs
#: is joined by the next channel's, not repeated on a new thread, and its last answer kept.
_RESOLVERS: dict[float, BoundedResolver] = {}
_RESOLVERS_LOCK = threading.Lock()


def bounded_resolver(timeout: float) -> BoundedResolver:
    with _RESOLVERS_LOCK:
        resolver = _RESOLVERS.get(timeout)
        if resolver is None:
            resolver = _RESOLVERS[timeout] = BoundedResolver(timeout)
        return resolver


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "worker_registry_key",
        "worker_member",
        "resolve_timeout",
    )
    #: Seconds a lookup of the broker's name may take (``celery_ecs.liveness.BoundedResolver``) on
    #: the channel's connections, which then make one attempt per command (no redis-py
    #: retries: each would wait the bounds again); 0: unbounded lookups and redis-py's retries.
    #: ``socket_connect_timeout`` does not cover the lookup. Set by the connections of the
    #: worker threads' rounds (the sweep, the metrics): the next round is their retry.
    resolve_timeout = 0.0
    #: The set a consuming worker is added to with every message it records (celery_ecs.liveness).
    worker_registry_key = ""
    #: This consumer's member of that set; empty in processes that only publish.
    worker_member = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("celery_ecs.transport: global_keyprefix is not supported")
        #: The commands awaiting their replies on the polling connection, oldest first: one
        #: BRPOP on the wake lists, or up to FETCHES_IN_FLIGHT_MAX FETCHes.
        self._sent: deque[_Sent] = deque()
        #: The last FETCH found every queue empty (or was refused at maxmemory): wait on the
        #: wake lists before the next one.
        self._idle = False
        #: The last FETCH was refused at maxmemory (logged once per spell).
        self._out_of_memory = False
        #: The tag of the message being delivered when FETCH recorded it (read by ``QoS.append``).
        self.recorded_tag = ""
        #: Acknowledgements not known to have reached Redis (a send failed, a reply was lost):
        #: sent again with the next FETCH, or by the consumer after a reconnection.
        self.acks_pending: list[str] = []
        #: Tags acknowledged at least once already: found gone when sent again, they are not
        #: reported as taken back (the first send may have removed them).
        self._acks_resent: set[str] = set()
        #: Queues consumed without acknowledgements (control replies): FETCH does not record.
        self._no_ack_queues: set[str] = set()
        self._sync_client: redis.Redis | None = None
        self._scripts: tuple[Script, Script, Script, Script] | None = None

    # --- clients and scripts --------------------------------------------------------------------

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        # kombu builds a new client object around the same pool for every call: keep one.
        if client is None:
            if self._sync_client is None:
                self._sync_client = self._create_client()
            client = self._sync_client
        yield client

    # kombu builds its pools' connections from these two (its polling connection subclasses
    # the first): with resolve_timeout, ones that look the name up with a BoundedResolver.
    # Settable, as kombu's class attributes are (kombu's own tests set them): what is set wins.
    _connection_classes: dict[str, type[redis.Connection]] | None = None

    @property
    def connection_class(self) -> type[redis.Connection]:
        chosen = (self._connection_classes or {}).get("plain")
        return chosen or (ResolvedConnection if self.resolve_timeout else redis.Connection)

    @connection_class.setter
    def connection_class(self, value: type[redis.Connection]) -> None:
        self._connection_classes = {**(self._connection_classes or {}), "plain": value}

    @property
    def connection_class_ssl(self) -> type[redis.Connection]:
        chosen = (self._connection_classes or {}).get("ssl")
        return chosen or (ResolvedSSLConnection if self.resolve_timeout else redis.SSLConnection)

    @connection_class_ssl.setter
    def connection_class_ssl(self, value: type[redis.Connection]) -> None:
        self._connection_classes = {**(self._connection_classes or {}), "ssl": value}

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = super()._connparams(asynchronous)
        # A Unix socket has no name to look up: kept as it is.
        if self.resolve_timeout and issubclass(params["connection_class"], ResolvedConnection):
            params["resolver"] = bounded_resolver(float(self.resolve_timeout))
            params["retry"] = Retry(NoBackoff(), 0)
        return params

    def _disconnect_pools(self) -> None:
        self._sync_client = None
        super()._disconnect_pools()

    def scripts(self) -> tuple[Script, Script, Script, Script]:
        """FETCH, ACK, PUBLISH and RECORD as redis-py scripts (EVALSHA, loading on NOSCRIPT)."""
        if self._scripts is None:
            with self.conn_or_acquire() as client:
                self._scripts = (client.register_script(FETCH), client.register_script(ACK),
                                 client.register_script(PUBLISH),
                                 client.register_script(RECORD))  # fmt: skip
        return self._scripts

    @property
    def acks_in_flight(self) -> list[str]:
        """Acknowledgements sent with the FETCHes in flight (known to have reached Redis only
        with their replies)."""
        return [tag for sent in self._sent for tag in sent.acks]

    def unconfirmed_acks(self) -> list[str]:
        """Acknowledgements that may not have reached Redis (read by ``celery_ecs.consumer``)."""
        return [*self.acks_in_flight, *self.acks_pending]

    # --- publishing -----------------------------------------------------------------------------

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's LPUSH, and a wake token for a consumer waiting on the queue, atomically."""
        priority = self._get_message_priority(message, reverse=False)
        _, _, publish, _ = self.scripts()
        with self.conn_or_acquire() as client:
            publish([self._q_for_pri(queue, priority), wake_key(queue)],
                    [dumps(message), WAKE_TOKENS_MAX], client=client)  # fmt: skip

    # --- consuming ------------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        # kombu keeps ``no_ack`` in a closure; FETCH needs it per queue (last consumer wins,
        # as kombu's one callback per queue does).
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        cancelled = super()._basic_cancel(consumer_tag)
        if queue is not None and queue not in self._tag_to_queue.values():
            self._no_ack_queues.discard(queue)
        return cancelled

    def _fetch_arguments(self, queues: Sequence[str], acks: Sequence[str]) -> list[Any]:
        lists = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps
                 for queue in queues]  # fmt: skip
        record = "".join("0" if queue in self._no_ack_queues else "1" for _, queue in lists)
        qos = self.qos
        keys = [qos.unacked_key, self.worker_registry_key or "-",
                *(key for key, _ in lists), *map(wake_key, queues)]  # fmt: skip
        return [len(keys), *keys, self.worker_member, record, *acks]

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """kombu's synchronous get; a message to acknowledge is taken and recorded by FETCH."""
        if no_ack:
            return super().basic_get(queue, no_ack=True, **kwargs)
        fetch, *_ = self.scripts()
        numkeys, *arguments = self._fetch_arguments([queue], [])
        with self.conn_or_acquire() as client:
            reply = fetch(arguments[:numkeys], arguments[numkeys:], client=client)
        _, item, recorded, *_ = (bytes_to_str(part) for part in reply)
        if not item:
            return None
        message = self.Message(loads(item), channel=self)
        self.recorded_tag = recorded
        self.qos.append(message, message.delivery_tag)
        return message

    # --- the polling connection: FETCH, or BRPOP on the wake lists -----------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._idle:
            self._wait_for_wake(timeout)
        else:
            self._fetch([])

    def fetch_now(self, acks: list[str]) -> bool:
        """Send FETCH, carrying ``acks``, if the event loop is polling this channel and its
        connection is free, or pipelined behind the FETCH in flight if the consumer has room
        for a message from each; False if not (nothing sent)."""
        polling = (self, self.client, "BRPOP") in self.connection.cycle._chan_to_sock
        if not polling or self._idle or self.closed or not self.active_queues:
            return False
        if not self._sent:
            if self._in_poll or not self.qos.can_consume():
                return False
            return self._fetch(acks)
        if (self._in_poll is not self.client.connection or len(self._sent) >= FETCHES_IN_FLIGHT_MAX
                or any(sent.command != _FETCHING for sent in self._sent)
                or not self._has_room_for(len(self._sent) + 1)):  # fmt: skip
            return False
        return self._fetch(acks, pipelined=True)

    def _has_room_for(self, messages: int) -> bool:
        """Whether the consumer may take ``messages`` more (kombu's count of what it holds
        against the prefetch count; None: no prefetch limit)."""
        room = self.qos.can_consume_max_estimate()
        return room is None or room >= messages

    def _fetching(self) -> bool:
        return bool(self._sent) and self._sent[-1].command == _FETCHING

    def acknowledge(self, delivery_tag: str) -> None:
        """Remove a message from the unacknowledged set: with the next FETCH if the polling
        connection is free for one now, else at once on the synchronous connection."""
        if self.fetch_now([delivery_tag]):
            return
        if self._fetching() and not self.closed and self.qos.can_consume():
            # FETCHes are in flight (as many as there is room for) and their replies will be
            # read (the consumer has room): this rides on the next one, sent once a reply is
            # read (or goes with ACK then, if none follows: ``_on_fetched``,
            # ``_wait_for_wake``, ``close``). One EVALSHA less than an ACK of its own.
            self.acks_pending.append(delivery_tag)
            return
        try:
            self.acknowledge_now([delivery_tag])
        except self.connection_errors as error:
            self.acks_pending.append(delivery_tag)
            self._acks_resent.add(delivery_tag)
            log.warning("acknowledgement of %s not sent (%r): it is sent again with the next "
                        "fetch, or after reconnecting", delivery_tag, error)  # fmt: skip

    def acknowledge_now(self, tags: Sequence[str], *, report_gone: bool = True) -> None:
        """Run ACK on the synchronous connection (allowed at maxmemory)."""
        if not tags:
            return
        _, ack, *_ = self.scripts()
        qos = self.qos
        with self.conn_or_acquire() as client:
            gone = ack([qos.unacked_key], list(tags), client=client)
        if report_gone:
            log_taken_back([tag for tag in map(bytes_to_str, gone)
                            if tag not in self._acks_resent])  # fmt: skip
        self._acks_resent.difference_update(tags)

    def _fetch(self, acks: list[str], *, pipelined: bool = False) -> bool:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return False
        if not pipelined:
            self._reclaim_unread()
        carried = [*self.acks_pending, *acks]
        self.acks_pending = []
        self._send(_FETCHING, self._fetch_arguments(queues, carried), carried)
        return True

    def _wait_for_wake(self, timeout: float | None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._reclaim_unread()
        self._send_pending_acks()  # no FETCH carries them before the wait ends
        wait = self.brpop_timeout if timeout is None else timeout
        self._send(_WAKING, [*map(wake_key, queues), wait or 0], [])

    def _send(self, command: str, arguments: Sequence[Any], acks: list[str],
              script: str = "") -> None:  # fmt: skip
        connection = self.client.connection
        if command == _WAKING:
            argv: list[Any] = ["BRPOP", *arguments]
        elif script:
            argv = ["EVAL", script, *arguments]
        else:
            argv = ["EVALSHA", self.scripts()[0].sha, *arguments]
        try:
            connection.send_command(*argv)
        except self.connection_errors:
            self._set_aside(acks)
            raise
        self._in_poll = connection
        # kombu 5.7's health check of the polling connection (celery_ecs.upstream): a reply overdue
        # by brpop_timeout + health_check_interval drops the connection. Unread by kombu 5.6.
        self._brpop_sent_at = monotonic()
        self._sent.append(_Sent(command, arguments, acks))

    def _reclaim_unread(self) -> None:
        """A new command goes out while earlier ones' replies were never read (their connection
        was dropped under them, by kombu 5.7's health check, a reconnection, or ``_brpop_read``
        after a failure with replies still to come, and ``_in_poll`` was reset): their
        acknowledgements go again. An unread FETCH may have taken and recorded a message that
        never reached the consumer: that is a lost connection, so that the consumer puts its
        own set back (``celery_ecs.consumer``) before it takes more."""
        unread = list(self._sent)
        self._sent.clear()
        acks = [tag for sent in unread for tag in sent.acks]
        if acks:
            self._set_aside(acks)
        if any(sent.command == _FETCHING for sent in unread):
            raise redis.ConnectionError("the polling connection was dropped with a FETCH in "
                                        "flight: its reply, maybe a message, is lost")  # fmt: skip

    def _poll_error(self, type: str, **options: Any) -> Any:
        # kombu reads (and drops) the reply on a socket error event: a FETCH reply carries a
        # recorded message and the fate of acknowledgements, so it goes to its reader.
        if type == "BRPOP" and self._sent:
            return self._brpop_read(**options)
        return super()._poll_error(type, **options)

    def _send_pending_acks(self) -> None:
        """Send the acknowledgements waiting for a FETCH at once, with ACK (when none is
        about to be sent)."""
        acks, self.acks_pending = self.acks_pending, []
        try:
            self.acknowledge_now(acks)
        except self.connection_errors:
            self._set_aside(acks)
            raise

    def close(self) -> None:
        # As kombu's close: the replies of the FETCHes in flight are read first (they may carry
        # acknowledgements and recorded messages); then the acknowledgements no FETCH will
        # carry are sent, before the connections close.
        while self._in_poll and self._sent and not self.closed:
            with suppress(Empty):  # replies read: no message, or messages delivered
                self._brpop_read(wait=True)
        if self.acks_pending and not self.closed:
            try:
                self._send_pending_acks()
            except self.connection_errors as error:
                log.warning("%d acknowledgement(s) not sent at close (%r): their messages "
                            "stay in this worker's set, put back by a sweep",
                            len(self.acks_pending), error)  # fmt: skip
        super().close()

    def _set_aside(self, acks: list[str]) -> None:
        """Acknowledgements whose fate is unknown: sent again with the next FETCH."""
        self.acks_pending = [*acks, *self.acks_pending]
        self._acks_resent.update(acks)

    def _brpop_read(self, *, wait: bool = False, **options: Any) -> bool:
        """Read the oldest reply on the polling connection (the event loop saw it readable),
        then the next ones already there; ``wait``: the oldest at least, even if it has not
        come yet (at close). Raises Empty when none delivered a message."""
        connection = self.client.connection
        delivered = False
        try:
            while True:
                delivered |= self._read_one(connection, **options)
                if not self._sent or self._in_poll is not connection:
                    break
                # A reply already buffered by the last read makes its socket no more readable:
                # read it now, or the event loop would never call again for it.
                if not wait and not (connection._sock and connection.can_read(timeout=0)):
                    break
                wait = False
        except Exception:
            if self._sent and self._in_poll is connection:
                # Replies still to come, maybe already buffered where the event loop cannot see
                # them: read by nobody, they are a lost connection (``_reclaim_unread``).
                self._in_poll = None
                connection.disconnect()
            raise
        finally:
            if not self._sent:
                # Nothing in flight (NOSCRIPT's EVAL would be): the connection is idle, whatever
                # the last reply was, and a rotated credential goes now, as in the finally of
                # kombu 5.7's own _brpop_read.
                self._in_poll = None
                self._flush_reauth()
        if not delivered:
            raise Empty()
        return True

    def _read_one(self, connection: Any, **options: Any) -> bool:
        """Read the oldest reply; whether it delivered a message. A read with nothing recorded
        as sent (kombu's own ``_brpop_read`` callers: its ``close`` while ``_in_poll`` is set)
        reads a ``BRPOP``'s reply, as kombu's would."""
        sent = self._sent.popleft() if self._sent else _Sent(_WAKING, (), [])
        try:
            reply = self.client.parse_response(connection, sent.command, **options)
        except NoScriptError:
            # Nothing ran (a new or restarted server): the same FETCH with its source.
            self._send(_FETCHING, sent.arguments, sent.acks, script=FETCH)
            return False
        except OutOfMemoryError:
            # Refused as a whole (the shebang): nothing taken, no acknowledgement applied.
            self._on_out_of_memory(sent.acks)
            return False
        except self.connection_errors:
            # As kombu after a failed BRPOP: the next poll reconnects, and FETCHes first (a
            # wake token may have been lost with the connection). FETCHes still in flight are
            # unread: the next poll's ``_reclaim_unread`` makes that a lost connection.
            self._in_poll = None
            self._idle = False
            self._set_aside(sent.acks)
            connection.disconnect()
            raise
        except Exception:
            self._set_aside(sent.acks)
            raise
        if sent.command != _FETCHING:
            # A wake token, or the polling interval passed: FETCH next (the next poll).
            self._idle = False
            return False
        return self._on_fetched(reply, sent.acks)

    def _flush_reauth(self) -> None:
        """kombu 5.7 sends a pending streaming re-authentication (a rotated IAM token) on the
        polling connection once a reply is read, the only moment it is idle: its
        ``_brpop_read`` does, which this one replaces (celery_ecs.upstream). kombu's does nothing
        while ``_in_poll`` is set (a command in flight) or the socket is down. kombu 5.6 has none.
        Looked up on the channel, as kombu's own does: a subclass's or an instance's counts."""
        flush = getattr(self, "_flush_brpop_reauth", None)
        if flush is not None:
            flush()

    def _on_out_of_memory(self, acks: list[str]) -> None:
        if not self._out_of_memory:
            log.warning("the broker is at maxmemory: no message is taken until memory frees "
                        "(trying again every %s s)", self.brpop_timeout)  # fmt: skip
        self._out_of_memory = True
        self._idle = True
        try:
            self.acknowledge_now(acks)
        except self.connection_errors:
            self._set_aside(acks)
            raise

    def _on_fetched(self, reply: list[bytes], acks: list[str]) -> bool:
        queue_key, item, recorded, *gone = (bytes_to_str(part) for part in reply)
        log_taken_back([tag for tag in gone if tag not in self._acks_resent])
        self._acks_resent.difference_update(acks)
        self._out_of_memory = False
        # The last reply read decides: a FETCH that found the queues empty deleted their wake
        # lists in the same step, so a message published since comes with a token.
        self._idle = not item
        if not item:
            return False
        queue = queue_key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        self.recorded_tag = recorded
        try:
            self.connection._deliver(loads(item), queue)
        finally:
            self.recorded_tag = ""
        if self.acks_pending and not self.qos.can_consume():
            self._send_pending_acks()  # no FETCH follows until the consumer has room
        return True


class Transport(kombu_redis.Transport):
    Channel = Channel
