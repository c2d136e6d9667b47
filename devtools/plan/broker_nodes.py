"""What AWS states of each ElastiCache node type the price table holds: memory, ``maxmemory``,
vCPUs, network bandwidth, and the CPU baseline of the burstable ones. Standard library only.

Sources, each read on 2026-12-08 (the figures below were transcribed from them, none entered
from memory):

- NODE_TABLE: Amazon ElastiCache User Guide, "Supported node types"
  (https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/CacheNodes.SupportedTypes.html), the
  current page's tables "Current Generation (Valkey)" and "(Redis OSS)": baseline and burst
  bandwidth (Gbps) and memory (GiB) per node type; the same figures for every type here in
  both tables. Its earlier copy in awsdocs/amazon-elasticache-docs
  (doc_source/redis/CacheNodes.SupportedTypes.md, commit 7ed0a8a of 2023-06-15, before
  m7g/r7g) agrees for the types it lists.
- BURSTABLE_TABLE: the same page, "Burstable Performance Instances": T4g and T3 nodes "provide a
  baseline level of CPU performance with the ability to burst CPU usage at any time until the
  accrued credits are exhausted"; they "are configured as standard and suited for workloads
  with an average CPU utilization that is consistently below the baseline performance"; when
  credits run low, "performance is gradually lowered to the baseline performance level". Its
  table: credits earned an hour, the most that can be accrued (24 hours' worth), vCPUs and the
  baseline per vCPU ("multiplying the vCPU percentage by the number of vCPUs" gives the node's).
  A CPU credit is "the performance of a full CPU core for one minute".
- MAXMEMORY_TABLE: the ElastiCache User Guide, "Redis OSS node-type specific parameters"
  (ParameterGroups.Redis, awsdocs/amazon-elasticache-docs doc_source/redis/
  ParameterGroups.Redis.md, commit 7ed0a8a): ``maxmemory`` in bytes, "the maximum number of
  bytes available to you for use, data and other uses, on the node", not modifiable. That copy
  predates m7g and r7g: their ``maxmemory`` is not sourced here (``maxmemory_bytes`` None), and
  the memory column of the node table stands in for it, converted from GiB (for m6g.large and
  r6g.large, whose memory is the same 6.38 and 13.07 GiB, the two agree within 0.1 %).
- RESERVED_MEMORY_PERCENT: the same page's ``reserved-memory-percent`` ("Default: 25", the
  percent of ``maxmemory`` reserved for nondata use), and "Managing reserved memory"
  (redis-memory-management): 25 % is the default and recommended; for burstable micro and small
  types near ``maxmemory`` AWS recommends up to 50 % and 30 %. The broker's parameter group
  (``infra.broker``) sets only ``maxmemory-policy``, so the family's default, 25 %, applies.
  AWS's knowledge-center article "available memory elasticache redis node" shows it: a
  cache.t3.micro (0.5 GiB) reports ``maxmemory:402653184`` (0.375 GiB) in ``INFO memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
#: Percent of ``maxmemory`` ElastiCache reserves for nondata use by default (see above).
RESERVED_MEMORY_PERCENT = 25


@dataclass(frozen=True)
class NodeType:
    name: str
    vcpus: int
    memory_gib: float
    #: ``maxmemory`` of AWS's node-type parameter table; None: not in the copy read.
    maxmemory_bytes: int | None
    baseline_gbps: float
    burst_gbps: float | None
    #: Burstable (T4g, T3): the baseline per vCPU as a fraction of a full core, credits earned
    #: an hour and the most a node accrues. None: a fixed-performance node.
    baseline_per_vcpu: float | None = None
    credits_per_hour: int | None = None
    max_credits: int | None = None

    @property
    def burstable(self) -> bool:
        return self.baseline_per_vcpu is not None

    @property
    def data_bytes(self) -> int:
        """Bytes Redis may hold before ``noeviction`` refuses writes: ``maxmemory`` less
        ``reserved-memory-percent`` (the node table's memory where ``maxmemory`` is unsourced)."""
        total = self.maxmemory_bytes if self.maxmemory_bytes is not None else round(
            self.memory_gib * GIB
        )
        return total * (100 - RESERVED_MEMORY_PERCENT) // 100


#: name -> (vCPUs, memory GiB, baseline Gbps, burst Gbps): NODE_TABLE (vCPUs: BURSTABLE_TABLE
#: for T types; every .large type of the EC2 families these run on has 2).
_NODE_TABLE: dict[str, tuple[int, float, float, float | None]] = {
    "cache.t4g.micro": (2, 0.5, 0.064, 5.0),
    "cache.t4g.small": (2, 1.37, 0.128, 5.0),
    "cache.t4g.medium": (2, 3.09, 0.256, 5.0),
    "cache.t3.micro": (2, 0.5, 0.064, 5.0),
    "cache.t3.small": (2, 1.37, 0.128, 5.0),
    "cache.t3.medium": (2, 3.09, 0.256, 5.0),
    "cache.m6g.large": (2, 6.38, 0.75, 10.0),
    "cache.m7g.large": (2, 6.38, 0.937, 12.5),
    "cache.r6g.large": (2, 13.07, 0.75, 10.0),
    "cache.r7g.large": (2, 13.07, 0.937, 12.5),
}
#: name -> (baseline per vCPU, credits an hour, most credits accrued): BURSTABLE_TABLE.
_BURSTABLE_TABLE: dict[str, tuple[float, int, int]] = {
    "cache.t4g.micro": (0.10, 12, 288),
    "cache.t4g.small": (0.20, 24, 576),
    "cache.t4g.medium": (0.20, 24, 576),
    "cache.t3.micro": (0.10, 12, 288),
    "cache.t3.small": (0.20, 24, 576),
    "cache.t3.medium": (0.20, 24, 576),
}
#: name -> maxmemory bytes: MAXMEMORY_TABLE.
_MAXMEMORY_TABLE: dict[str, int] = {
    "cache.t4g.micro": 536870912,
    "cache.t4g.small": 1471026299,
    "cache.t4g.medium": 3317862236,
    "cache.t3.micro": 536870912,
    "cache.t3.small": 1471026299,
    "cache.t3.medium": 3317862236,
    "cache.m6g.large": 6854542746,
    "cache.r6g.large": 14037181030,
}


def _node(name: str) -> NodeType:
    vcpus, memory, baseline, burst = _NODE_TABLE[name]
    cpu = _BURSTABLE_TABLE.get(name)
    return NodeType(
        name=name, vcpus=vcpus, memory_gib=memory, maxmemory_bytes=_MAXMEMORY_TABLE.get(name),
        baseline_gbps=baseline, burst_gbps=burst,
        baseline_per_vcpu=cpu[0] if cpu else None,
        credits_per_hour=cpu[1] if cpu else None,
        max_credits=cpu[2] if cpu else None,
    )  # fmt: skip


NODE_TYPES: dict[str, NodeType] = {name: _node(name) for name in _NODE_TABLE}


def node_type(name: str) -> NodeType | None:
    """What AWS states of ``name``; None when this table does not hold it."""
    return NODE_TYPES.get(name)
