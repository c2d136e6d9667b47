"""The transport's guarantees against a real redis-server, each window with a fault in it.

``celery_ecs.transport``: only the FETCH script takes a message off a queue, and it records the
message in the same step; an idle consumer blocks on wake lists, never on a queue. Each test injects
one fault (a process killed between take and record, a reply lost on a cut connection, a server
at maxmemory, a send that fails, a flushed script cache) and looks at Redis for the message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Queue
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads
from redis.auth.token import SimpleToken

from app.celery_app import app
from celery_ecs.liveness import REGISTRY_KEY, WorkerKeys, unacked_count
from celery_ecs.transport import (
    FETCH,
    WAKE_TOKENS_MAX,
    QoS,
    wake_key,
)
from testkit.redis_server import RedisServer, start_redis
from tests.support import AppProcess, app_environment, send_task, start_worker, wait_for

QUEUE = "default"
FETCH_SHA = hashlib.sha1(FETCH.encode()).hexdigest()
WORKER = WorkerKeys("default", "w/1")
#: Every command that removes an element from a list.
POPS = {"RPOP", "LPOP", "BRPOP", "BLPOP", "RPOPLPUSH", "BRPOPLPUSH", "LMOVE", "BLMOVE", "LMPOP",
        "BLMPOP", "LREM", "LTRIM"}  # fmt: skip


# --- helpers ------------------------------------------------------------------------------------


def publish(url: str, transport: str | None = None) -> str:
    """A task message for QUEUE, through the app's transport unless told otherwise."""
    if transport is None:
        return send_task(url, "app.tasks.noop", queue=QUEUE)
    with Connection(url, transport=transport) as connection:
        return app.send_task("app.tasks.noop", queue=QUEUE, connection=connection,
                             ignore_result=True).id  # fmt: skip


def task_id(raw: str | bytes) -> str:
    return str(loads(raw)["headers"]["id"])


@contextmanager
def consumer(url: str, keys: WorkerKeys = WORKER, *, no_ack: bool = False,
             received: list[Any] | None = None,
             options: dict[str, Any] | None = None) -> Iterator[Connection]:  # fmt: skip
    """A connection of the app's transport (with the app's transport options, then
    ``options``) consuming QUEUE into ``received``. At the end nothing is restored (the tests
    look at Redis) and a FETCH in flight is read."""
    options = {**app.conf.broker_transport_options, **keys.transport_options(), **(options or {})}
    sink = received if received is not None else []
    connection = Connection(url, transport=app.conf.broker_transport, transport_options=options)
    with connection, Consumer(connection, [Queue(QUEUE)], accept=["json"], no_ack=no_ack,
                              callbacks=[lambda _, message: sink.append(message)]):
        yield connection
        channel = connection.default_channel
        channel.qos._delivered.clear()
        channel.close()


def drain_until(connection: Connection, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing delivered within {timeout} s")
        try:
            connection.drain_events(timeout=0.2)
        except TimeoutError:
            continue


def drain_for(connection: Connection, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=0.2)
        except TimeoutError:
            continue


def waiting_on_wake_list(client: redis.Redis) -> bool:
    """Some client is blocked in BRPOP (an idle consumer)."""
    return any(entry.get("cmd") == "brpop" for entry in client.client_list())


def held(client: redis.Redis, keys: WorkerKeys = WORKER) -> list[str]:
    """Task ids in the worker's unacknowledged hash (kombu's [payload, exchange, key])."""
    return [str(loads(raw)[0]["headers"]["id"]) for raw in client.hvals(keys.unacked.hash)]


def queued(client: redis.Redis) -> list[str]:
    return [task_id(raw) for raw in client.lrange(QUEUE, 0, -1)]


# --- no window between take and record ----------------------------------------------------------


def _die_where_kombu_records(url: str, path: str) -> None:
    """In a child: consume one message, and die at the first line of ``QoS.append``, where
    kombu (and this transport's BRPOP path before) records a message it took."""

    def die(*args: Any) -> None:
        os._exit(17)

    QoS.append = die  # type: ignore[method-assign]
    with consumer(url) as connection:
        if path == "get":
            connection.default_channel.basic_get(QUEUE)
        else:
            drain_until(connection, lambda: False, 60)


@pytest.mark.parametrize("path", ["busy", "idle", "get"])
def test_a_consumer_killed_between_take_and_record_loses_nothing(
    path: str, redis_url: str, redis_client: redis.Redis
) -> None:
    if path != "idle":
        sent = publish(redis_url)
    child = multiprocessing.get_context("fork").Process(
        target=_die_where_kombu_records, args=(redis_url, path)
    )
    child.start()
    try:
        if path == "idle":  # the queue empty, the consumer waits, the message comes
            wait_for(lambda: waiting_on_wake_list(redis_client), 30, what="the consumer idle")
            sent = publish(redis_url)
        child.join(60)
        assert child.exitcode == 17  # it died at the point kombu records
    finally:
        if child.is_alive():
            child.kill()
    # Off the queue, and recorded: the sweeps put it back (celery_ecs.recovery).
    assert queued(redis_client) == []
    assert held(redis_client) == [sent]
    assert redis_client.smembers(REGISTRY_KEY) == {WORKER.member}


class Monitor:
    """Every command Redis executes, from MONITOR, until ``stop``."""

    def __init__(self, port: int) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port))
        self._socket.sendall(b"MONITOR\r\n")
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._socket.recv(65536):
            self._data += chunk

    def stop(self) -> list[str]:
        time.sleep(0.2)  # the last commands' lines
        self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._socket.close()
        return self._data.decode(errors="replace").splitlines()


