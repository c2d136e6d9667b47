"""The metric lines of the local stack's containers, shown the way a person reads them.

Two kinds of line carry metrics on the twin, where no task has an AWS region:

- beat's ``BeatHeartbeat``, an embedded-metric-format (EMF) document on one line
  (``{"_aws":{"Timestamp":...,"CloudWatchMetrics":[...]},"Service":"beat",...}``,
  ``celery_ecs.metrics.emf_line``; the format: CloudWatch User Guide, "Specification: Embedded
  metric format");
- each worker's queue metrics, which it would send with PutMetricData and writes instead as
  ``queue metrics <namespace> (no AWS region: not sent): Backlog{Queue=default}=0 ...``
  (``celery_ecs.cloudwatch.compact_line``).

Both come every 10 to 30 seconds with the same values most of the time, and the EMF line wraps
over several terminal lines. ``MetricLines`` turns each into one short line, for example
``metrics  queue default: Backlog=3 OldestMessageAge=12.5; pool default: Workers=1``, and hides
a service's line when no value changed since the last one it showed. The containers' own logs
keep every line as written.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass

#: The start of an EMF document as ``json.dumps`` writes it, with or without spaces.
EMF_START = re.compile(r'^\{\s*"_aws"\s*:')
#: ``celery_ecs.cloudwatch.compact_line``: the namespace, then ``Name{Dim=Value,...}=number``
#: tokens.
COMPACT_LINE = re.compile(r"^queue metrics (?P<namespace>\S+) \([^)]*\): (?P<values>.*)$")
COMPACT_VALUE = re.compile(r"^(?P<name>[^{\s]+)\{(?P<dimensions>[^}]*)\}=(?P<value>\S+)$")

#: (dimension name, value) pairs, in the order the line gives them.
Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Value:
    dimensions: Dimensions
    name: str
    value: float


def _number(text: object) -> float | None:
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _emf_values(line: str) -> list[Value] | None:
    try:
        document = json.loads(line)
        directives = document["_aws"]["CloudWatchMetrics"]
        values = []
        for directive in directives:
            for dimension_set in directive["Dimensions"]:
                dimensions = tuple((str(key), str(document[key])) for key in dimension_set)
                for metric in directive["Metrics"]:
                    number = _number(document[metric["Name"]])
                    if number is None:
                        return None
                    values.append(Value(dimensions, str(metric["Name"]), number))
    except (ValueError, TypeError, KeyError):
        return None
    return values or None


def _compact_values(line: str) -> list[Value] | None:
    match = COMPACT_LINE.match(line)
    if match is None:
        return None
    values = []
    for token in match["values"].split():
        part = COMPACT_VALUE.match(token)
        number = _number(part["value"]) if part else None
        if part is None or number is None:
            return None
        pairs = [pair.split("=", 1) for pair in part["dimensions"].split(",") if pair]
        if any(len(pair) != 2 for pair in pairs):
            return None
        values.append(Value(tuple((key, value) for key, value in pairs), part["name"], number))
    return values or None


def metric_values(line: str) -> list[Value] | None:
    """The values a metric line carries, or None when ``line`` is not one (or is malformed:
    then it is shown as it is)."""
    if EMF_START.match(line):
        return _emf_values(line)
    if line.startswith("queue metrics "):
        return _compact_values(line)
    return None


def summarize(values: list[Value]) -> str:
    """One short line: the values grouped by their dimensions, in the line's order."""
    groups: dict[Dimensions, list[str]] = {}
    for value in values:
        groups.setdefault(value.dimensions, []).append(f"{value.name}={value.value:g}")
    parts = []
    for dimensions, shown in groups.items():
        where = " ".join(f"{key.lower()} {name}" for key, name in dimensions)
        parts.append(f"{where}: {' '.join(shown)}" if where else " ".join(shown))
    return "metrics  " + "; ".join(parts)


class MetricLines:
    """Decides how a container's line reaches the terminal: metric lines compact, and only when
    a value changed since the service's last one with the same metrics; every other line (and
    every line with ``raw=True``) as it is. Safe to call from several threads."""

    def __init__(self, raw: bool = False) -> None:
        self.raw = raw
        self._last: dict[tuple[str, tuple[tuple[Dimensions, str], ...]], tuple[float, ...]] = {}
        self._lock = threading.Lock()

    def shown(self, service: str, line: str) -> str | None:
        """The text to print for ``line`` from a task of ``service``; None: print nothing."""
        if self.raw:
            return line
        values = metric_values(line)
        if values is None:
            return line
        # Every worker of a pool publishes the same numbers: one line per service, not per task.
        key = (service, tuple((value.dimensions, value.name) for value in values))
        numbers = tuple(value.value for value in values)
        with self._lock:
            if self._last.get(key) == numbers:
                return None
            self._last[key] = numbers
        return summarize(values)
