"""Run the Pulumi program under mocks and hand back plain data.

Each ``run_program`` call gets a fresh event loop, fresh mocks and its own config, runs the real
program (``infra.program.main``) to completion and returns every registered resource with its
resolved inputs, plus the resolved stack outputs. Nothing talks to AWS or Docker.

``render_task_definitions(config)`` returns the ECS task definitions the program would register
(command, environment, secrets per service): the local-process tests start the app with them.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs
from pulumi.runtime.stack import run_pulumi_func

from infra import program

PROJECT = "celery-ecs"
STACK = "test"
REGION = "us-east-1"
ACCOUNT = "123456789012"
#: What the mocked RandomPassword returns as the broker's AUTH token (uses every allowed
#: special character, so URL encoding is exercised).
MOCK_AUTH_TOKEN = "MockToken0!&#$^<>-MockToken1"
MOCK_ECR_PASSWORD = "mock-ecr-password"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Registration:
    """One registered resource: its type token, logical name and resolved inputs (camelCase,
    secrets unwrapped; ``secret_inputs`` names the top-level inputs that arrived as secrets)."""

    type: str
    name: str
    inputs: dict[str, Any]
    secret_inputs: frozenset[str] = frozenset()


def _is_secret(value: object) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def _unwrap(value: Any) -> Any:
    """Replace the mock monitor's secret envelopes with their values, at any depth."""
    if _is_secret(value):
        return _unwrap(value["value"])
    if isinstance(value, dict):
        return {key: _unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every registration and answers with plausible AWS-shaped state."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.calls: list[str] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = _unwrap(dict(args.inputs))
        secrets = frozenset(key for key, value in args.inputs.items() if _is_secret(value))
        self.registrations.append(Registration(args.typ, args.name, inputs, secrets))
        state = dict(inputs)
        # Auto-naming: the provider appends a random suffix to namePrefix or the logical name.
        physical = state.get("name") or f"{state.get('namePrefix') or args.name + '-'}abc1234"
        state.setdefault("name", physical)
        state.setdefault("arn", _arn(args.typ, physical, state))
        state.update(_extra_state(args.typ, physical, state))
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        self.calls.append(args.token)
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{REGION}{suffix}" for suffix in "abc"]
            return {
                "id": REGION,
                "names": names,
                "zoneIds": [f"use1-az{i}" for i in (1, 2, 3)],
                "groupNames": [REGION] * 3,
            }
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "id": ACCOUNT,
                "accountId": ACCOUNT,
                "userId": "AIDMOCK",
                "arn": f"arn:aws:iam::{ACCOUNT}:user/mock",
            }
        if args.token == "aws:index/getRegion:getRegion":
            return {
                "id": REGION,
                "region": REGION,
                "name": REGION,
                "endpoint": f"ec2.{REGION}.amazonaws.com",
                "description": "mock",
            }
        if args.token == "aws:index/getPartition:getPartition":
            return {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            }
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "id": REGION,
                "userName": "AWS",
                "password": MOCK_ECR_PASSWORD,
                "authorizationToken": "bW9jaw==",
                "expiresAt": "2030-01-01T00:00:00Z",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
                "region": REGION,
            }
        raise AssertionError(f"the mocks do not answer {args.token}; add it to RecordingMocks")


def _arn(typ: str, physical: str, state: Mapping[str, Any]) -> str:
    service = typ.split(":")[1].split("/")[0]
    if typ == "aws:iam/role:Role":
        return f"arn:aws:iam::{ACCOUNT}:role/{physical}"
    if typ == "aws:ecs/taskDefinition:TaskDefinition":
        return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{state.get('family')}:1"
    if typ == "aws:cloudwatch/logGroup:LogGroup":
        return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}"
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{typ.split(':')[-1].lower()}/{physical}"


def _extra_state(typ: str, physical: str, state: Mapping[str, Any]) -> dict[str, Any]:
    if typ == "aws:elasticache/replicationGroup:ReplicationGroup":
        return {"primaryEndpointAddress": f"master.{physical}.mock.use1.cache.amazonaws.com"}
    if typ == "aws:ecr/repository:Repository":
        return {
            "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{physical}",
            "registryId": ACCOUNT,
        }
    if typ == "aws:lb/loadBalancer:LoadBalancer":
        return {
            "dnsName": f"{physical}-1.{REGION}.elb.amazonaws.com",
            "arnSuffix": f"app/{physical}/0123456789abcdef",
        }
    if typ == "aws:lb/targetGroup:TargetGroup":
        return {"arnSuffix": f"targetgroup/{physical}/0123456789abcdef"}
    if typ == "aws:secretsmanager/secretVersion:SecretVersion":
        # AWS gives every new value a new version id.
        digest = hashlib.sha256(str(state.get("secretString")).encode()).hexdigest()
        return {"versionId": str(uuid.UUID(digest[:32]))}
    if typ == "aws:sqs/queue:Queue":
        return {"url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"}
    if typ == "random:index/randomPassword:RandomPassword":
        # Like the provider: new keepers, a new password.
        generation = (state.get("keepers") or {}).get("generation", "1")
        token = MOCK_AUTH_TOKEN if generation == "1" else f"{MOCK_AUTH_TOKEN}-{generation}"
        return {"result": token}
    if typ == "docker-build:index:Image":
        return {"digest": f"sha256:{'0' * 64}", "contextHash": "0" * 64, "ref": ""}
    return {}