def test_no_command_but_fetch_takes_a_message_off_a_queue(
    redis_server: RedisServer, redis_url: str, redis_client: redis.Redis
) -> None:
    monitor = Monitor(redis_server.port)
    received: list[Any] = []
    publish(redis_url)
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)  # busy path
        received[0].ack()
        publisher = threading.Timer(2, publish, args=(redis_url,))
        publisher.start()  # idle path: FETCH found nothing, the consumer waits
        drain_until(connection, lambda: len(received) == 2, 30)
        publisher.join()
        publish(redis_url)
        assert connection.default_channel.basic_get(QUEUE) is not None  # synchronous path
    lines = monitor.stop()

    queue_pops = [line for line in lines
                  if (m := re.search(r'\] "(\w+)" "([^"]*)"', line))
                  and m.group(1).upper() in POPS and m.group(2).startswith(QUEUE)]  # fmt: skip
    assert queue_pops, "MONITOR saw no pop at all"
    assert all("[0 lua]" in line for line in queue_pops), queue_pops
    assert any('"EVALSHA"' in line for line in lines)


# --- connections cut while a reply is on its way -----------------------------------------------


class CuttingProxy:
    """A TCP proxy to Redis that, once armed, drops the next reply to a command and cuts
    that connection: a connection lost while the reply is in flight."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._armed: bytes | None = None
        self._lock = threading.Lock()
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, command: bytes) -> None:
        with self._lock:
            self._armed = command

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            last = [b""]
            threading.Thread(target=self._requests, args=(client, upstream, last),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._replies, args=(upstream, client, last),
                             daemon=True).start()  # fmt: skip

    @staticmethod
    def _requests(client: socket.socket, upstream: socket.socket, last: list[bytes]) -> None:
        try:
            while chunk := client.recv(65536):
                last[0] = chunk
                upstream.sendall(chunk)
        except OSError:
            pass
        cut(client, upstream)  # one end closed: so is the other, as for a real peer

    def _replies(self, upstream: socket.socket, client: socket.socket, last: list[bytes]) -> None:
        try:
            while chunk := upstream.recv(65536):
                with self._lock:
                    drop = self._armed is not None and self._armed in last[0]
                    if drop:
                        self._armed = None
                if drop:
                    self.dropped.set()
                    break
                client.sendall(chunk)
        except OSError:
            pass
        cut(upstream, client)


def cut(*ends: socket.socket) -> None:
    for end in ends:
        with contextlib.suppress(OSError):  # already shut down by the other direction
            end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(redis_server.port)
    yield cutting
    cutting.close()


def test_a_connection_cut_while_the_idle_wait_replies_loses_nothing(
    proxy: CuttingProxy, redis_url: str, redis_client: redis.Redis
) -> None:
    received: list[Any] = []
    with consumer(proxy.url, received=received) as connection:
        drain_for(connection, 1.5)  # FETCH found nothing: the consumer waits
        wait_for(lambda: waiting_on_wake_list(redis_client), 30, what="the consumer idle")
        proxy.arm(b"BRPOP")
        sent = publish(redis_url)  # the waiting BRPOP's reply is dropped, the connection cut
        assert proxy.dropped.wait(10)
        with pytest.raises(redis.ConnectionError):
            drain_until(connection, lambda: False, 10)
        assert received == []
    # What the cut BRPOP took was a wake token: the message is still on its queue.
    assert queued(redis_client) == [sent]
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
    assert [message.headers["id"] for message in received] == [sent]


def test_a_connection_cut_while_fetchs_reply_comes_leaves_the_message_recorded(
    proxy: CuttingProxy, redis_url: str, redis_client: redis.Redis
) -> None:
    sent = publish(redis_url)
    proxy.arm(b"EVALSHA")
    with pytest.raises(redis.ConnectionError), consumer(proxy.url) as connection:
        drain_until(connection, lambda: False, 10)
    # Taken and recorded: the worker's consumer puts its own set back when it reconnects
    # (celery_ecs.consumer), a sweep when the worker is gone (celery_ecs.recovery).
    assert queued(redis_client) == []
    assert held(redis_client) == [sent]


def test_a_fetch_whose_reply_is_never_read_is_a_lost_connection(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The polling connection dropped under a FETCH in flight, unread (kombu 5.7's health check
    drops it so; kombu re-registers a replaced socket so): the FETCH may have taken and recorded
    a message that never reached the consumer. A lost connection is raised, so that the worker's
    consumer puts its own set back (celery_ecs.consumer), instead of fetching past it."""
    sent = publish(redis_url)
    redis_client.script_load(FETCH)  # else the first EVALSHA finds no script, and runs nothing
    with consumer(redis_url) as connection:
        channel = connection.default_channel
        connection.transport.cycle.on_poll_start()  # registers the channel and sends FETCH
        wait_for(lambda: queued(redis_client) == [], 10, what="FETCH taking the message")
        channel.client.connection.disconnect()
        with pytest.raises(redis.ConnectionError):
            drain_until(connection, lambda: False, 10)
    assert held(redis_client) == [sent]


