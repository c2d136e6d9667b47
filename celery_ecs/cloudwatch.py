"""Send metric datapoints to CloudWatch with ``PutMetricData``, never holding up the caller long.

The worker's scaling metrics (``celery_ecs.metrics``) go this way rather than through the log stream
(embedded metric format): on Fargate a log line waits up to 5 s for the awslogs driver's next
batch and then for CloudWatch Logs to extract it, a delay AWS does not document; a step-scaling
alarm on 10-second periods needs its datapoints within seconds. The README's "Autoscaling on the
queue" section has the figures and their sources.

One ``PutMetricData`` call per round, with connect and read timeouts and no retry: a round
CloudWatch does not take (an outage, a throttle, a hung connection) is logged and dropped, never
queued; the next round, 10 s later, carries fresh numbers anyway. The caller (a thread of the
worker's main process, ``celery_ecs.periodic``) is held at most ``CLOUDWATCH_TIMEOUT_SECONDS``.

Credentials and endpoint come from botocore's usual chain: on ECS the task role (the container
credentials endpoint ECS sets in the environment); ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_CLOUDWATCH``) points it at a stand-in in the tests. The region is the task's:
Fargate sets ``AWS_REGION`` and ``AWS_DEFAULT_REGION`` (ECS Developer Guide, "Amazon ECS
environment variables"). Without a region there is no CloudWatch to talk to (the ECS twin, a
laptop): ``metrics_sink`` then writes one compact line per round to stdout instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

#: Seconds to open the connection to CloudWatch, then to wait for each read of its answer.
CLOUDWATCH_CONNECT_TIMEOUT_SECONDS = 2.0
CLOUDWATCH_READ_TIMEOUT_SECONDS = 3.0
#: The longest one round can hold its caller: one attempt, no retry.
CLOUDWATCH_TIMEOUT_SECONDS = CLOUDWATCH_CONNECT_TIMEOUT_SECONDS + CLOUDWATCH_READ_TIMEOUT_SECONDS
#: PutMetricData takes at most 1,000 metrics per request (CloudWatch API Reference,
#: "PutMetricData").
MAX_DATUMS_PER_CALL = 1000
#: Where ECS puts the task's region; ``AWS_REGION`` wins (ECS Developer Guide, "Amazon ECS
#: environment variables").
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")

#: One ``MetricData`` member of a PutMetricData request (``MetricName``, ``Dimensions``,
#: ``Timestamp``, ``Value``, ``Unit``, ``StorageResolution``).
Datum = Mapping[str, Any]
#: What a publisher hands one round's datapoints to.
Sink = Callable[[Sequence[Datum]], None]


def aws_region(environ: Mapping[str, str] | None = None) -> str | None:
    """The task's region, or None outside AWS."""
    env = os.environ if environ is None else environ
    for name in REGION_VARIABLES:
        if env.get(name, "").strip():
            return env[name].strip()
    return None


class PutMetricDataSink:
    """Sends each round's datapoints in one ``PutMetricData`` call (more only past 1,000)."""

    def __init__(self, namespace: str, region: str) -> None:
        self.namespace = namespace
        config = Config(
            connect_timeout=CLOUDWATCH_CONNECT_TIMEOUT_SECONDS,
            read_timeout=CLOUDWATCH_READ_TIMEOUT_SECONDS,
            # One attempt: a retry would hold the caller twice as long for numbers that are
            # stale by the next round.
            retries={"total_max_attempts": 1},
        )
        self.client: Any = botocore.session.get_session().create_client(
            "cloudwatch", region_name=region, config=config
        )

    def __call__(self, datums: Sequence[Datum]) -> None:
        for start in range(0, len(datums), MAX_DATUMS_PER_CALL):
            chunk = list(datums[start : start + MAX_DATUMS_PER_CALL])
            try:
                self.client.put_metric_data(Namespace=self.namespace, MetricData=chunk)
            except (BotoCoreError, ClientError) as error:
                log.warning("queue metrics: CloudWatch did not take this round, dropped: %r", error)
                return


def compact_line(namespace: str, datums: Sequence[Datum]) -> str:
    """One round as one line: ``queue metrics <namespace>: Backlog{Queue=default}=12 ...``."""
    values = []
    for datum in datums:
        dimensions = ",".join(f"{d['Name']}={d['Value']}" for d in datum["Dimensions"])
        values.append(f"{datum['MetricName']}{{{dimensions}}}={datum['Value']:g}")
    return f"queue metrics {namespace} (no AWS region: not sent): {' '.join(values)}"


def metrics_sink(
    namespace: str, write: Callable[[str], None], environ: Mapping[str, str] | None = None
) -> Sink:
    """PutMetricData in the task's region; without a region, a compact line through ``write``."""
    region = aws_region(environ)
    if region is None:
        log.info("queue metrics: no AWS region set, writing them to stdout, not to CloudWatch")
        return lambda datums: write(compact_line(namespace, datums))
    return PutMetricDataSink(namespace, region)
