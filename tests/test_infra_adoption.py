"""A deployed stack adopts what the program renders now: ``pulumi up`` would create, delete or
change nothing, in each of the repository's stacks, against the snapshot of what they rendered
when it was recorded (``devtools.stack_snapshot``, ``tests/rendered_stacks.json``).

A refactor that moves resources under a new component gives them new URNs; they carry an
alias to the old one, which Pulumi's SDK resolves to the full URN (the mocks take URNs, not
alias specs), and the comparison follows it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest

from devtools.render import ProgramRun
from devtools.stack_snapshot import (
    STACKS,
    compare,
    read_snapshot,
    render,
    snapshot,
    write_snapshot,
)
from policy.invariants import aws_types
from tests.support import shared_stack_runs

SERVICE = aws_types.ECS_SERVICE


@pytest.fixture(autouse=True)
def _one_render_per_stack() -> Iterator[None]:
    """The dev stack is rendered by most tests here, and by make plan's and the docs' tests:
    once per test process (the renders with a transformation of their own run afresh)."""
    with shared_stack_runs():
        yield


@pytest.mark.parametrize("stack", list(STACKS))
def test_up_changes_nothing_in_a_stack_deployed_before(stack: str) -> None:
    assert compare(read_snapshot()[stack], render(stack)) == []


#: Where an earlier program had put the dev stack's web service: at the root.
EARLIER_WEB_SERVICE = "urn:pulumi:dev::celery-ecs::aws:ecs/service:Service::web-service"
SCALING_TARGET = (
    "urn:pulumi:dev::celery-ecs::celery-ecs:infra:ServiceScaling"
    "$aws:appautoscaling/target:Target::web-scaling"
)


def _urn(run: ProgramRun, type_: str, name: str) -> str:
    return run.named(type_, name).urn


def _deployed_by_an_earlier_program() -> dict[str, dict[str, object]]:
    """The dev stack as an earlier program would have recorded it, with the web service at the
    root (what depends on it depends on that URN)."""
    run = render("dev")
    return snapshot(run, known_as={_urn(run, SERVICE, "web-service"): EARLIER_WEB_SERVICE})


def test_a_resource_moved_without_an_alias_would_be_replaced() -> None:
    run = render("dev")
    problems = compare(_deployed_by_an_earlier_program(), run)
    assert problems == [
        f"{_urn(run, SERVICE, 'web-service')}: new (would be created)",
        f"{EARLIER_WEB_SERVICE}: no resource has this URN or an alias to it (would be deleted)",
        # What scales it now depends on the new service.
        f"{SCALING_TARGET} (deployed as {SCALING_TARGET}): dependencies changed",
    ]


def test_a_resource_moved_with_an_alias_to_its_old_urn_is_adopted() -> None:
    def alias(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        if args.type_ != SERVICE or args.name != "web-service":
            return None
        opts = copy.copy(args.opts)
        opts.aliases = [*(opts.aliases or []), pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)]
        return pulumi.ResourceTransformationResult(args.props, opts)

    run = render("dev", transformations=[alias])
    # The SDK resolved the alias to the full URN the deployed stack knows.
    assert EARLIER_WEB_SERVICE in run.named(SERVICE, "web-service").aliases
    assert compare(_deployed_by_an_earlier_program(), run) == []


def test_a_rewritten_snapshot_keeps_the_urns_the_deployed_stack_knows(tmp_path: Path) -> None:
    """``--write`` accepts what the program renders now, but a resource adopted through an alias
    (the services moved under the FargateService component) stays recorded under its deployed
    URN: the record goes on proving the alias."""
    recorded = read_snapshot()["dev"]
    run = render("dev")
    moved = {r.urn: alias for r in run.resources if r.urn not in recorded
             for alias in r.aliases if alias in recorded}  # fmt: skip
    assert moved, "the record no longer holds a resource adopted through an alias"
    path = tmp_path / "rendered_stacks.json"
    path.write_text(json.dumps({"dev": recorded}))
    write_snapshot(path, stacks=["dev"])
    rewritten = read_snapshot(path)["dev"]
    assert set(moved.values()) <= set(rewritten)
    assert not set(moved) & set(rewritten)
    assert compare(rewritten, run) == []


def test_a_changed_input_is_reported() -> None:
    def scale(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        if args.type_ != SERVICE or args.name != "beat-service":
            return None
        return pulumi.ResourceTransformationResult(
            {**args.props, "deployment_maximum_percent": 200}, args.opts
        )

    run = render("dev", transformations=[scale])
    (deployed,) = run.named(SERVICE, "beat-service").aliases
    assert compare(read_snapshot()["dev"], run) == [
        f"{_urn(run, SERVICE, 'beat-service')} (deployed as {deployed}): inputs changed"
    ]


@pytest.mark.parametrize(
    ("outer", "name"),
    [("Web", "web"), ("Worker", "worker-default"), ("Worker", "worker-long"), ("Beat", "beat")],
)
def test_the_services_resources_moved_into_their_component_keep_their_deployed_urns(
    outer: str, name: str
) -> None:
    # They were children of the web, the pool or beat before FargateService existed.
    run = render("dev")
    for type_, logical in (
        (aws_types.IAM_ROLE, f"{name}-task"),
        (aws_types.ECS_TASK_DEFINITION, f"{name}-task"),
        (SERVICE, f"{name}-service"),
    ):
        resource = run.named(type_, logical)
        prefix = "urn:pulumi:dev::celery-ecs::"
        assert resource.urn == (
            f"{prefix}celery-ecs:infra:{outer}$celery-ecs:infra:FargateService${type_}::{logical}"
        )
        assert resource.aliases == (f"{prefix}celery-ecs:infra:{outer}${type_}::{logical}",)
