"""Queue metrics for worker autoscaling and alarms, and beat's heartbeat, for CloudWatch.

When ``CELERY_METRICS_NAMESPACE`` is set, the worker's main process reads, every 10 seconds and
in one round trip to Redis, each queue it consumes and its pool's live workers, and sends them
in one ``PutMetricData`` call (``celery_ecs.cloudwatch``), all at high resolution
(``StorageResolution`` 1), so the step-scaling alarm can evaluate them every 10 seconds:

- ``Backlog`` (dimension ``Queue``): messages waiting in the queue (not those already delivered
  to a worker), summed over kombu's priority lists.
- ``OldestMessageAge`` (``Queue``): seconds since the oldest waiting message was published.
  Every message the app publishes carries its publish time (``PUBLISHED_AT_HEADER``, stamped by
  the message factory in ``celery_ecs.runtime``). kombu's Redis transport LPUSHes and BRPOPs, so the
  next message of each priority list is its right end: read with ``LINDEX key -1``, nothing
  removed. A message without the stamp (an older publisher) is skipped; when no list's next
  message has one, the round carries no age at all rather than a wrong one.
- ``Workers`` (``Pool``): workers of the pool seen in the last ``WORKER_TTL_SECONDS``. Each round
  registers the worker in a Redis sorted set; this is the denominator of the high-resolution
  backlog-per-task alarm (Container Insights' task counts have one-minute resolution only, and
  an alarm's metrics must share one period).

Every worker of a pool publishes the same numbers: use the Maximum statistic, never Sum.

Why ``PutMetricData`` and not the log stream (embedded metric format, EMF), as before: on
Fargate a log line waits up to 5 s for the awslogs driver's next batch, then for CloudWatch Logs
to extract the metrics, a delay AWS does not document, and in ``non-blocking`` mode a full log
buffer drops lines, metric lines included, under exactly the load that should scale the pool.
The README's "Autoscaling on the queue" has the figures and their sources.

Beat's ``BeatHeartbeat`` stays an EMF line on stdout: its alarm waits five minutes, far longer
than the log path takes, and beat's task role then needs no permission at all.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery, bootsteps
from kombu.exceptions import OperationalError

from celery_ecs.cloudwatch import CLOUDWATCH_TIMEOUT_SECONDS, Datum, Sink, metrics_sink
from celery_ecs.names import (
    BACKLOG_METRIC,
    BEAT_HEARTBEAT_METRIC,
    OLDEST_AGE_METRIC,
    POOL_DIMENSION,
    QUEUE_DIMENSION,
    SERVICE_DIMENSION,
    WORKERS_METRIC,
)
from celery_ecs.periodic import PeriodicThread
from celery_ecs.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two rounds: a high-resolution alarm evaluates 10-second periods.
PUBLISH_INTERVAL_SECONDS = 10.0
#: Seconds the broker may take to connect or answer before this round is skipped.
BROKER_TIMEOUT_SECONDS = 5.0
#: The longest a round can take: connecting and answering on the broker (each bounded), then
#: CloudWatch's one attempt.
ROUND_TIMEOUT_SECONDS = 2 * BROKER_TIMEOUT_SECONDS + CLOUDWATCH_TIMEOUT_SECONDS
#: A worker that has not published for this long no longer counts in ``Workers``.
WORKER_TTL_SECONDS = 3 * PUBLISH_INTERVAL_SECONDS
#: Message header holding the publish time (seconds since the epoch, a float).
PUBLISHED_AT_HEADER = "published_at"

#: Seconds between two beat heartbeats: every one-minute period gets at least one.
BEAT_HEARTBEAT_INTERVAL_SECONDS = 30.0
#: Storage resolutions (EMF and PutMetricData alike): 1 = high resolution (1-second storage),
#: 60 = standard.
HIGH_RESOLUTION = 1
STANDARD_RESOLUTION = 60


def workers_key(pool: str) -> str:
    """The sorted set of a pool's live workers (member: worker name, score: last round)."""
    return f"celery-ecs:workers:{pool}"


def stamp_published_at(headers: MutableMapping[str, Any], now: float) -> None:
    """Record the publish time in a message's headers (the message factory calls this)."""
    headers[PUBLISHED_AT_HEADER] = now


def published_at(payload: bytes | str | None) -> float | None:
    """The publish time of a message as kombu's Redis transport stores it, or None when it has
    none (an older publisher, or something that is not a kombu message)."""
    if payload is None:
        return None
    try:
        value = json.loads(payload)["headers"][PUBLISHED_AT_HEADER]
    except (ValueError, TypeError, KeyError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class Metric:
    """One value of an EMF document."""

    name: str
    value: float
    unit: str
    resolution: int = HIGH_RESOLUTION


def emf_line(
    namespace: str, dimensions: Mapping[str, str], metrics: Sequence[Metric], timestamp_ms: int
) -> str:
    """One EMF document, as a single line without its newline."""
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [
                        {"Name": m.name, "Unit": m.unit, "StorageResolution": m.resolution}
                        for m in metrics
                    ],
                }
            ],
        },
        **dimensions,
        **{m.name: m.value for m in metrics},
    }
    return json.dumps(document, separators=(",", ":"))