# --- kombu 5.7's polling machinery, with FETCH on the polling connection -----------------------
# kombu 5.7 added three mechanisms around the command in flight on the polling connection
# (kombu/transport/redis.py 5.7.0): a health check (MultiChannelPoller.maybe_check_brpop_health,
# run by the event loop's timer and by drain_events), the flush of a rotated streaming credential
# (Channel._flush_brpop_reauth, run by kombu's _brpop_read and by a timer), and the pause of a
# reply unread while the consumer has no room (MultiChannelPoller._update_brpop_polling,
# on_readable). Each is exercised here with this transport's FETCH in flight (celery_ecs.upstream).

#: kombu's polling interval (brpop_timeout: the idle wait's longest) and health-check interval:
#: kombu 5.7 drops a polling connection whose reply is overdue by their sum, 4 s.
SLOW_WAIT_QUICK_CHECK = {"polling_interval": 3, "health_check_interval": 1}

kombu_5_7_health_check = pytest.mark.skipif(
    not hasattr(kombu_redis.MultiChannelPoller, "maybe_check_brpop_health"),
    reason="kombu 5.7's health check of the polling connection")  # fmt: skip


@kombu_5_7_health_check
@pytest.mark.parametrize("command", ["idle-wait", "fetch"])
def test_kombu_drops_a_polling_connection_that_stopped_answering(
    own_redis: RedisServer, command: str
) -> None:
    """kombu 5.7 drops a polling connection whose reply is overdue by brpop_timeout +
    health_check_interval (a half-open socket: a failover); it must see this transport's
    commands too (``_brpop_sent_at``, celery_ecs.upstream): the idle wait's BRPOP and a FETCH. A
    stopped server stands for the peer that no longer answers: the connection stays open,
    nothing comes. After an idle wait consuming goes on; a FETCH dropped so may have run, so
    it is a lost connection (the worker's consumer puts its set back), and its message is on
    its queue or in the worker's set: not lost."""
    url = own_redis.url
    server = redis.Redis.from_url(url)
    sent = [publish(url)]
    received: list[Any] = []
    with consumer(url, received=received, options=SLOW_WAIT_QUICK_CHECK) as connection:
        drain_until(connection, lambda: len(received) == 1, 10)  # connected, FETCH's reply read
        channel, cycle = connection.default_channel, connection.transport.cycle
        polling = channel.client.connection
        if command == "idle-wait":
            drain_for(connection, 0.3)  # FETCH finds nothing: the consumer waits on wake lists
            wait_for(lambda: waiting_on_wake_list(server), 10, what="the consumer idle")
        else:
            sent.append(publish(url))
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            if command == "fetch":
                cycle.on_poll_start()  # sends FETCH, unanswered
                assert [sent.command for sent in channel._sent] == ["EVALSHA"]
                assert channel._in_poll is polling
            time.sleep(4.5)
            cycle.maybe_check_brpop_health()
            dropped = polling._sock is None
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert dropped
        if command == "idle-wait":
            sent.append(publish(url))
            drain_until(connection, lambda: len(received) == 2, 10)
            assert [message.headers["id"] for message in received] == sent
            return
        with pytest.raises(redis.ConnectionError, match="FETCH in flight"):
            drain_until(connection, lambda: False, 10)
    assert [message.headers["id"] for message in received] == sent[:1]
    assert sorted(held(server) + queued(server)) == sorted(sent)


