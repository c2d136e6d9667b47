"""The broker's ceiling: tasks a second one ElastiCache node carries, and the backlog it holds.

Pure arithmetic (standard library only) over two inputs: what AWS states of the node type
(``devtools.plan.broker_nodes``) and what one task costs the broker, measured by ``make bench``
(``bench.broker_figures`` writes ``bench/figures.json``; the plan only reads it). A task's cost
is its publish (the app's producer) plus its consumption (the worker), with the result stored
(as the web sends) or not (as beat sends).

Tasks a second = the least of:

- CPU: Redis runs commands on one thread, so at most one vCPU's worth of CPU serves them; on a
  burstable node (T4g, T3), sustained, the node's baseline (vCPUs x baseline per vCPU, which
  the credits earned pay for), at most one vCPU. Divided by redis-server's CPU per task,
  measured here, times ``MACHINE_TO_NODE_CPU``.
- Network: the node's baseline bandwidth over the bytes redis-server reads and writes per task.
- Memory, with results: a stored result is kept ``CELERY_RESULT_EXPIRES`` seconds (86400 by
  default), so a sustained rate holds rate x expiry results; under ``noeviction`` writes are
  refused once they fill ``maxmemory`` (less the reserved 25 %).

The backlog: queued messages of the measured size (the message plus Redis's per-element
overhead of a list, both from ``MEMORY USAGE``) that fit in that memory before publishes are
refused.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery_ecs import settings
from devtools.docblocks import DOCS, GeneratedBlock
from devtools.plan.broker_nodes import NODE_TYPES, RESERVED_MEMORY_PERCENT, NodeType, node_type

FIGURES = Path(__file__).resolve().parents[2] / "bench" / "figures.json"
#: The table of every node type's ceiling in the how-to "When one broker is not enough".
CEILING_BLOCK = GeneratedBlock(
    page=DOCS / "how-to" / "broker-capacity.md",
    begin="<!-- ceiling: devtools/plan/broker_ceiling.py, from bench/figures.json -->",
    end="<!-- end of ceiling -->",
)
#: Width of the plan's text (``devtools.plan.cost.WIDTH``).
WIDTH = 100
#: One vCPU of a node does this many times the Redis work a CPU of the machine the bench ran
#: on does. An assumption, not a measurement: no ElastiCache node is reachable from here. 1.0
#: says a Graviton2/3 or Xeon vCPU runs redis-server's single thread about as fast as the
#: bench's x86_64 CPU; the bench's redis-server also runs without TLS, which the broker
#: requires (TLS costs the thread more per byte): read the CPU ceiling as an upper bound.
MACHINE_TO_NODE_CPU = 1.0
#: What the bench's file must hold (``bench.broker_figures``).
REQUIRED_FIELDS = ("measured", "machine", "results", "noResult", "messageBytes",
                   "queuedBytesPerMessage", "resultBytes")  # fmt: skip
PHASE_FIELDS = ("commands", "cpu_us", "bytes_in", "bytes_out")
#: Seconds a stored result is kept: the app's default (``CELERY_RESULT_EXPIRES``); no stack
#: config key sets another.
RESULT_EXPIRES = int(settings.ENV_VARS[settings.RESULT_EXPIRES][0])


@dataclass(frozen=True)
class TaskCost:
    """What one task costs redis-server, its publish and its consumption together."""

    commands: float
    cpu_us: float
    bytes: float


@dataclass(frozen=True)
class Figures:
    results: TaskCost
    no_result: TaskCost
    #: A no-op task's message as the app publishes it, and what it weighs queued.
    message_bytes: int
    queued_bytes_per_message: float
    #: ``MEMORY USAGE`` of one stored result.
    result_bytes: int
    measured: str
    machine: str
    note: str = ""


def _task_cost(phases: Mapping[str, Mapping[str, float]]) -> TaskCost:
    publish, consume = phases["publish"], phases["consume"]
    return TaskCost(
        commands=publish["commands"] + consume["commands"],
        cpu_us=publish["cpu_us"] + consume["cpu_us"],
        bytes=sum(phase["bytes_in"] + phase["bytes_out"] for phase in (publish, consume)),
    )


def parse_figures(data: Mapping[str, Any]) -> Figures:
    """The bench's figures; a missing field raises ``ValueError`` naming it."""
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    missing += [f"{kind}.{phase}.{name}" for kind in ("results", "noResult") if kind in data
                for phase in ("publish", "consume")
                for name in PHASE_FIELDS if name not in data[kind].get(phase, {})]  # fmt: skip
    if missing:
        raise ValueError(f"bench figures: missing {', '.join(missing)} (make bench writes them)")
    return Figures(
        results=_task_cost(data["results"]),
        no_result=_task_cost(data["noResult"]),
        message_bytes=int(data["messageBytes"]),
        queued_bytes_per_message=float(data["queuedBytesPerMessage"]),
        result_bytes=int(data["resultBytes"]),
        measured=str(data["measured"]),
        machine=str(data["machine"]),
        note=str(data.get("note", "")),
    )


