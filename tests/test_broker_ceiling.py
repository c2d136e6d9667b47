"""The broker's ceiling (devtools/plan/broker_ceiling.py): AWS's node figures, the model's
arithmetic, the bench's figures file, what a queued message weighs on a real redis-server, and
the how-to's table current."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from devtools.plan import broker_ceiling
from devtools.plan.broker_ceiling import (
    RESULT_EXPIRES,
    Figures,
    TaskCost,
    backlog,
    burst_hours,
    ceiling,
    load_figures,
    parse_figures,
    thread_vcpus,
)
from devtools.plan.broker_nodes import NODE_TYPES, node_type
from devtools.plan.cost import price_table

FIGURES = load_figures()


def node(name: str) -> broker_ceiling.NodeType:
    found = node_type(name)
    assert found is not None, name
    return found


def test_every_node_type_the_price_table_holds_has_aws_figures() -> None:
    prices = price_table("us-east-1")
    assert prices is not None
    for engine, nodes in prices["elasticacheNodeHour"].items():
        assert set(nodes) == set(NODE_TYPES), engine


def test_the_data_memory_is_maxmemory_less_the_reserved_quarter() -> None:
    # AWS's example: a cache.t3.micro in the default parameter group reports
    # maxmemory:402653184 (0.375 GiB) in INFO memory (knowledge center, "available memory").
    assert node("cache.t3.micro").data_bytes == 402_653_184
    assert node("cache.t4g.micro").data_bytes == 402_653_184
    assert node("cache.m6g.large").data_bytes == 6_854_542_746 * 3 // 4
    # Without a sourced maxmemory, the node table's memory stands in for it.
    assert node("cache.m7g.large").maxmemory_bytes is None
    assert node("cache.m7g.large").data_bytes == round(6.38 * 2**30) * 3 // 4


def test_a_burstable_node_sustains_its_baseline_and_bursts_to_one_vcpu() -> None:
    micro, small, large = node("cache.t4g.micro"), node("cache.t3.small"), node("cache.m7g.large")
    assert (micro.burstable, small.burstable, large.burstable) == (True, True, False)
    assert thread_vcpus(micro) == pytest.approx(0.2)  # 10 % of each of 2 vCPUs
    assert thread_vcpus(small) == pytest.approx(0.4)
    assert thread_vcpus(micro, sustained=False) == thread_vcpus(large) == 1.0
    # 288 credits, one spent a minute at a whole vCPU, 12 earned an hour: 288 / 48 h.
    assert burst_hours(micro) == pytest.approx(6.0)
    assert burst_hours(large) is None


def test_the_ceiling_is_the_least_of_cpu_network_and_memory() -> None:
    micro = node("cache.t4g.micro")
    cost = TaskCost(commands=9.0, cpu_us=200.0, bytes=4000.0)
    found = ceiling(micro, cost)
    assert found.cpu == pytest.approx(0.2 / 200e-6)  # 1,000 tasks/s
    assert found.network == pytest.approx(0.064e9 / 8 / 4000)  # 2,000 tasks/s
    assert (found.memory, found.rate, found.bound) == (None, found.cpu, "CPU")
    heavy = ceiling(micro, replace(cost, bytes=40_000.0))
    assert (heavy.rate, heavy.bound) == (heavy.network, "network")
    kept = ceiling(micro, cost, result_bytes=300, result_expires=RESULT_EXPIRES)
    assert kept.memory == pytest.approx(402_653_184 / (300 * RESULT_EXPIRES))
    assert (kept.rate, kept.bound) == (kept.memory, "memory")


def test_the_backlog_is_the_data_memory_over_a_queued_message() -> None:
    micro = node("cache.t4g.micro")
    assert backlog(micro, FIGURES) == int(402_653_184 // FIGURES.queued_bytes_per_message)


def test_the_bench_figures_file_holds_every_field() -> None:
    data = json.loads(broker_ceiling.FIGURES.read_text())
    figures = parse_figures(data)
    assert isinstance(figures, Figures)
    for kind in ("results", "noResult"):
        for phase in ("publish", "consume"):
            assert set(data[kind][phase]) == set(broker_ceiling.PHASE_FIELDS), (kind, phase)
    # A task's cost at the broker: its publish and its consumption together.
    publish, consume = data["results"]["publish"], data["results"]["consume"]
    assert figures.results.cpu_us == pytest.approx(publish["cpu_us"] + consume["cpu_us"])
    assert figures.results.commands == pytest.approx(publish["commands"] + consume["commands"])
    del data["noResult"]["consume"]["cpu_us"]
    del data["resultBytes"]
    with pytest.raises(ValueError, match=r"resultBytes, noResult\.consume\.cpu_us"):
        parse_figures(data)


def test_a_queued_message_weighs_what_the_figures_say(redis_url: str) -> None:
    """MEMORY USAGE of a list of messages of the measured size, on a real redis-server: the
    message plus Redis's per-element overhead, as the backlog counts it."""
    store = redis.Redis.from_url(redis_url)
    count = 2000
    message = b"x" * FIGURES.message_bytes
    for start in range(0, count, 500):
        store.lpush("queue", *[message] * min(500, count - start))
    weighed = int(store.memory_usage("queue", samples=0) or 0) / count
    assert weighed > FIGURES.message_bytes  # a list element costs more than its bytes
    assert weighed == pytest.approx(FIGURES.queued_bytes_per_message, rel=0.05)


def test_the_how_to_table_is_current(tmp_path: Path) -> None:
    assert broker_ceiling.CEILING_BLOCK.content() == broker_ceiling.markdown_table(FIGURES), (
        "run `python -m devtools.docs` (make docs)"
    )