def test_a_fetch_reply_waiting_while_the_consumer_has_no_room_is_kept_and_read_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A FETCH is in flight when the consumer runs out of room (its prefetch count lowered, as
    Celery lowers it when an ETA task falls due): kombu 5.7 pauses the polling socket
    (``PausedBRPOP``: because ``_in_poll`` is set; without it kombu drops the connection),
    leaving the reply (a message taken and recorded) unread, sends nothing more, and its health
    check keeps the connection past the deadline (the reply is there to read); once the
    consumer has room, that same reply is read and its message delivered, once. kombu 5.6
    leaves the reply unread too (it reads only with room), without a pause or a check."""
    sent = [publish(redis_url) for _ in range(3)]
    received: list[Any] = []
    with consumer(redis_url, received=received, options=SLOW_WAIT_QUICK_CHECK) as connection:
        channel, cycle = connection.default_channel, connection.transport.cycle
        channel.basic_qos(prefetch_count=2)
        drain_until(connection, lambda: len(received) == 1, 10)
        cycle.on_poll_start()  # room for one more: FETCH
        wait_for(lambda: queued(redis_client) == sent[2:], 10, what="FETCH taking the second")
        channel.basic_qos(prefetch_count=1)  # no room, the reply unread
        polling = channel.client.connection
        if hasattr(cycle, "maybe_check_brpop_health"):  # kombu 5.7
            drain_for(connection, 4.5)  # past the health check's deadline, 4 s
            assert polling._sock.fileno() in cycle._paused_brpop
            cycle.maybe_check_brpop_health()
        else:
            drain_for(connection, 0.5)  # kombu 5.6 polls the readable socket without a pause
        assert polling._sock is not None and channel._in_poll is polling
        assert len(received) == 1
        assert queued(redis_client) == sent[2:]  # no second FETCH while paused
        assert sorted(held(redis_client)) == sorted(sent[:2])
        received[0].ack()  # room again
        drain_until(connection, lambda: len(received) == 2, 10)
        assert [message.headers["id"] for message in received] == sent[:2]
        assert held(redis_client) == [sent[1]]
        assert queued(redis_client) == sent[2:]


kombu_5_7_reauth = pytest.mark.skipif(
    not hasattr(kombu_redis.Channel, "_flush_brpop_reauth"),
    reason="kombu 5.7's streaming re-authentication")  # fmt: skip


@contextmanager
def rotated_user(client: redis.Redis) -> Iterator[SimpleToken]:
    """An ACL user, and the token a streaming credential provider (ElastiCache IAM) would hand
    each connection to authenticate as it."""
    client.acl_setuser("rotated", enabled=True, passwords=["+rotated-secret"], keys=["*"],
                       channels=["*"], commands=["+@all"])  # fmt: skip
    now_ms = time.time() * 1000
    try:
        yield SimpleToken("rotated-secret", now_ms + 3_600_000, now_ms, {"oid": "rotated"})
    finally:
        client.acl_deluser("rotated")


def user_of(client: redis.Redis, connection: redis.Connection) -> str:
    """The user the server has ``connection`` authenticated as."""
    host, port = connection._sock.getsockname()[:2]
    (user,) = [entry["user"] for entry in client.client_list()
               if entry["addr"] == f"{host}:{port}"]  # fmt: skip
    return str(user)


@kombu_5_7_reauth
def test_a_rotated_credential_reaches_the_polling_connection(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A streaming credential provider (ElastiCache IAM) hands each connection its rotated
    token; kombu 5.7 sends it on the polling connection once a reply is read, the only moment
    that connection is idle (celery_ecs.upstream: ``_flush_brpop_reauth``). Else the broker cuts the
    connection when the first credential expires. Here: after the idle wait's replies."""
    with rotated_user(redis_client) as token, consumer(redis_url) as connection:
        drain_for(connection, 1.5)
        polling = connection.default_channel.client.connection
        polling.set_re_auth_token(token)
        drain_for(connection, 2.5)  # replies read: FETCH, the idle wait's BRPOP
        assert polling._re_auth_token is None
        assert user_of(redis_client, polling) == "rotated"