def load_figures(path: Path = FIGURES) -> Figures:
    return parse_figures(json.loads(path.read_text()))


def thread_vcpus(node: NodeType, *, sustained: bool = True) -> float:
    """vCPUs' worth of CPU Redis's command thread gets: one, or on a burstable node, sustained,
    the node's baseline (if below one)."""
    if node.baseline_per_vcpu is not None and sustained:
        return min(1.0, node.vcpus * node.baseline_per_vcpu)
    return 1.0


@dataclass(frozen=True)
class Ceiling:
    """Tasks a second one node carries, by each limit; ``rate`` is the least."""

    node: NodeType
    cost: TaskCost
    cpu: float
    network: float
    #: With results: the rate whose results, kept ``RESULT_EXPIRES`` s, fill the memory.
    memory: float | None

    @property
    def rate(self) -> float:
        return min(r for r in (self.cpu, self.network, self.memory) if r is not None)

    @property
    def bound(self) -> str:
        """Which limit decides: "CPU", "network" or "memory"."""
        limits = {"CPU": self.cpu, "network": self.network, "memory": self.memory}
        return min((r, name) for name, r in limits.items() if r is not None)[1]


def ceiling(
    node: NodeType, cost: TaskCost, *, result_bytes: int | None = None,
    result_expires: int = RESULT_EXPIRES, sustained: bool = True,
) -> Ceiling:
    """Tasks a second ``node`` carries at ``cost`` a task; ``result_bytes``: each task stores a
    result of that size, kept ``result_expires`` seconds."""
    cpu_seconds = cost.cpu_us / 1e6 / MACHINE_TO_NODE_CPU
    network_bytes = node.baseline_gbps * 1e9 / 8
    memory = None
    if result_bytes:
        memory = node.data_bytes / (result_bytes * result_expires)
    return Ceiling(node, cost, thread_vcpus(node, sustained=sustained) / cpu_seconds,
                   network_bytes / cost.bytes, memory)  # fmt: skip


