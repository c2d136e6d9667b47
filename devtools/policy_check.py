"""Run the policy pack (``policy/invariants.py``) over the program rendered under mocks, offline.

The engine hands an analyzer each resource's inputs (resource policies) and every resource's
outputs (stack policies) as protobuf Structs. ``check`` sends a rendered ``ProgramRun``'s
registrations through the same conversion (a Struct and back: every number becomes a float) and
the same wrappers pulumi-policy's analyzer server applies, then calls every policy's validate
function, as ``pulumi preview --policy-pack policy`` would, minus the engine.

    python -m devtools.policy_check [STACK]    # renders Pulumi.<STACK>.yaml (default dev)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

from devtools import render
from policy.invariants import POLICIES


@dataclass(frozen=True)
class Violation:
    """One reported violation: the policy, the resource's logical name (from its URN) and the
    message the pack prints under the policy's description."""

    policy: str
    resource: str
    message: str
    urn: str


def engine_props(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` as a policy receives them: through a protobuf Struct, deserialized and wrapped
    the way pulumi-policy's analyzer server does it."""
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def _options(registration: render.Registration) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=registration.parent or None,
    )


def _outputs(registration: render.Registration) -> dict[str, Any]:
    """What the engine holds as a resource's outputs: the provider's state, with its id."""
    if not registration.custom:
        return dict(registration.inputs)
    return {**registration.state, "id": registration.id}


def _run(policy: Policy, result: object) -> None:
    # The pack's validate functions are synchronous; an awaitable would be a new kind of policy
    # this runner does not drive yet.
    if result is not None:
        raise TypeError(f"policy {policy.name} returned {result!r}; expected None")


def check(run: render.ProgramRun, policies: Sequence[Policy] = POLICIES) -> list[Violation]:
    """Every violation ``policies`` report over every resource ``run`` registered."""
    violations: list[Violation] = []

    def reporter(policy: Policy, default_urn: str) -> ReportViolation:
        def report(message: str, urn: str | None = None) -> None:
            # Resource policies always report against the resource (the engine ignores urn).
            where = default_urn if isinstance(policy, ResourceValidationPolicy) else urn or ""
            violations.append(
                Violation(policy.name, where.rsplit("::", 1)[-1] if where else "", message, where)
            )

        return report

    for registration in run.resources:
        args = ResourceValidationArgs(
            registration.type,
            engine_props(registration.inputs),
            registration.urn,
            registration.name,
            _options(registration),
            None,
        )
        for policy in policies:
            if isinstance(policy, ResourceValidationPolicy):
                _run(policy, policy.validate(args, reporter(policy, registration.urn)))

    stack = StackValidationArgs(
        [
            PolicyResource(
                registration.type,
                engine_props(_outputs(registration)),
                registration.urn,
                registration.name,
                _options(registration),
                None,
                None,
                [],
                {},
            )
            for registration in run.resources
        ]
    )
    for policy in policies:
        if isinstance(policy, StackValidationPolicy):
            _run(policy, policy.validate(stack, reporter(policy, "")))
    return violations


def main(argv: Sequence[str]) -> int:
    stack = argv[0] if argv else "dev"
    stack_file = render.read_stack_file(stack)
    run = render.run_program(
        stack_file.config, stack=stack, region=stack_file.region or render.DEFAULT_REGION
    )
    violations = check(run)
    for violation in violations:
        print(f"{violation.policy}: {violation.resource}: {violation.message}")
    print(f"{len(run.resources)} resources of stack {stack}, {len(violations)} violation(s)")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