@kombu_5_7_reauth
def test_a_rotated_credential_waits_for_fetchs_reply_then_goes_at_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A token handed over while a FETCH is in flight is not sent by kombu's timer
    (``maybe_reauth``: its AUTH reply would interleave with FETCH's) and goes as soon as FETCH's
    reply is read, before anything else on that connection; the message comes intact."""
    sent = publish(redis_url)
    redis_client.script_load(FETCH)  # EVALSHA finds it: the first reply is FETCH's
    received: list[Any] = []
    with rotated_user(redis_client) as token, \
            consumer(redis_url, received=received) as connection:  # fmt: skip
        channel = connection.default_channel
        connection.transport.cycle.on_poll_start()  # sends FETCH
        polling = channel.client.connection
        polling.set_re_auth_token(token)
        channel.maybe_reauth()  # kombu 5.7's timer (reauth_check_interval)
        assert polling._re_auth_token is not None and user_of(redis_client, polling) == "default"
        drain_until(connection, lambda: len(received) == 1, 10)  # reads FETCH's reply only
        assert [message.headers["id"] for message in received] == [sent]
        assert polling._re_auth_token is None
        assert user_of(redis_client, polling) == "rotated"


@kombu_5_7_reauth
def test_a_rotated_credential_goes_after_a_fetch_that_failed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """kombu's ``_brpop_read`` flushes the token whatever the reply (a ``finally``); so does
    this one: an error reply leaves the connection idle too."""
    redis_client.script_load(FETCH)
    with rotated_user(redis_client) as token, consumer(redis_url) as connection:
        channel = connection.default_channel
        redis_client.set(QUEUE, "not a list")  # FETCH's RPOP: WRONGTYPE
        connection.transport.cycle.on_poll_start()  # sends FETCH
        polling = channel.client.connection
        polling.set_re_auth_token(token)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            drain_until(connection, lambda: False, 10)
        assert polling._re_auth_token is None
        assert user_of(redis_client, polling) == "rotated"
        redis_client.delete(QUEUE)


# --- maxmemory ----------------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


def fill_past_maxmemory(client: redis.Redis) -> None:
    """Write 2 MB, then set maxmemory below what is used (``noeviction``: writes refused)."""
    for index in range(200):
        client.set(f"filler:{index}", "x" * 10_000)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 500_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("one-more", "x")


def test_at_maxmemory_fetch_takes_nothing_and_the_message_comes_once_memory_frees(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_redis.url
    client = redis.Redis.from_url(url, decode_responses=True)
    first, second = publish(url), publish(url)
    received: list[Any] = []
    with consumer(url, received=received) as connection:
        qos = connection.default_channel.qos
        qos.prefetch_count = 1
        drain_until(connection, lambda: len(received) == 1, 30)
        fill_past_maxmemory(client)
        with caplog.at_level(logging.WARNING, logger="celery_ecs.transport"):
            received[0].ack()  # rides on a FETCH that Redis refuses: sent again with ACK
            drain_for(connection, 3)  # FETCH refused every polling interval
        assert len(received) == 1
        assert queued(client) == [second]  # nothing taken...
        assert held(client) == []  # ...and the acknowledgement applied all the same
        assert "maxmemory" in caplog.text

        client.delete(*client.keys("filler:*"))
        drain_until(connection, lambda: len(received) == 2, 30)
    assert [message.headers["id"] for message in received] == [first, second]
    assert queued(client) == []
    assert held(client) == [second]


def test_at_maxmemory_the_event_loop_starts_without_kombus_restore_lock(
    own_redis: RedisServer,
) -> None:
    # As the worker's event loop starts (on_poll_init), and every 10 s, kombu runs the QoS's
    # restore_visible, which locked with SET NX: at maxmemory Redis refused it, and at the
    # loop's start the error ended the worker. This transport's takes no lock (the sweep of
    # celery_ecs.recovery restores what outlives the visibility timeout).
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    with consumer(own_redis.url) as connection:
        fill_past_maxmemory(client)
        hub = Hub()
        try:
            connection.transport.register_with_event_loop(connection.connection, hub)
        finally:
            hub.close()
    assert client.keys("unacked_mutex*") == []


# --- wake-ups -----------------------------------------------------------------------------------


def test_the_first_message_after_an_idle_spell_comes_promptly(
    redis_url: str, redis_client: redis.Redis, record_property: Callable[[str, object], None]
) -> None:
    received: list[Any] = []
    latencies = []
    with consumer(redis_url, received=received) as connection:
        # Without a wake token, the next FETCH would come when this wait times out.
        connection.default_channel.brpop_timeout = 30
        for count in range(1, 6):
            drain_for(connection, 0.5)
            wait_for(lambda: waiting_on_wake_list(redis_client), 30, what="the consumer idle")
            sent_at = time.monotonic()
            publish(redis_url)
            drain_until(connection, lambda count=count: len(received) == count, 30)  # type: ignore[misc]
            latencies.append(time.monotonic() - sent_at)
    record_property("idle_latency_seconds", latencies)
    # A wake token, not the polling interval, brought each (generous: a loaded machine).
    assert max(latencies) < 15, latencies


def test_a_message_without_a_wake_token_is_taken_within_the_polling_interval(
    redis_url: str, redis_client: redis.Redis
) -> None:
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        drain_for(connection, 1.5)
        sent = publish(redis_url, transport="redis")  # stock kombu: no wake token
        assert not redis_client.exists(wake_key(QUEUE))
        drain_until(connection, lambda: len(received) == 1, 30)
    assert [message.headers["id"] for message in received] == [sent]


def test_publishing_adds_a_wake_token_and_the_wake_list_stays_capped(
    redis_url: str, redis_client: redis.Redis
) -> None:
    for _ in range(3):
        publish(redis_url)
    assert redis_client.llen(wake_key(QUEUE)) == 3
    with redis_client.pipeline() as pipe:
        for _ in range(WAKE_TOKENS_MAX):
            pipe.lpush(wake_key(QUEUE), 1)
        pipe.execute()
    publish(redis_url)
    assert redis_client.llen(wake_key(QUEUE)) == WAKE_TOKENS_MAX

    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 4, 30)
        drain_for(connection, 0.5)  # FETCH finds the queue empty: stale tokens go
    assert not redis_client.exists(wake_key(QUEUE))


# --- acknowledgements and records ---------------------------------------------------------------


def test_a_consumer_without_acknowledgements_leaves_no_record(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Control replies are consumed so; a record would be pushed back by a sweep later.
    publish(redis_url)
    received: list[Any] = []
    with consumer(redis_url, no_ack=True, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
    assert queued(redis_client) == []
    assert not redis_client.exists(WORKER.unacked.hash, WORKER.unacked.index, REGISTRY_KEY)


def test_a_message_fetch_could_not_record_is_recorded_on_delivery(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # A kombu message whose tag is not a string (another producer): FETCH leaves it to Python.
    publish(redis_url)
    payload = loads(redis_client.rpop(QUEUE))
    payload["properties"]["delivery_tag"] = 7
    redis_client.lpush(QUEUE, dumps(payload))
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
    assert redis_client.hexists(WORKER.unacked.hash, "7")


def test_at_maxmemory_a_message_fetch_could_not_record_is_still_recorded(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory fills between FETCH (which took the message, unrecorded) and its record on
    # delivery: kombu's MULTI would be refused, and the message, off its queue, lost.
    client = redis.Redis.from_url(own_redis.url)
    publish(own_redis.url)
    payload = loads(client.rpop(QUEUE))
    payload["properties"]["delivery_tag"] = 7
    client.lpush(QUEUE, dumps(payload))
    append = QoS.append

    def fill_then_append(qos: QoS, message: Any, delivery_tag: str) -> None:
        fill_past_maxmemory(client)
        append(qos, message, delivery_tag)

    monkeypatch.setattr(QoS, "append", fill_then_append)
    received: list[Any] = []
    with consumer(own_redis.url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
    assert client.hexists(WORKER.unacked.hash, "7")
    assert client.sismember(REGISTRY_KEY, WORKER.member)  # the sweepers know who holds it


def test_an_acknowledgement_whose_send_failed_is_sent_again(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):
        publish(redis_url)
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        channel = connection.default_channel
        channel.qos.prefetch_count = 1
        drain_until(connection, lambda: len(received) == 1, 30)
        polling = channel.client.connection
        real_send = polling.send_packed_command

        def fail_once(*args: Any, **kwargs: Any) -> None:
            monkeypatch.setattr(polling, "send_packed_command", real_send)
            polling.disconnect()
            raise redis.ConnectionError("send failed")

        monkeypatch.setattr(polling, "send_packed_command", fail_once)
        # As Celery acknowledges: a connection error is logged, not raised.
        received[0].ack_log_error(logging.getLogger("test"), (redis.ConnectionError,))
        assert channel.unconfirmed_acks() == [received[0].delivery_tag]
        drain_until(connection, lambda: len(received) == 2, 30)
        drain_for(connection, 0.3)
        held_now = held(redis_client)
    assert held_now == [received[1].headers["id"]]  # the first one's ack reached Redis


@pytest.mark.parametrize("outcome", ["reject-requeue", "reject", "ack"])
def test_a_task_ending_after_its_channel_closed_leaves_its_message_to_the_set(
    outcome: str, redis_url: str, redis_client: redis.Redis
) -> None:
    # A task ends after its worker lost the connection: Celery acknowledges or rejects the
    # message on the channel of that connection, closed meanwhile. That ended the worker
    # ("Unrecoverable error: AttributeError: 'NoneType' object has no attribute 'client'",
    # seen in test_broker_restart under load): kombu built a client from the closed channel.
    message_id = publish(redis_url)
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
        channel = connection.default_channel
        channel.qos.restore_at_shutdown = False  # the consumer puts its set back itself
        channel.close()
        assert channel.connection is None and channel._sync_client is None  # FETCH only
        message = received[0]
        if outcome == "ack":
            message.ack()
        else:
            message.reject(requeue=outcome == "reject-requeue")
    # Left where the consumer's restore after reconnecting (or a sweep) finds it: once.
    assert held(redis_client) == [message_id]
    assert queued(redis_client) == []


def test_a_fetch_reply_read_on_a_socket_error_event_is_delivered(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # kombu's poller reads the reply itself on an error event, and drops it.
    sent = publish(redis_url)
    redis_client.script_load(FETCH)  # EVALSHA finds it: the first reply is FETCH's
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        channel = connection.default_channel
        connection.transport.cycle._register_BRPOP(channel)  # sends FETCH
        wait_for(lambda: not redis_client.llen(QUEUE), 10, what="FETCH to take the message")
        channel._poll_error("BRPOP")
        assert [message.headers["id"] for message in received] == [sent]


def test_a_flushed_script_cache_is_loaded_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        for count in (1, 2):
            redis_client.script_flush()  # as a restarted server: EVALSHA answers NOSCRIPT
            publish(redis_url)
            drain_until(connection, lambda count=count: len(received) == count, 30)  # type: ignore[misc]
        received[0].ack()
        redis_client.script_flush()
        assert connection.default_channel.basic_get(QUEUE) is None
    assert len(held(redis_client)) == 1


# --- a real worker ------------------------------------------------------------------------------


def attempts(client: redis.Redis, key: str) -> int:
    return int(client.get(f"attempts:{key}") or 0)


@pytest.mark.parametrize("cut", ["reply-dropped", "client-kill"])
def test_an_idle_worker_whose_connection_is_cut_runs_the_next_task_exactly_once(
    cut: str, proxy: CuttingProxy, redis_url: str, redis_client: redis.Redis, tmp_path: Path,
    processes: list[AppProcess],
) -> None:  # fmt: skip
    env = app_environment(proxy.url, tmp_path, CELERY_TASK_SOFT_TIME_LIMIT="20",
                          CELERY_TASK_TIME_LIMIT="22", CELERY_VISIBILITY_TIMEOUT="900",
                          CELERY_MAX_COUNTDOWN="0")  # fmt: skip
    worker = start_worker(env, tmp_path)
    processes.append(worker)
    wait_for(lambda: waiting_on_wake_list(redis_client), 30, what="the worker idle")
    if cut == "reply-dropped":
        proxy.arm(b"BRPOP")
    send_task(redis_url, "app.tasks.apply_credit",
              kwargs={"idempotency_key": "cut-1", "account": "acct", "amount": 10})  # fmt: skip
    if cut == "client-kill":
        for entry in redis_client.client_list():
            if entry.get("cmd") == "brpop":
                redis_client.client_kill_filter(_id=entry["id"])

    wait_for(lambda: redis_client.exists("idem:cut-1"), 60, what="the task to complete")
    wait_for(lambda: unacked_count(redis_client, "default") == 0, 30, what="its ack")
    time.sleep(2)  # time enough for a duplicate to show
    assert attempts(redis_client, "cut-1") == 1
    assert redis_client.hget("ledger:balances", "acct") == "10"
    assert worker.alive(), worker.logs()


def test_a_worker_resumes_after_a_restart_that_lost_the_data_and_the_scripts(
    own_redis: RedisServer, tmp_path: Path, processes: list[AppProcess]
) -> None:
    # What the restart took is the restart's (the item 4); the transport's part is
    # that the worker takes what comes after it: its scripts are gone (NOSCRIPT), and so are
    # the wake lists it waited on.
    url = own_redis.url
    env = app_environment(url, tmp_path, CELERY_TASK_SOFT_TIME_LIMIT="20",
                          CELERY_TASK_TIME_LIMIT="22", CELERY_VISIBILITY_TIMEOUT="900",
                          CELERY_MAX_COUNTDOWN="0")  # fmt: skip
    worker = start_worker(env, tmp_path)
    processes.append(worker)
    client = redis.Redis.from_url(url, decode_responses=True)
    wait_for(lambda: waiting_on_wake_list(client), 30, what="the worker idle")
    client.set("before-the-restart", 1)
    server_before = client.info("server")["run_id"]

    own_redis.restart(downtime=1, keep_data=False)

    # A new server process (so no script cached: Redis keeps none across a restart) with none of
    # the data. Not dbsize() == 0: the worker may be back and writing before this line runs.
    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.info("server")["run_id"] != server_before
    assert not client.exists("before-the-restart")
    send_task(url, "app.tasks.apply_credit",
              kwargs={"idempotency_key": "after-1", "account": "acct", "amount": 10})  # fmt: skip
    wait_for(lambda: client.exists("idem:after-1"), 60, what="the task to complete")
    wait_for(lambda: unacked_count(client, "default") == 0, 30, what="its ack")
    assert attempts(client, "after-1") == 1
    assert client.script_exists(FETCH_SHA) == [True]  # sent again to the new server
    assert worker.alive(), worker.logs()


def ack_while_a_fetch_is_in_flight(connection: Connection, message: Any) -> None:
    """Send FETCH on the polling connection, then acknowledge ``message``: it waits for the
    FETCH after that one (one EVALSHA fewer than an ACK of its own)."""
    channel = connection.default_channel
    connection.transport.cycle._register_BRPOP(channel)  # sends FETCH
    message.ack()
    assert channel.unconfirmed_acks() == [message.delivery_tag]


def test_an_acknowledgement_waiting_for_a_fetch_goes_at_once_when_the_queues_are_empty(
    redis_url: str, redis_client: redis.Redis
) -> None:
    publish(redis_url)
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
        ack_while_a_fetch_is_in_flight(connection, received[0])
        # The FETCH finds the queue empty: no FETCH carries the acknowledgement before the idle
        # wait ends (1 s), so it is sent with ACK before the wait starts.
        drain_for(connection, 0.3)
        assert held(redis_client) == []
        assert connection.default_channel.unconfirmed_acks() == []


def test_an_acknowledgement_waiting_for_a_fetch_is_sent_when_the_channel_closes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sent = [publish(redis_url) for _ in range(2)]
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        drain_until(connection, lambda: len(received) == 1, 30)
        ack_while_a_fetch_is_in_flight(connection, received[0])
    # The close read the FETCH's reply (the second message, which kombu's close puts back on
    # its queue: never acknowledged) and sent the first message's acknowledgement.
    assert held(redis_client) == []
    assert queued(redis_client) == [sent[1]]


def test_a_slot_freed_while_a_fetch_is_in_flight_is_refilled_without_waiting_for_its_reply(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """With one FETCH at a time a worker takes at most one message per round trip, and a slot
    freed meanwhile idles until that reply is read (issue 18's throughput). The freed slot's
    FETCH goes at once, pipelined behind the first, and never past the consumer's room."""
    sent = [publish(redis_url) for _ in range(3)]
    redis_client.script_load(FETCH)  # else the first EVALSHA finds no script, and runs nothing
    received: list[Any] = []
    with consumer(redis_url, received=received) as connection:
        channel = connection.default_channel
        channel.basic_qos(0, 2, False)  # two slots
        drain_until(connection, lambda: len(received) == 1, 30)
        connection.transport.cycle._register_BRPOP(channel)  # FETCH for the free slot
        received[0].ack()  # the other slot frees while that FETCH is on its way
        # Both FETCHes ran before any reply was read: the queue is empty, the first message
        # acknowledged by the second FETCH, the other two recorded.
        wait_for(lambda: queued(redis_client) == [], 10, what="a second FETCH")
        assert sorted(held(redis_client)) == sorted(sent[1:])
        drain_until(connection, lambda: len(received) == 3, 30)
        assert [message.headers["id"] for message in received] == sent
        assert channel.unconfirmed_acks() == []
        # Two held, two slots: no FETCH, pipelined or not, takes a third.
        later = publish(redis_url)
        assert not channel.fetch_now([])
        drain_for(connection, 0.3)
        assert queued(redis_client) == [later]
