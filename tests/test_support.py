"""The tests' own helpers (tests/support.py): a shared program run is the run the program
renders, made once per test process, and no test can change what another one reads; make plan
shares the stack runs it renders the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from devtools import docs, render, stack_snapshot
from devtools.plan import report
from policy.invariants import aws_types
from tests.support import ROOT, fixture_build_context, shared_run, shared_stack_runs

#: A config no other test renders, so the first call here is the first in this process.
CONFIG: dict[str, object] = {"workers": [{"name": "shared", "queues": ["default", "long"]}]}
#: A stack only the first test renders.
ONCE = "rendered-once"
#: A stack only the last test renders, in the project directory.
IN_PROJECT = "rendered-in-project"


def _counting(
    monkeypatch: pytest.MonkeyPatch, *, rendering: bool = True
) -> list[dict[str, Any]]:
    """Record every program run from now on (the config of each). ``rendering=False``: record
    them without running the program (each gets an empty run), where only the count matters."""
    runs: list[dict[str, Any]] = []
    original = render.run_program

    def counted(config: Any = None, **options: Any) -> render.ProgramRun:
        runs.append(dict(config or {}))
        return original(config, **options) if rendering else render.ProgramRun(resources=[])

    monkeypatch.setattr(render, "run_program", counted)
    return runs


def _resources(run: render.ProgramRun) -> list[tuple[str, str, dict[str, Any]]]:
    return sorted(((r.type, r.name, r.inputs) for r in run.resources), key=lambda r: r[:2])


def test_a_shared_run_is_the_programs_run_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _counting(monkeypatch)
    first, second = shared_run(CONFIG, stack=ONCE), shared_run(CONFIG, stack=ONCE)
    assert runs == [CONFIG]
    fresh = render.run_program(CONFIG, stack=ONCE, project_root=fixture_build_context())
    assert _resources(first) == _resources(second) == _resources(fresh)
    assert first.outputs == second.outputs == fresh.outputs
    assert first.secret_outputs == fresh.secret_outputs
    # Another stack, region or config is another run: counted, not rendered (the count is what
    # this part checks; rendering them cost half a CPU-second).
    others = _counting(monkeypatch, rendering=False)
    shared_run(CONFIG, stack=ONCE, region="eu-west-1")
    shared_run({**CONFIG, "containerInsights": True}, stack=ONCE)
    shared_run(CONFIG, stack=f"{ONCE}-elsewhere")
    shared_run(CONFIG, stack=ONCE)
    assert others == [CONFIG, {**CONFIG, "containerInsights": True}, CONFIG]


def test_what_one_test_changes_in_a_shared_run_the_next_does_not_see() -> None:
    run = shared_run(CONFIG, stack="shared")
    web = run.named(aws_types.ECS_TASK_DEFINITION, "web-task")
    expected = dict(web.inputs)
    web.inputs["cpu"] = "16384"
    web.state.clear()
    run.resources.clear()
    run.outputs.clear()
    again = shared_run(CONFIG, stack="shared")
    assert again.resources and again.outputs
    reread = again.named(aws_types.ECS_TASK_DEFINITION, "web-task")
    assert reread.inputs == expected and reread.state


def test_a_run_that_fails_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _counting(monkeypatch)
    for _ in range(2):
        with pytest.raises(pulumi.RunError, match=r"^invalid stack config: typo"):
            shared_run({"typo": "1"}, stack="shared")
    assert len(runs) == 2


def test_the_tools_render_a_stack_once_as_pulumi_up_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside ``shared_stack_runs``, make plan, the stack snapshot and the docs' generator render
    a stack config once per test process, in the project directory as ``pulumi up`` runs it, each
    call getting a run of its own; a render with transformations of its own runs afresh. Outside
    it, they render as they did."""
    original = render.run_program
    renders: list[tuple[dict[str, Any], object, Path, object]] = []

    def recorded(config: Any = None, **options: Any) -> render.ProgramRun:
        transformations = options.get("transformations")
        renders.append((dict(config), options["project_root"], Path.cwd(), transformations))
        return render.ProgramRun(resources=[], outputs={"rendered": len(renders)})

    def unchanged(args: pulumi.ResourceTransformationArgs) -> None:
        return None

    monkeypatch.setattr(render, "run_program", recorded)
    monkeypatch.chdir(ROOT)  # where make plan runs
    with shared_stack_runs():
        tools = (report, stack_snapshot, docs)
        runs = [tool.run_program(CONFIG, stack=IN_PROJECT) for tool in tools]
        stack_snapshot.run_program(CONFIG, stack=IN_PROJECT, transformations=[unchanged])
    assert renders == [(CONFIG, ROOT, ROOT, None), (CONFIG, ROOT, ROOT, [unchanged])]
    assert [run.outputs for run in runs] == [{"rendered": 1}] * 3
    assert runs[0] is not runs[1] is not runs[2]
    assert report.run_program is stack_snapshot.run_program is docs.run_program is original
