"""Run the policy pack (``policy/invariants/``) over the program rendered under mocks, offline.

The engine hands an analyzer each resource's inputs (resource policies) and every resource's
outputs (stack policies) as protobuf Structs. ``check`` sends a rendered ``ProgramRun``'s
registrations through the same conversion (a Struct and back: every number becomes a float) and
the same wrappers pulumi-policy's analyzer server applies, then calls every policy's validate
function, as ``pulumi preview --policy-pack policy`` would, minus the engine.

    python -m devtools.plan.policy_check [STACK]    # renders Pulumi.<STACK>.yaml (default dev)

``running_pack`` and ``analyze`` go one step further: they start the pack the way Pulumi does,
in the pack's own virtualenv, as an analyzer process, and send it the engine's requests over
gRPC (tests/test_entry_environments.py: the pack loads and judges from policy/requirements.txt
alone).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
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
from policy.invariants.policies import POLICIES


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


#: Seconds a pack may take to start and print its port.
PACK_START_TIMEOUT = 60.0
#: As large as the analyzer accepts (pulumi_policy's _MAX_RPC_MESSAGE_SIZE): a stack's outputs
#: travel in one AnalyzeStack request.
_MAX_MESSAGE = 400 * 1024 * 1024


@dataclass(frozen=True)
class PackRun:
    """What a policy pack process said: its name, its policies, and every diagnostic as a
    violation, with the enforcement level it reported (``analyzer_pb2.EnforcementLevel`` name)."""

    name: str
    policies: list[str]
    violations: list[Violation]
    enforcement_levels: frozenset[str]


@contextmanager
def running_pack(python: Path, pack_dir: Path) -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """Start the policy pack in ``pack_dir`` with the interpreter ``python`` as Pulumi's language
    host does (``python -u -m pulumi.policy <engine address> <pack dir>``, in the pack's
    directory: pulumi/pulumi sdk/python/cmd/pulumi-language-python/main.go RunPlugin), read the
    port it prints and hand back a client of its Analyzer service; the process is stopped on
    exit. The engine address is not used by Python packs; a closed port stands in for it."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [str(python), "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(pack_dir)],
            cwd=pack_dir, stdout=subprocess.PIPE, stderr=errors, env=environment,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], PACK_START_TIMEOUT)
            line = process.stdout.readline() if ready else b""
            if not line.strip().isdigit():
                process.kill()
                process.wait()
                errors.seek(0)
                raise RuntimeError(
                    f"the policy pack {pack_dir} did not start with {python} "
                    f"(printed {line!r}):\n{errors.read().decode(errors='replace')}"
                )
            options = [
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ]
            with grpc.insecure_channel(f"127.0.0.1:{int(line)}", options=options) as channel:
                yield analyzer_pb2_grpc.AnalyzerStub(channel)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def analyze(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, resources: Sequence[render.Registration]
) -> PackRun:
    """Ask a running pack what the engine asks during a preview: its info, then every
    resource's inputs (Analyze, one request each), then every resource's outputs at once
    (AnalyzeStack). The resources are what ``check`` sees: the same props and options."""
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    violations: list[Violation] = []
    levels: set[str] = set()

    def collect(response: analyzer_pb2.AnalyzeResponse, default_urn: str) -> None:
        for diagnostic in response.diagnostics:
            urn = diagnostic.urn or default_urn
            resource = urn.rsplit("::", 1)[-1] if urn else ""
            violations.append(Violation(diagnostic.policyName, resource, diagnostic.message, urn))
            levels.add(analyzer_pb2.EnforcementLevel.Name(diagnostic.enforcementLevel))

    for registration in resources:
        request = analyzer_pb2.AnalyzeRequest(
            type=registration.type,
            properties=struct(registration.inputs),
            urn=registration.urn,
            name=registration.name,
            options=analyzer_pb2.AnalyzerResourceOptions(parent=registration.parent),
        )
        collect(analyzer.Analyze(request), registration.urn)
    stack = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                type=registration.type,
                properties=struct(_outputs(registration)),
                urn=registration.urn,
                name=registration.name,
                options=analyzer_pb2.AnalyzerResourceOptions(parent=registration.parent),
                parent=registration.parent,
            )
            for registration in resources
        ]
    )
    collect(analyzer.AnalyzeStack(stack), "")
    return PackRun(
        name=info.name,
        policies=[policy.name for policy in info.policies],
        violations=violations,
        enforcement_levels=frozenset(levels),
    )


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
