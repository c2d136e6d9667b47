"""kombu's Redis transport, taking a message off a non-empty queue in one round trip.

kombu delivers a message in two steps: ``BRPOP`` takes it off its queue, then a ``MULTI``
transaction records it in the consumer's unacknowledged hash and index. That second step blocks
the worker's event loop for a round trip per message, and a worker killed between the two
steps loses the message: it is neither on its queue nor among the unacknowledged.

Here one Lua script (``FETCH``) takes the message and records it, sent through the event loop as
``BRPOP`` is. Only when the script finds every queue empty does the channel block on ``BRPOP``
(kombu's code) and then record the message in a transaction, as kombu does. The record is
kombu's own (same keys, the same ``[payload, exchange, routing_key]`` value, the delivery time as
the index score), so kombu's restores (``restore_by_tag``, ``restore_visible``, the restore at
shutdown) read it unchanged.

For ``app.liveness``, every record also adds the consuming worker to the registry of workers in
the same transaction, so no worker's unacknowledged set is ever unknown to the sweepers; and an
acknowledgement that finds its message already gone (another worker took it back) is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

#: Acknowledges the given messages, then takes the first message of the first non-empty list
#: and records it as kombu's QoS does. KEYS: the unacked hash, the unacked index, the worker
#: registry, then the queue lists in BRPOP's order (priority steps, then queues). ARGV: the
#: delivery time, the registry member ('' for none), then the delivery tags to acknowledge.
#: Returns {list, message, tags acknowledged but already gone...}, list and message '' when
#: every list is empty. A message that is not kombu's JSON is returned unrecorded, to fail in
#: Python as it does after BRPOP.
FETCH = """
local gone = {}
for j = 3, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[j])
  if redis.call('HDEL', KEYS[1], ARGV[j]) == 0 then
    gone[#gone + 1] = ARGV[j]
  end
end
for i = 4, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, message = pcall(cjson.decode, item)
    local properties = ok and type(message) == 'table' and message['properties']
    if type(properties) == 'table' and type(properties['delivery_tag']) == 'string' then
      local info = properties['delivery_info'] or {}
      local tag = properties['delivery_tag']
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'])
        .. ',' .. cjson.encode(info['routing_key']) .. ']')
      if ARGV[2] ~= '' then
        redis.call('SADD', KEYS[3], ARGV[2])
      end
    end
    return {KEYS[i], item, unpack(gone)}
  end
end
return {'', '', unpack(gone)}
"""


def log_taken_back(tags: list[str]) -> None:
    for tag in tags:
        log.warning(
            "message %s was acknowledged after another worker had taken it back (this worker "
            "lost its liveness, or the visibility timeout passed): its task ran here and runs, "
            "or ran, there too",
            tag,
        )


class QoS(kombu_redis.QoS):
    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        channel = self.channel
        if channel.delivering_recorded:
            channel.delivering_recorded = False  # FETCH wrote the record
        else:
            delivery = message.delivery_info
            with self.pipe_or_acquire() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
                pipe.hset(
                    self.unacked_key,
                    delivery_tag,
                    dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
                )
                if channel.worker_member:
                    pipe.sadd(channel.worker_registry_key, channel.worker_member)
                pipe.execute()
        VirtualQoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        # The freed prefetch slot is known at once; the acknowledgement rides on the FETCH
        # that refills it, when the event loop's connection is free for one.
        VirtualQoS.ack(self, delivery_tag)
        if self.channel.fetch_now(acks=[delivery_tag]):
            return
        _, removed = self._remove_from_indices(delivery_tag).execute()
        if not removed:
            log_taken_back([delivery_tag])


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "worker_registry_key",
        "worker_member",
    )
    #: The set a consuming worker is added to with every message it records (app.liveness).
    worker_registry_key = ""
    #: This consumer's member of that set; empty in processes that only publish.
    worker_member = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("app.transport: global_keyprefix is not supported")
        #: The command awaiting its reply on the polling connection is FETCH, not BRPOP.
        self._fetch_in_flight = False
        #: The last FETCH found every queue empty: block on BRPOP until a message comes.
        self._queues_were_empty = False
        #: The message being delivered is already recorded (read by ``QoS.append``).
        self.delivering_recorded = False
        #: Acknowledgements sent with the FETCH in flight; whether they reached Redis is only
        #: known with its reply (the consumer sends them again after a lost connection).
        self.acks_in_flight: list[str] = []
        self._sync_client: redis.Redis | None = None

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        # kombu builds a new client object around the same pool for every call, twice per
        # message (record, ack): keep one.
        if client is None:
            if self._sync_client is None:
                self._sync_client = self._create_client()
            client = self._sync_client
        yield client

    def _disconnect_pools(self) -> None:
        self._sync_client = None
        super()._disconnect_pools()

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._queues_were_empty:
            super()._brpop_start(timeout)
        else:
            self._fetch([])

    def fetch_now(self, acks: list[str]) -> bool:
        """Send FETCH, carrying ``acks``, if the event loop is polling this channel and its
        connection is free; False if not (nothing sent)."""
        polling = (self, self.client, "BRPOP") in self.connection.cycle._chan_to_sock
        if not polling or self._in_poll or self._queues_were_empty or self.closed:
            return False
        if not self.active_queues or not self.qos.can_consume():
            return False
        return self._fetch(acks)

    def _fetch(self, acks: list[str]) -> bool:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return False
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        qos = self.qos
        self._in_poll = self.client.connection
        self._fetch_in_flight = True
        self.acks_in_flight = acks
        self.client.connection.send_command(
            "EVAL", FETCH, 3 + len(keys),
            qos.unacked_key, qos.unacked_index_key, self.worker_registry_key or "-", *keys,
            time(), self.worker_member, *acks,
        )  # fmt: skip
        return True

    def _brpop_read(self, **options: Any) -> bool:
        if not self._fetch_in_flight:
            delivered: bool = super()._brpop_read(**options)  # raises Empty on BRPOP's timeout
            self._queues_were_empty = False
            return delivered
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVAL", **options)
            except self.connection_errors:
                # As kombu after a failed BRPOP: the next poll reconnects.
                self.client.connection.disconnect()
                raise
            self.acks_in_flight = []
            queue_key, item, *gone = (bytes_to_str(part) for part in reply)
            log_taken_back(gone)
            if not item:
                self._queues_were_empty = True
                raise Empty()
            queue = queue_key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self.delivering_recorded = True
            try:
                self.connection._deliver(loads(item), queue)
            finally:
                self.delivering_recorded = False
            return True
        finally:
            self._in_poll = None
            self._fetch_in_flight = False


class Transport(kombu_redis.Transport):
    Channel = Channel
