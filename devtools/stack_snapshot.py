"""What the repository's stacks render, reduced to what decides whether ``pulumi up`` leaves a
deployed resource alone, and the check that a refactor still does.

A deployed stack's state knows each resource by its URN (stack, project, the types of its
parents, its own type and name). ``pulumi up`` replaces a resource whose URN it no longer finds
(a delete and a create) unless the resource names the old URN in its ``aliases`` option, and
updates one whose inputs changed. So the snapshot keeps, per stack and per URN: a hash of the
resolved inputs, of the options the program sets (``ignore_changes``, custom timeouts) and of the
URNs it depends on. ``compare`` maps each resource rendered now to its recorded URN (its own, or
one of its aliases) and lists every difference.

The snapshot is checked in as ``tests/rendered_stacks.json`` (``tests/test_infra_adoption.py``
compares against it). After a deliberate change to what a stack deploys, rewrite it and review
its diff: ``python -m devtools.stack_snapshot --write``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.render import DEFAULT_REGION, ROOT, ProgramRun, read_stack_file, run_program

SNAPSHOT = ROOT / "tests" / "rendered_stacks.json"
#: Hex digits kept of each SHA-256: enough to tell two renders apart, short enough to diff.
DIGEST_LENGTH = 16


@dataclass(frozen=True)
class StackSource:
    """A stack to render: its name (part of every URN), region and ``celery-ecs:`` keys."""

    stack: str
    region: str
    config: dict[str, object]


def _stack_file(stack: str) -> StackSource:
    stack_file = read_stack_file(stack)
    return StackSource(stack, stack_file.region or DEFAULT_REGION, stack_file.config)


def _eventbridge() -> StackSource:
    # The production file on EventBridge, its first pool on Fargate Spot: the branches neither
    # stack file takes (the enqueue task and rules, a Spot capacity provider strategy).
    prod = _stack_file("prod")
    pools = prod.config["workers"]
    assert isinstance(pools, list), "Pulumi.prod.yaml: workers is a list"
    workers = [dict(pool) for pool in pools]
    workers[0]["fargateSpot"] = True
    config = {**prod.config, "scheduler": "eventbridge", "workers": workers}
    return StackSource("eventbridge", prod.region, config)


#: The stacks the snapshot holds: only ``aws:region`` set, the two stack files, and EventBridge.
STACKS: dict[str, Callable[[], StackSource]] = {
    "defaults": lambda: StackSource("defaults", DEFAULT_REGION, {}),
    "dev": lambda: _stack_file("dev"),
    "prod": lambda: _stack_file("prod"),
    "eventbridge": _eventbridge,
}


def render(name: str, *, transformations: Sequence[Any] = ()) -> ProgramRun:
    """Run the program for the stack ``name`` of ``STACKS`` as ``pulumi up`` does: in the project
    directory (the image's build context is ``.``)."""
    source = STACKS[name]()
    with contextlib.chdir(ROOT):
        return run_program(
            source.config,
            stack=source.stack,
            region=source.region,
            project_root=ROOT,
            transformations=transformations,
        )


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


def snapshot(
    run: ProgramRun, known_as: Mapping[str, str] | None = None
) -> dict[str, dict[str, object]]:
    """Recorded URN -> what ``up`` compares of the resource, for each resource of ``run``.

    ``known_as``: current URN -> the URN a deployed stack knows the resource by (default: its
    own). Dependencies are recorded by those URNs too, so a dependency that moved under another
    parent, with its alias, changes nothing here.
    """
    recorded = {resource.urn: resource.urn for resource in run.resources}
    recorded.update(known_as or {})
    entries: dict[str, dict[str, object]] = {}
    for resource in run.resources:
        options = {
            "ignore_changes": run.ignore_changes.get((resource.type, resource.name)),
            "custom_timeouts": run.custom_timeouts.get(resource.name) if resource.custom else None,
        }
        dependencies = sorted(recorded.get(dep, dep) for dep in resource.dependencies)
        entries[recorded[resource.urn]] = {
            "custom": resource.custom,
            "inputs": _digest([resource.inputs, sorted(resource.secret_inputs)]),
            "options": _digest(options),
            "dependencies": _digest(dependencies),
        }
    return entries


def adoption(
    recorded: Mapping[str, Mapping[str, object]], run: ProgramRun
) -> tuple[dict[str, str], list[str]]:
    """Which deployed resource each resource of ``run`` is (current URN -> the URN the deployed
    stack knows it by: its own, or an alias to it), and the resources ``up`` would create."""
    adopted: dict[str, str] = {}
    created: list[str] = []
    for resource in run.resources:
        if resource.urn in recorded:
            adopted[resource.urn] = resource.urn
            continue
        known = [alias for alias in resource.aliases if alias in recorded]
        if len(known) > 1:
            created.append(f"{resource.urn}: aliases {known} name several deployed resources")
        elif known:
            adopted[resource.urn] = known[0]
        elif resource.custom:
            created.append(f"{resource.urn}: new (would be created)")
    return adopted, created


def compare(recorded: Mapping[str, Mapping[str, object]], run: ProgramRun) -> list[str]:
    """What ``pulumi up`` of ``run`` would do to a stack deployed as ``recorded``, beyond
    nothing: one line per resource created, deleted (or replaced under a new URN) or changed.
    A new component resource is no difference: it exists only in Pulumi's state."""
    adopted, problems = adoption(recorded, run)
    claimed: dict[str, list[str]] = {}
    for urn, old in adopted.items():
        claimed.setdefault(old, []).append(urn)
    problems += [
        f"{old}: adopted by several resources {urns}"
        for old, urns in claimed.items()
        if len(urns) > 1
    ]
    problems += [
        f"{old}: no resource has this URN or an alias to it (would be deleted)"
        for old in sorted(set(recorded) - set(claimed))
    ]
    current = snapshot(run, adopted)
    for old, entry in sorted(current.items()):
        before = recorded.get(old)
        if before is None:
            continue  # new: reported above, unless a component (nothing in AWS)
        changed = [key for key in ("custom", "inputs", "options", "dependencies")
                   if entry[key] != before[key]]  # fmt: skip
        if changed:
            new = next(urn for urn, known in adopted.items() if known == old)
            problems.append(f"{new} (deployed as {old}): {', '.join(changed)} changed")
    return problems


def read_snapshot(path: Path = SNAPSHOT) -> dict[str, dict[str, dict[str, object]]]:
    data: dict[str, dict[str, dict[str, object]]] = json.loads(path.read_text())
    return data


def write_snapshot(path: Path = SNAPSHOT, stacks: Sequence[str] = tuple(STACKS)) -> None:
    """Record what the stacks render now, each resource under the URN the recorded stack knows
    it by (an alias keeps its deployed URN, so the record still proves the alias adopts it)."""
    recorded = read_snapshot(path) if path.exists() else {}
    data = {}
    for name in stacks:
        run = render(name)
        adopted, _ = adoption(recorded.get(name, {}), run)
        data[name] = snapshot(run, known_as=adopted)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main(argv: Sequence[str]) -> int:
    """``python -m devtools.stack_snapshot [--write]``: list what ``up`` would do to stacks
    deployed as the snapshot records them, or (``--write``) record what they render now, under
    the URNs the recorded stacks know (a change of inputs is accepted, an alias kept)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.stack_snapshot")
    parser.add_argument("--write", action="store_true", help=f"rewrite {SNAPSHOT.name}")
    arguments = parser.parse_args(argv)
    if arguments.write:
        write_snapshot()
        return 0
    recorded = read_snapshot()
    failed = False
    for name in STACKS:
        problems = compare(recorded[name], render(name))
        failed = failed or bool(problems)
        print(f"{name}: {'up changes nothing' if not problems else ''}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
