"""A deployed stack adopts what the program renders now: ``pulumi up`` would create, delete or
change nothing, in each of the repository's stacks, against the snapshot of what they rendered
when it was recorded (``devtools.stack_snapshot``, ``tests/rendered_stacks.json``).

A refactor that moves resources under a new component gives them new URNs; they carry an
alias to the old one, which Pulumi's SDK resolves to the full URN (the mocks take URNs, not
alias specs), and the comparison follows it.
"""

from __future__ import annotations

import copy

import pulumi
import pytest

from devtools.stack_snapshot import STACKS, compare, read_snapshot, render, snapshot

SERVICE = "aws:ecs/service:Service"


@pytest.mark.parametrize("stack", list(STACKS))
def test_up_changes_nothing_in_a_stack_deployed_before(stack: str) -> None:
    assert compare(read_snapshot()[stack], render(stack)) == []


#: The web service's URN in the dev stack, and where an earlier program had put it (at the root).
WEB_SERVICE = (
    "urn:pulumi:dev::celery-ecs::celery-ecs:infra:Web$aws:ecs/service:Service::web-service"
)
EARLIER_WEB_SERVICE = "urn:pulumi:dev::celery-ecs::aws:ecs/service:Service::web-service"


def _deployed_by_an_earlier_program() -> dict[str, dict[str, object]]:
    """The dev stack as an earlier program would have recorded it, with the web service at the
    root (what depends on it depends on that URN)."""
    return snapshot(render("dev"), known_as={WEB_SERVICE: EARLIER_WEB_SERVICE})


def test_a_resource_moved_without_an_alias_would_be_replaced() -> None:
    problems = compare(_deployed_by_an_earlier_program(), render("dev"))
    scaling_target = (
        "urn:pulumi:dev::celery-ecs::celery-ecs:infra:ServiceScaling"
        "$aws:appautoscaling/target:Target::web-scaling"
    )
    assert problems == [
        f"{WEB_SERVICE}: new (would be created)",
        f"{EARLIER_WEB_SERVICE}: no resource has this URN or an alias to it (would be deleted)",
        # What scales it now depends on the new service.
        f"{scaling_target} (deployed as {scaling_target}): dependencies changed",
    ]


def test_a_resource_moved_with_an_alias_to_its_old_urn_is_adopted() -> None:
    def alias(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        if args.type_ != SERVICE or args.name != "web-service":
            return None
        opts = copy.copy(args.opts)
        opts.aliases = [pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)]
        return pulumi.ResourceTransformationResult(args.props, opts)

    run = render("dev", transformations=[alias])
    (service,) = [resource for resource in run.resources if resource.urn == WEB_SERVICE]
    # The SDK resolved the alias to the full URN the deployed stack knows.
    assert service.aliases == (EARLIER_WEB_SERVICE,)
    assert compare(_deployed_by_an_earlier_program(), run) == []


def test_a_changed_input_is_reported() -> None:
    def scale(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        if args.type_ != SERVICE or args.name != "beat-service":
            return None
        return pulumi.ResourceTransformationResult(
            {**args.props, "deployment_maximum_percent": 200}, args.opts
        )

    problems = compare(read_snapshot()["dev"], render("dev", transformations=[scale]))
    assert problems == [
        "urn:pulumi:dev::celery-ecs::celery-ecs:infra:Beat$aws:ecs/service:Service::beat-service "
        "(deployed as urn:pulumi:dev::celery-ecs::celery-ecs:infra:Beat$aws:ecs/service:Service"
        "::beat-service): inputs changed"
    ]
