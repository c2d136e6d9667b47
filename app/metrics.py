"""Queue backlog metrics for worker autoscaling, as CloudWatch embedded metric format (EMF).

When ``CELERY_METRICS_NAMESPACE`` is set, the worker's main process writes, every 60 seconds and
for each queue it consumes, one JSON line to its standard output::

    {"_aws": {"Timestamp": 1700000000000, "CloudWatchMetrics": [{"Namespace": "<namespace>",
     "Dimensions": [["Queue"]], "Metrics": [{"Name": "Backlog", "Unit": "Count"}]}]},
     "Queue": "default", "Backlog": 12}

The ``awslogs`` log driver ships each line as a log event and CloudWatch Logs turns an EMF event
into the metric ``<namespace>/Backlog{Queue=...}``: no agent, no header, no ``PutMetricData``
permission. The backlog is the number of messages waiting in the queue (not those already
delivered to a worker), counted by kombu, so every priority list of the queue is included.

Every worker task of a pool publishes the same number: scale on the Maximum or Average
statistic, never on Sum.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, bootsteps
from kombu.exceptions import OperationalError

from app.periodic import PeriodicThread
from app.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two publications: CloudWatch's standard resolution is one minute.
PUBLISH_INTERVAL_SECONDS = 60.0
#: Seconds the broker may take to connect or answer before this round is skipped.
BROKER_TIMEOUT_SECONDS = 10.0
METRIC_NAME = "Backlog"


def emf_line(namespace: str, queue: str, backlog: int, timestamp_ms: int) -> str:
    """One EMF document for one queue's backlog, as a single line without its newline."""
    document = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Queue"]],
                    "Metrics": [{"Name": METRIC_NAME, "Unit": "Count"}],
                }
            ],
        },
        "Queue": queue,
        METRIC_NAME: backlog,
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


class BacklogPublisher:
    """Counts each queue's waiting messages and writes them as EMF lines.

    ``publish`` never raises for broker trouble: it logs and the next round tries again.
    """

    def __init__(
        self,
        app: Celery,
        queues: Sequence[str],
        namespace: str,
        *,
        broker_url: str | None = None,
        write: Callable[[str], None] = write_to_stdout,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.queues = tuple(queues)
        self.namespace = namespace
        self.broker_url = broker_url  # None: the app's
        self.write = write
        self.clock = clock
        # What the transport raises when the broker is unreachable or refuses a command;
        # an unconnected Connection only reads them from its transport class.
        transport = app.connection_for_read(broker_url)
        self._broker_errors: tuple[type[BaseException], ...] = (
            OperationalError, *transport.connection_errors, *transport.channel_errors,
        )  # fmt: skip

    def backlogs(self) -> dict[str, int]:
        """Queue name -> messages waiting in it. Raises the transport's errors.

        A connection of its own, so as not to share the consumer's (kombu connections are not
        thread-safe), with timeouts so a broker that hangs cannot hold this thread forever.
        The transport options are the app's, so key names (priority lists, a global key prefix)
        are the ones the workers use.
        """
        timeouts = {
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
        }
        with self.app.connection_for_read(
            self.broker_url, transport_options=timeouts
        ) as connection:
            channel = connection.channel()
            try:
                # A declare without ``passive`` creates nothing with the Redis transport; it
                # returns kombu's own count, the sum of LLEN over the queue's priority lists.
                return {
                    queue: channel.queue_declare(queue=queue).message_count for queue in self.queues
                }
            finally:
                channel.close()

    def publish(self) -> None:
        """Write one line per queue; on a broker error, log it and write nothing."""
        try:
            backlogs = self.backlogs()
        except self._broker_errors as error:
            log.warning(
                "backlog metrics: could not count the queues, skipping this round: %r", error
            )
            return
        timestamp_ms = int(self.clock() * 1000)
        for queue, backlog in backlogs.items():
            self.write(emf_line(self.namespace, queue, backlog, timestamp_ms))


class BacklogMetricsStep(bootsteps.StartStopStep):
    """Worker bootstep: publishes the backlog of every queue the worker consumes (``-Q``).

    Register with ``app.steps["worker"].add(BacklogMetricsStep)`` when
    ``CELERY_METRICS_NAMESPACE`` is set. Publishes from a thread of the main process
    (``app.periodic``): counting needs a broker round trip that must not hold up the
    worker's event loop.
    """

    # Threads start once the pool has forked its children (see ``app.periodic``).
    requires = ("celery.worker.components:Pool",)
    label = "Backlog metrics"

    def create(self, worker: Any) -> PeriodicThread:
        queues = sorted(worker.app.amqp.queues.consume_from)
        publisher = BacklogPublisher(worker.app, queues, Settings.from_env().metrics_namespace)
        log.info("backlog metrics: publishing %s every %g s", queues, PUBLISH_INTERVAL_SECONDS)
        return PeriodicThread(
            "backlog-metrics",
            PUBLISH_INTERVAL_SECONDS,
            publisher.publish,
            join_timeout=2 * BROKER_TIMEOUT_SECONDS,
        )