def write_to_stdout(line: str) -> None:
    """Write ``line`` and a newline to file descriptor 1 with one ``write`` system call.

    Not ``print``: the worker replaces ``sys.stdout`` with a logger, which would prefix the line
    and break the JSON. One call per line also keeps it whole when pool processes write to the
    same pipe at the same time (writes up to PIPE_BUF, 4 KiB, are atomic); the loop only
    matters for outputs that accept part of a write.
    """
    data = f"{line}\n".encode()
    while data:
        written = os.write(1, data)
        data = data[written:]


@dataclass(frozen=True)
class QueueState:
    backlog: int
    #: Publish time of the oldest message at the head of a priority list; None: none stamped.
    oldest_published_at: float | None


@dataclass(frozen=True)
class _Layout:
    connection: Any
    client: redis.Redis
    #: Queue -> its priority lists' keys, in kombu's order.
    lists: dict[str, list[str]]
    registry: str


@dataclass(frozen=True)
class Snapshot:
    queues: dict[str, QueueState]
    workers: int


class QueueMetricsPublisher:
    """Reads the pool's queues and live workers in one round trip and hands the round's
    datapoints to ``send`` (``celery_ecs.cloudwatch``: one PutMetricData call).

    ``publish`` never raises for broker or CloudWatch trouble: it logs, drops the round, and the
    next round tries again.
    """

    def __init__(
        self,
        app: Celery,
        pool: str,
        worker: str,
        queues: Sequence[str],
        send: Sink,
        *,
        broker_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.pool = pool
        self.worker = worker
        self.queues = tuple(queues)
        self.send = send
        self.broker_url = broker_url  # None: the app's
        self.clock = clock
        # What the transport raises when the broker is unreachable or refuses a command;
        # an unconnected Connection only reads them from its transport class.
        transport = app.connection_for_read(broker_url)
        self._broker_errors: tuple[type[BaseException], ...] = (
            OperationalError, redis.RedisError,
            *transport.connection_errors, *transport.channel_errors,
        )  # fmt: skip
        self._cached: _Layout | None = None

    def read(self, now: float) -> Snapshot:
        """The queues' backlogs and oldest publish times, and the pool's live workers (this one
        registered first). Raises the transport's errors."""
        layout = self._layout()
        with layout.client.pipeline(transaction=False) as pipe:
            for keys in layout.lists.values():
                for key in keys:
                    pipe.llen(key)
                    pipe.lindex(key, -1)
            pipe.zadd(layout.registry, {self.worker: now})
            pipe.zremrangebyscore(layout.registry, "-inf", now - WORKER_TTL_SECONDS)
            pipe.zcard(layout.registry)
            pipe.expire(layout.registry, int(WORKER_TTL_SECONDS))
            replies = pipe.execute()
        queues = {}
        position = 0
        for queue, keys in layout.lists.items():
            backlog = 0
            stamps = []
            for _ in keys:
                length, head = replies[position], replies[position + 1]
                position += 2
                backlog += length
                stamp = published_at(head)
                if stamp is not None:
                    stamps.append(stamp)
            queues[queue] = QueueState(backlog, min(stamps) if stamps else None)
        return Snapshot(queues=queues, workers=replies[position + 2])

    def _layout(self) -> _Layout:
        """The client and key names, kept from round to round: a new connection every round
        would cost the broker a TLS handshake (and a PING) each time.

        A connection of its own, so as not to share the consumer's (kombu connections are not
        thread-safe), with timeouts so a broker that hangs cannot hold this thread forever. Key
        names (priority lists, a global key prefix) come from the app's transport options, so
        they are the ones the workers consume from.
        """
        if self._cached is None:
            timeouts = {
                "socket_timeout": BROKER_TIMEOUT_SECONDS,
                "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
                # And the lookup of the broker's name (celery_ecs.transport).
                "resolve_timeout": BROKER_TIMEOUT_SECONDS,
            }
            connection = self.app.connection_for_read(self.broker_url, transport_options=timeouts)
            try:
                channel: Any = connection.default_channel
            except BaseException:
                connection.release()
                raise
            prefix = channel.global_keyprefix
            self._cached = _Layout(
                connection=connection,
                # A plain client: kombu's prefixing client knows LLEN but not LINDEX or the
                # sorted set commands, so every key below carries the prefix already.
                client=redis.Redis(connection_pool=channel.pool),
                lists={
                    queue: [
                        prefix + channel._q_for_pri(queue, step) for step in channel.priority_steps
                    ]
                    for queue in self.queues
                },
                registry=prefix + workers_key(self.pool),
            )
        return self._cached

    def close(self) -> None:
        if self._cached is not None:
            self._cached.connection.release()
            self._cached = None

    def datums(self, snapshot: Snapshot, now: float) -> list[Datum]:
        """The round's datapoints, all stamped ``now``, all high resolution."""
        timestamp = datetime.fromtimestamp(now, UTC)

        def datum(metric: Metric, dimension: tuple[str, str]) -> Datum:
            return {
                "MetricName": metric.name,
                "Dimensions": [{"Name": dimension[0], "Value": dimension[1]}],
                "Timestamp": timestamp,
                "Value": float(metric.value),
                "Unit": metric.unit,
                "StorageResolution": metric.resolution,
            }

        datums = []
        for queue, state in snapshot.queues.items():
            datums.append(
                datum(Metric(BACKLOG_METRIC, state.backlog, "Count"), (QUEUE_DIMENSION, queue))
            )
            age: float | None = None
            if state.backlog == 0:
                age = 0.0
            elif state.oldest_published_at is not None:
                # Clocks of publishers and workers differ a little: never a negative age.
                age = round(max(0.0, now - state.oldest_published_at), 3)
            if age is not None:
                datums.append(
                    datum(Metric(OLDEST_AGE_METRIC, age, "Seconds"), (QUEUE_DIMENSION, queue))
                )
        workers = Metric(WORKERS_METRIC, snapshot.workers, "Count")
        datums.append(datum(workers, (POOL_DIMENSION, self.pool)))
        return datums

    def publish(self) -> None:
        """Send one round: each queue's backlog and age, the pool's workers. On a broker error,
        log it and send nothing; the sink logs and drops a round CloudWatch does not take."""
        now = self.clock()
        try:
            snapshot = self.read(now)
        except self._broker_errors as error:
            log.warning("queue metrics: could not read the queues, skipping this round: %r", error)
            # Connect afresh next round (the broker may have moved: a failover, a restart).
            self.close()
            return
        self.send(self.datums(snapshot, now))


class QueueMetricsStep(bootsteps.StartStopStep):
    """Worker bootstep: publishes the metrics of every queue the worker consumes (``-Q``).

    Register with ``app.steps["worker"].add(QueueMetricsStep)`` when
    ``CELERY_METRICS_NAMESPACE`` is set. Publishes from a thread of the main process
    (``celery_ecs.periodic``): a broker round trip and a CloudWatch call must not hold up the
    worker's event loop. Both are bounded by timeouts (the broker's name lookup too; CloudWatch's is
    botocore's), so the worker's stop waits at most that long; a fork of the pool waits for
    none of it.
    """

    # Threads start once the pool has forked its children (see ``celery_ecs.periodic``).
    requires = ("celery.worker.components:Pool",)
    label = "Queue metrics"

    # celery-types has Step.create return None; StartStopStep keeps what it returns as its obj.
    def create(self, worker: Any) -> PeriodicThread:  # type: ignore[override]
        settings = Settings.from_env()
        queues = sorted(worker.app.amqp.queues.consume_from)
        sink = metrics_sink(settings.metrics_namespace, write_to_stdout)
        publisher = QueueMetricsPublisher(
            worker.app, settings.worker_pool, worker.hostname, queues, sink
        )
        log.info("queue metrics: publishing %s every %g s", queues, PUBLISH_INTERVAL_SECONDS)
        return PeriodicThread(
            "queue-metrics",
            PUBLISH_INTERVAL_SECONDS,
            publisher.publish,
            join_timeout=ROUND_TIMEOUT_SECONDS,
        )


class BeatHeartbeat:
    """Beat's liveness as a metric: one ``BeatHeartbeat`` line at most every
    ``BEAT_HEARTBEAT_INTERVAL_SECONDS``, written from beat's tick. The alarm on it treats
    missing data as breaching: a beat that stopped ticking (dead, stuck, waiting for a lock it
    never gets) writes nothing."""

    def __init__(
        self,
        namespace: str,
        *,
        write: Callable[[str], None] = write_to_stdout,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.write = write
        self.clock = clock
        self._last: float | None = None

    def tick(self) -> None:
        if not self.namespace:
            return
        now = self.clock()
        if self._last is not None and now - self._last < BEAT_HEARTBEAT_INTERVAL_SECONDS:
            return
        self._last = now
        metric = Metric(BEAT_HEARTBEAT_METRIC, 1, "Count", STANDARD_RESOLUTION)
        self.write(emf_line(self.namespace, {SERVICE_DIMENSION: "beat"}, [metric], int(now * 1000)))