@dataclass
class ProgramRun:
    """Result of one program run: registrations in order, and the resolved outputs."""

    resources: list[Registration]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    #: Resource name -> its custom timeouts (create, update, delete), where the program set any:
    #: the mocks do not see resource options, a stack transformation records them.
    custom_timeouts: dict[str, tuple[str | None, str | None, str | None]] = field(
        default_factory=dict
    )

    def of_type(self, typ: str) -> list[Registration]:
        return [resource for resource in self.resources if resource.type == typ]

    def one(self, typ: str) -> Registration:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]

    def named(self, typ: str, name: str) -> Registration:
        found = [resource for resource in self.of_type(typ) if resource.name == name]
        assert len(found) == 1, f"no single {typ} named {name}"
        return found[0]

    def task_definitions(self) -> dict[str, RenderedTaskDefinition]:
        return {
            rendered.service: rendered
            for rendered in map(
                RenderedTaskDefinition.of, self.of_type("aws:ecs/taskDefinition:TaskDefinition")
            )
        }

    def policy_documents(self) -> list[tuple[str, dict[str, Any]]]:
        """(resource name, parsed document) of every IAM policy and trust policy."""
        documents = [
            (role.name, json.loads(role.inputs["assumeRolePolicy"]))
            for role in self.of_type("aws:iam/role:Role")
        ]
        documents += [
            (policy.name, json.loads(policy.inputs["policy"]))
            for policy in self.of_type("aws:iam/rolePolicy:RolePolicy")
        ]
        return documents


@dataclass(frozen=True)
class RenderedTaskDefinition:
    """A task definition as the program registers it; one container per task."""

    service: str
    family: str
    cpu: int
    memory: int
    containers: list[dict[str, Any]]
    inputs: dict[str, Any]

    @staticmethod
    def of(registration: Registration) -> RenderedTaskDefinition:
        inputs = registration.inputs
        return RenderedTaskDefinition(
            service=inputs["tags"]["Service"],
            family=inputs["family"],
            cpu=int(inputs["cpu"]),
            memory=int(inputs["memory"]),
            containers=json.loads(inputs["containerDefinitions"]),
            inputs=inputs,
        )

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.containers
        return container

    @property
    def command(self) -> list[str]:
        return list(self.container.get("command", []))

    @property
    def environment(self) -> dict[str, str]:
        """The container's ``environment`` as a dict (secrets excluded: see ``secrets``)."""
        return {item["name"]: item["value"] for item in self.container.get("environment", [])}

    @property
    def secrets(self) -> dict[str, str]:
        """Environment variable -> Secrets Manager ARN, injected by ECS at start."""
        return {item["name"]: item["valueFrom"] for item in self.container.get("secrets", [])}


def config_value(value: object) -> str:
    """A value as the Pulumi CLI hands it to the program: scalars as text, objects as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


@cache
@cache
def fixture_build_context() -> Path:
    """A tiny Docker build context, so image tests neither need nor hash the real project.

    One per test process, removed when it exits.
    """
    directory = Path(tempfile.mkdtemp(prefix="celery-ecs-context-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "Dockerfile").write_text("FROM scratch\n")
    return directory


def run_program(
    config: Mapping[str, object] | None = None,
    *,
    stack: str = STACK,
    project_root: Path | None = None,
    mocks: RecordingMocks | None = None,
) -> ProgramRun:
    """Run ``infra.program.main`` with ``config`` (the ``celery-ecs:`` keys, unprefixed, values
    as in Pulumi.<stack>.yaml). Exceptions of the program propagate; pass ``mocks`` to inspect
    what was registered before one."""
    mocks = mocks if mocks is not None else RecordingMocks()
    root = project_root if project_root is not None else fixture_build_context()
    result = ProgramRun(resources=mocks.registrations)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
        pulumi.runtime.set_all_config(
            {
                "aws:region": REGION,
                **{
                    f"{PROJECT}:{key}": config_value(value) for key, value in (config or {}).items()
                },
            }
        )

        def record_options(
            args: pulumi.ResourceTransformationArgs,
        ) -> pulumi.ResourceTransformationResult | None:
            timeouts = args.opts.custom_timeouts
            if timeouts is not None:
                result.custom_timeouts[args.name] = (
                    timeouts.create, timeouts.update, timeouts.delete
                )
            return None

        async def run() -> None:
            pulumi.runtime.register_stack_transformation(record_options)
            outputs = program.main(project_root=root)
            for name, value in outputs.items():
                output = pulumi.Output.from_input(value)
                result.outputs[name] = await output.future()
                if await output.is_secret():
                    result.secret_outputs.add(name)

        loop.run_until_complete(run_pulumi_func(run))
    finally:
        pulumi.runtime.set_all_config({})
        pulumi.runtime.reset_options()
        asyncio.set_event_loop(None)
        loop.close()
    return result


def render_task_definitions(
    config: Mapping[str, object] | None = None, *, stack: str = STACK
) -> dict[str, RenderedTaskDefinition]:
    """Service name ("web", "worker-<pool>", "beat" or "enqueue") -> its task definition, as
    the program renders it for ``config`` (defaults: the default stack)."""
    return run_program(config, stack=stack).task_definitions()


def stack_file_config(stack: str = "dev") -> dict[str, object]:
    """The ``celery-ecs:`` keys of ``Pulumi.<stack>.yaml``, unprefixed."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    prefix = f"{PROJECT}:"
    return {
        key[len(prefix) :]: value
        for key, value in document["config"].items()
        if key.startswith(prefix)
    }
