"""Redis commands a worker costs, counted as ``bench.worker_budget`` counts them.

``INFO commandstats`` counts every command the server ran, those a Lua script runs with
``redis.call`` included (redis.io, "INFO" command, ``commandstats`` section; a script's own
``EVALSHA`` is one more). The delta over a run of tasks, minus the commands the bench itself
sends to publish, release and poll (``BENCH_COMMANDS``), is what the worker costs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import redis

#: Commands the bench itself sends (publishing, releasing, polling): not the worker's.
BENCH_COMMANDS = frozenset({"lpush", "rename", "llen", "hlen", "smembers", "info", "config",
                            "ping"})  # fmt: skip


def command_calls(
    admin: redis.Redis, excluded: frozenset[str] = BENCH_COMMANDS
) -> Counter[str]:
    """Calls so far of every command but the bench's (``excluded``), by name (a subcommand
    counts as its command: ``client|setname`` as ``client``)."""
    calls: Counter[str] = Counter()
    for key, value in admin.info("commandstats").items():
        name = key.removeprefix("cmdstat_").split("|")[0]
        if name not in excluded:
            calls[name] += int(value["calls"])
    return calls


def worker_commands(admin: redis.Redis) -> int:
    """Calls so far of every command but the bench's."""
    return sum(command_calls(admin).values())


def per_task(before: Mapping[str, int], after: Mapping[str, int], tasks: int) -> dict[str, float]:
    """Commands per task by name between two ``command_calls``, the most frequent first."""
    delta = Counter(after)
    delta.subtract(before)
    return {name: calls / tasks for name, calls in delta.most_common() if calls > 0}


def breakdown(commands: Mapping[str, float]) -> str:
    """``per_task``'s figures as lines: name, commands per task; then the total."""
    lines = [f"  {name:<10} {count:6.3f}" for name, count in commands.items()]
    return "\n".join([*lines, f"  {'total':<10} {sum(commands.values()):6.3f}"])