def backlog(node: NodeType, figures: Figures) -> int:
    """Queued messages that fit before ``noeviction`` refuses publishes (nothing else held)."""
    return int(node.data_bytes // figures.queued_bytes_per_message)


def burst_hours(node: NodeType) -> float | None:
    """Hours a burstable node's full credit balance lasts with Redis's thread at one whole vCPU
    (credits spent at one a minute, earned at ``credits_per_hour``); None: not burstable."""
    if node.credits_per_hour is None or node.max_credits is None:
        return None
    net_per_hour = 60 - node.credits_per_hour
    return node.max_credits / net_per_hour


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def describe(node: NodeType) -> str:
    memory = f"maxmemory {_mib(node.maxmemory_bytes)}" if node.maxmemory_bytes else (
        f"{node.memory_gib:g} GiB (maxmemory not in AWS's parameter table read)"
    )
    cpu = (f"burstable, {node.baseline_per_vcpu * 100:g} % of each of {node.vcpus} vCPUs "
           "sustained"
           if node.baseline_per_vcpu is not None else f"{node.vcpus} vCPUs")  # fmt: skip
    return f"{node.name} ({cpu}; {memory}, {RESERVED_MEMORY_PERCENT} % reserved; network " \
           f"{node.baseline_gbps:g} Gbps baseline)"


def plan_lines(node_name: str, figures: Figures) -> list[str]:
    """The plan's broker ceiling for the stack's node type, as text lines of at most WIDTH."""
    sentences = _plan_sentences(node_name, figures)
    return [textwrap.fill(text, WIDTH, initial_indent="" if index == 0 else "  ",
                          subsequent_indent="    " if index else "  ", break_on_hyphens=False)
            for index, text in enumerate(sentences)]  # fmt: skip


def _plan_sentences(node_name: str, figures: Figures) -> list[str]:
    node = node_type(node_name)
    if node is None:
        return [f"{node_name}: not in devtools/plan/broker_nodes.py's table of AWS's figures; no "
                "ceiling computed."]  # fmt: skip
    with_results = ceiling(node, figures.results, result_bytes=figures.result_bytes)
    without = ceiling(node, figures.no_result)
    lines = [describe(node) + ":"]
    for label, found in (("results stored (as the web sends)", with_results),
                         ("no result (as beat sends)", without)):  # fmt: skip
        limits = (f"CPU {_rate(found.cpu)} (redis-server {found.cost.cpu_us:.0f} us, "
                  f"{found.cost.commands:.1f} commands a task), network "
                  f"{_rate(found.network)} ({found.cost.bytes:,.0f} bytes a task)")  # fmt: skip
        if found.memory is not None:
            limits += (f", memory {_rate(found.memory)} (results of "
                       f"{figures.result_bytes} bytes kept {RESULT_EXPIRES:,} s)")
        lines.append(f"{label}: about {_rate(found.rate)} tasks/s sustained, "
                     f"{found.bound}-bound; by limit: {limits}")  # fmt: skip
    hours = burst_hours(node)
    if hours is not None:
        burst = ceiling(node, figures.no_result, sustained=False)
        lines.append(f"burst: up to {_rate(burst.cpu)} tasks/s (no result) by CPU for about "
                     f"{hours:.0f} h from a full credit balance ({node.max_credits} credits)")
    lines.append(
        f"backlog at maxmemory: {backlog(node, figures):,} queued messages of "
        f"{figures.message_bytes} bytes ({figures.queued_bytes_per_message:,.0f} bytes each "
        f"queued), then publishes are refused (noeviction)"
    )
    lines.append(
        f"from bench/figures.json ({figures.measured}, {figures.machine}); machine-to-node "
        f"CPU factor {MACHINE_TO_NODE_CPU:g}, assumed; no TLS in the bench: an upper bound"
    )
    return lines


def markdown_table(figures: Figures) -> str:
    """Every node type of ``devtools.plan.broker_nodes``: its sustained ceiling with and without
    results, what bounds it, and its backlog at maxmemory (the how-to's table)."""
    rows = [
        "| Node type | Sustained CPU for Redis's thread | Data memory | Results stored: tasks/s "
        "(bound) | No result: tasks/s (bound) | Backlog at maxmemory |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for node in NODE_TYPES.values():
        with_results = ceiling(node, figures.results, result_bytes=figures.result_bytes)
        without = ceiling(node, figures.no_result)
        memory = _mib(node.data_bytes) + ("" if node.maxmemory_bytes else " *")
        rows.append(
            f"| `{node.name}` | {thread_vcpus(node):g} vCPU | {memory} | "
            f"{_rate(with_results.rate)} ({with_results.bound}) | "
            f"{_rate(without.rate)} ({without.bound}) | {backlog(node, figures):,} |"
        )
    return "\n".join(rows) + "\n"
