"""The tests' own helpers (tests/support.py): a shared program run is the run the program
renders, made once per test process, and no test can change what another one reads; make plan
shares the stack runs it renders the same way."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from devtools import render
from devtools.plan import report
from policy.invariants import aws_types
from tests.support import fixture_build_context, shared_run, shared_stack_runs

#: A config no other test renders, so the first call here is the first in this process.
CONFIG: dict[str, object] = {"workers": [{"name": "shared", "queues": ["default", "long"]}]}
#: A stack only the first test renders.
ONCE = "rendered-once"
#: A stack only the last test renders, in the project directory.
IN_PROJECT = "rendered-in-project"


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every program run from now on (the config of each)."""
    runs: list[dict[str, Any]] = []
    original = render.run_program

    def counted(config: Any = None, **options: Any) -> render.ProgramRun:
        runs.append(dict(config or {}))
        return original(config, **options)

    monkeypatch.setattr(render, "run_program", counted)
    return runs


def _resources(run: render.ProgramRun) -> list[tuple[str, str, dict[str, Any]]]:
    return sorted(((r.type, r.name, r.inputs) for r in run.resources), key=lambda r: r[:2])


def test_a_shared_run_is_the_programs_run_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _counting(monkeypatch)
    first, second = shared_run(CONFIG, stack=ONCE), shared_run(CONFIG, stack=ONCE)
    assert runs == [CONFIG]
    # Another stack, region or config is another run.
    shared_run(CONFIG, stack=ONCE, region="eu-west-1")
    shared_run({**CONFIG, "containerInsights": True}, stack=ONCE)
    assert len(runs) == 3
    fresh = render.run_program(CONFIG, stack=ONCE, project_root=fixture_build_context())
    assert _resources(first) == _resources(second) == _resources(fresh)
    assert first.outputs == second.outputs == fresh.outputs
    assert first.secret_outputs == fresh.secret_outputs


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
    """Inside ``shared_stack_runs``, make plan renders a stack config once per test process, in
    the project directory (the image built from the project's own context), and each plan gets
    a run of its own."""
    runs = _counting(monkeypatch)
    with shared_stack_runs():
        first = report.make_plan(IN_PROJECT, CONFIG, render.DEFAULT_REGION)
        second = report.make_plan(IN_PROJECT, CONFIG, render.DEFAULT_REGION)
    assert runs == [CONFIG]
    assert first.run is not second.run
    assert _resources(first.run) == _resources(second.run)
    image = first.run.one(aws_types.DOCKER_BUILD_IMAGE).inputs
    assert image["context"] == {"location": "."}
    assert image["dockerfile"] == {"location": "Dockerfile"}
