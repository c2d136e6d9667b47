"""Run the Pulumi program under mocks and hand back plain data.

Each ``run_program`` call gets a fresh event loop, fresh mocks and its own config, runs the real
program (``infra.program.main``) to completion and returns every registered resource with its
resolved inputs, its parent and the state the mocks answered with, plus the resolved stack
outputs. Nothing talks to AWS or Docker: the offline plan (``devtools.plan``) and the tests
render the program this way.

The mocks answer the way AWS and the providers do, so what depends on those answers is
exercised as it will be deployed: ids in each service's format (``vpc-…``, ``sg-…``, a role's
name, a service's ARN), ARNs in each service's format (a secret's ``secret:<name>-AbCdEf``,
a target group's ``targetgroup/<name>/<hex>``), auto-names as the logical name plus a
7-character suffix. Every id is derived from the resource's type and name, so the same config
always renders the same resources.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import runpy
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import get_project, get_stack
from pulumi.runtime.stack import run_pulumi_func

from infra import program
from policy.invariants import aws_types

PROJECT = "celery-ecs"
DEFAULT_REGION = "us-east-1"
ACCOUNT = "123456789012"
ROOT = program.PROJECT_ROOT
#: What the mocked RandomPassword returns as the broker's AUTH token (uses every allowed
#: special character, so URL encoding is exercised).
MOCK_AUTH_TOKEN = "MockToken0!&#$^<>-MockToken1"
MOCK_ECR_PASSWORD = "mock-ecr-password"
#: The type of the root resource, which the engine leaves out of its children's URNs.
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
#: The suffix auto-naming appends (Pulumi appends 7 random hex characters).
AUTONAME_SUFFIX = "abc1234"

#: Resource type -> prefix of the id EC2 gives that kind of resource.
_EC2_ID_PREFIXES = {
    aws_types.EC2_VPC: "vpc",
    aws_types.EC2_SUBNET: "subnet",
    aws_types.EC2_SECURITY_GROUP: "sg",
    aws_types.EC2_DEFAULT_SECURITY_GROUP: "sg",
    aws_types.EC2_INTERNET_GATEWAY: "igw",
    aws_types.EC2_ROUTE_TABLE: "rtb",
    aws_types.EC2_ROUTE_TABLE_ASSOCIATION: "rtbassoc",
    aws_types.EC2_NAT_GATEWAY: "nat",
    aws_types.EC2_EIP: "eipalloc",
    aws_types.EC2_FLOW_LOG: "fl",
    aws_types.VPC_SECURITY_GROUP_INGRESS_RULE: "sgr",
    aws_types.VPC_SECURITY_GROUP_EGRESS_RULE: "sgr",
}
#: Resource types whose Pulumi id is their ARN (the others use their name).
_ARN_IDS = frozenset(
    {
        aws_types.ECS_CLUSTER,
        aws_types.ECS_SERVICE,
        aws_types.LB_LOAD_BALANCER,
        aws_types.LB_TARGET_GROUP,
        aws_types.LB_LISTENER,
        aws_types.SECRETSMANAGER_SECRET,
        aws_types.APPAUTOSCALING_POLICY,
    }
)


def _hex(*parts: str, length: int) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def region_code(region: str) -> str:
    """AWS's short form of a region, as in AZ ids and endpoints: us-east-1 -> use1."""
    first, *middle, last = region.split("-")
    return first + "".join(word[0] for word in middle) + last


@dataclass(frozen=True)
class Registration:
    """One registered resource: its type token, logical name and resolved inputs (camelCase,
    secrets unwrapped; ``secret_inputs`` names the top-level inputs that arrived as secrets),
    with the id and state the mocks answered and the URNs of it and its parent."""

    type: str
    name: str
    inputs: dict[str, Any]
    secret_inputs: frozenset[str] = frozenset()
    id: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    urn: str = ""
    parent: str = ""
    #: False for component resources (the program's own groupings), True for real ones.
    custom: bool = True
    #: The URNs the resource was known by before (its ``aliases`` option, as full URNs): a
    #: stack holding one of them adopts this resource instead of replacing it.
    aliases: tuple[str, ...] = ()
    #: URNs of the resources it depends on (``depends_on`` and its inputs'), sorted.
    dependencies: tuple[str, ...] = ()

    @property
    def physical_name(self) -> str:
        """The name the resource has in AWS (given, or auto-named by the provider)."""
        return str(self.state.get("name", self.name))

    def to_json(self) -> dict[str, Any]:
        """The registration as JSON-ready data (``from_json`` reads it back)."""
        return {
            "type": self.type,
            "name": self.name,
            "inputs": self.inputs,
            "secret_inputs": sorted(self.secret_inputs),
            "id": self.id,
            "state": self.state,
            "urn": self.urn,
            "parent": self.parent,
            "custom": self.custom,
            "aliases": list(self.aliases),
            "dependencies": list(self.dependencies),
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Registration:
        return Registration(
            type=data["type"],
            name=data["name"],
            inputs=dict(data["inputs"]),
            secret_inputs=frozenset(data["secret_inputs"]),
            id=data["id"],
            state=dict(data["state"]),
            urn=data["urn"],
            parent=data["parent"],
            custom=bool(data["custom"]),
            aliases=tuple(data.get("aliases", ())),
            dependencies=tuple(data.get("dependencies", ())),
        )


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
    """Records every registration and answers with AWS-shaped state for ``region``."""

    def __init__(self, region: str = DEFAULT_REGION) -> None:
        self.region = region
        self.registrations: list[Registration] = []
        self.calls: list[str] = []
        # The engine registers resources from a thread pool; each registration's new_resource
        # call runs on the thread of its RegisterResource request, which knows the parent.
        self._request = threading.local()
        self._lock = threading.Lock()

    def monitor(self) -> MockMonitor:
        """A mock monitor that tells ``new_resource`` each resource's parent, aliases and
        dependencies."""
        mocks = self

        class ParentAwareMonitor(MockMonitor):
            def make_urn(self, parent: str, type_: str, name: str) -> str:
                # As the engine names a resource (pulumi/pulumi sdk/go/common/resource/urn/
                # urn.go, ``New``): after its parent's whole qualified type, none for the root
                # stack. pulumi's MockMonitor keeps only the parent's last type, and the stack's:
                # a URN no deployed stack holds, and the SDK derives aliases from it.
                qualified = parent.split("::")[2] if parent else ""
                if qualified and qualified != ROOT_STACK_TYPE:
                    type_ = f"{qualified}${type_}"
                return "urn:pulumi:" + "::".join([get_stack(), get_project(), type_, name])

            def GetDeploymentInfo(self, request: Any) -> Any:
                # Without alias specs the SDK resolves each alias to the full URN itself, as it
                # does for an engine that takes URNs only (pulumi/runtime/resource.py,
                # ``prepare_aliases`` -> ``all_aliases``, parents' aliases included): the URNs
                # a deployed stack's state is matched against, sent as ``aliasURNs``.
                info = super().GetDeploymentInfo(request)  # type: ignore[no-untyped-call]
                features = [
                    feature
                    for feature in info.supportedFeatures
                    if feature != resource_pb2.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS
                ]
                return resource_pb2.DeploymentInfo(supportedFeatures=features)

            def RegisterResource(self, request: Any) -> Any:
                mocks._request.parent = request.parent
                mocks._request.urn = self.make_urn(request.parent, request.type, request.name)
                mocks._request.aliases = tuple(sorted(request.aliasURNs))
                mocks._request.dependencies = tuple(sorted(set(request.dependencies)))
                try:
                    # pulumi leaves MockMonitor unannotated.
                    return super().RegisterResource(request)  # type: ignore[no-untyped-call]
                finally:
                    mocks._request.parent = mocks._request.urn = ""
                    mocks._request.aliases = mocks._request.dependencies = ()

        return ParentAwareMonitor(self)

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = _unwrap(dict(args.inputs))
        secrets = frozenset(key for key, value in args.inputs.items() if _is_secret(value))
        parent = getattr(self._request, "parent", "")
        urn = getattr(self._request, "urn", "")
        state = dict(inputs)
        # Auto-naming: the provider appends a random suffix to namePrefix or the logical name.
        physical = state.get("name") or (
            f"{state.get('namePrefix') or args.name + '-'}{AUTONAME_SUFFIX}"
        )
        state.setdefault("name", physical)
        state.setdefault("arn", self._arn(args.typ, physical, state))
        state.update(self._extra_state(args.typ, physical, state))
        resource_id = self._id(args.typ, args.name, physical, state)
        registration = Registration(
            type=args.typ,
            name=args.name,
            inputs=inputs,
            secret_inputs=secrets,
            id=resource_id,
            state=state,
            urn=urn,
            parent=parent,
            custom=bool(args.custom),
            aliases=getattr(self._request, "aliases", ()),
            dependencies=getattr(self._request, "dependencies", ()),
        )
        with self._lock:
            self.registrations.append(registration)
        return resource_id, state

    # pulumi's MockMonitor takes the result alone too, though Mocks.call is typed as a tuple.
    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        self.calls.append(args.token)
        region = self.region
        if args.token == aws_types.AWS_GET_AVAILABILITY_ZONES:
            return {
                "id": region,
                "names": [f"{region}{suffix}" for suffix in "abc"],
                "zoneIds": [f"{region_code(region)}-az{i}" for i in (1, 2, 3)],
                "groupNames": [region] * 3,
            }
        if args.token == aws_types.AWS_GET_CALLER_IDENTITY:
            return {
                "id": ACCOUNT,
                "accountId": ACCOUNT,
                "userId": "AIDAMOCKUSER0000000000",
                "arn": f"arn:aws:iam::{ACCOUNT}:user/mock",
            }
        if args.token == aws_types.AWS_GET_REGION:
            return {
                "id": region,
                "region": region,
                "name": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
                "description": "mock",
            }
        if args.token == aws_types.AWS_GET_PARTITION:
            return {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            }
        if args.token == aws_types.ECR_GET_AUTHORIZATION_TOKEN:
            return {
                "id": region,
                "userName": "AWS",
                "password": MOCK_ECR_PASSWORD,
                "authorizationToken": "bW9jaw==",
                "expiresAt": "2030-01-01T00:00:00Z",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{region}.amazonaws.com",
                "region": region,
            }
        raise AssertionError(f"the mocks do not answer {args.token}; add it to RecordingMocks")

    def _arn(self, typ: str, physical: str, state: Mapping[str, Any]) -> str:
        """The ARN AWS gives a resource of this type (the format of each service)."""
        prefix = f"arn:aws:{{}}:{self.region}:{ACCOUNT}:"
        suffix = _hex(typ, physical, length=16)
        formats = {
            aws_types.IAM_ROLE: f"arn:aws:iam::{ACCOUNT}:role/{physical}",
            aws_types.ECS_TASK_DEFINITION: prefix.format("ecs")
            + f"task-definition/{state.get('family')}:1",
            aws_types.ECS_CLUSTER: prefix.format("ecs") + f"cluster/{physical}",
            aws_types.ECS_SERVICE: prefix.format("ecs")
            + f"service/{_name_of(state.get('cluster', ''))}/{physical}",
            aws_types.CLOUDWATCH_LOG_GROUP: prefix.format("logs") + f"log-group:{physical}",
            aws_types.CLOUDWATCH_EVENT_RULE: prefix.format("events") + f"rule/{physical}",
            aws_types.LB_LOAD_BALANCER: prefix.format("elasticloadbalancing")
            + f"loadbalancer/app/{physical}/{suffix}",
            aws_types.LB_TARGET_GROUP: prefix.format("elasticloadbalancing")
            + f"targetgroup/{physical}/{suffix}",
            aws_types.LB_LISTENER: prefix.format("elasticloadbalancing")
            + f"listener/{str(state.get('loadBalancerArn', '')).partition(':loadbalancer/')[2]}/"
            + suffix,
            aws_types.SECRETSMANAGER_SECRET: prefix.format("secretsmanager")
            + f"secret:{physical}-{_hex(physical, length=6)}",
            aws_types.ELASTICACHE_REPLICATION_GROUP: prefix.format("elasticache")
            + f"replicationgroup:{physical}",
            aws_types.ELASTICACHE_PARAMETER_GROUP: prefix.format("elasticache")
            + f"parametergroup:{physical}",
            aws_types.ELASTICACHE_SUBNET_GROUP: prefix.format("elasticache")
            + f"subnetgroup:{physical}",
            aws_types.ECR_REPOSITORY: prefix.format("ecr") + f"repository/{physical}",
            aws_types.CLOUDWATCH_METRIC_ALARM: prefix.format("cloudwatch")
            + f"alarm:{physical}",
            aws_types.SNS_TOPIC: prefix.format("sns") + physical,
            aws_types.KMS_KEY: prefix.format("kms")
            + f"key/{uuid.UUID(_hex(typ, physical, length=32))}",
            aws_types.APPAUTOSCALING_POLICY: prefix.format("autoscaling")
            + f"scalingPolicy:{_hex(typ, physical, length=8)}:resource/ecs/"
            + f"{state.get('resourceId', '')}:policyName/{physical}",
        }
        if typ in formats:
            return formats[typ]
        service = typ.split(":")[1].split("/")[0]
        return prefix.format(service) + f"{typ.split(':')[-1].lower()}/{physical}"

    def _extra_state(self, typ: str, physical: str, state: Mapping[str, Any]) -> dict[str, Any]:
        region = self.region
        if typ == aws_types.ELASTICACHE_REPLICATION_GROUP:
            return {
                "primaryEndpointAddress": (
                    f"master.{physical}.{_hex(physical, length=6)}."
                    f"{region_code(region)}.cache.amazonaws.com"
                )
            }
        if typ == aws_types.ECR_REPOSITORY:
            return {
                "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{physical}",
                "registryId": ACCOUNT,
            }
        if typ == aws_types.LB_LOAD_BALANCER:
            number = int(_hex(physical, length=8), 16)
            return {
                "dnsName": f"{physical}-{number}.{region}.elb.amazonaws.com",
                "arnSuffix": str(state["arn"]).split(":loadbalancer/", 1)[1],
            }
        if typ == aws_types.LB_TARGET_GROUP:
            return {"arnSuffix": str(state["arn"]).split(":", 5)[5]}
        if typ == aws_types.CLOUDWATCH_EVENT_TARGET:
            # The provider generates a target id when none is given.
            return {"targetId": state.get("targetId") or physical}
        if typ == aws_types.RANDOM_ID:
            # Derived from the name and keepers: new keepers, new bytes, as with the provider.
            keepers = json.dumps(state.get("keepers") or {}, sort_keys=True)
            return {"hex": _hex(physical, keepers, length=2 * int(state["byteLength"]))}
        if typ == aws_types.RANDOM_PASSWORD:
            if state.get("special") is False:
                # Letters and digits only, as asked (the web's first API key).
                return {"result": _hex(physical, length=int(state.get("length", 16)))}
            # Like the provider: new keepers, a new password.
            generation = (state.get("keepers") or {}).get("generation", "1")
            token = MOCK_AUTH_TOKEN if generation == "1" else f"{MOCK_AUTH_TOKEN}-{generation}"
            return {"result": token}
        if typ == aws_types.SECRETSMANAGER_SECRET_VERSION:
            # AWS gives every new value a new version id.
            digest = _hex(str(state.get("secretString")), length=32)
            return {"versionId": str(uuid.UUID(digest))}
        if typ == aws_types.SQS_QUEUE:
            return {"url": f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{physical}"}
        if typ == aws_types.DOCKER_BUILD_IMAGE:
            # Pushed by digest: the digest of what the context and platforms would build.
            digest = _hex(json.dumps(state.get("context")), str(state.get("platforms")), length=64)
            return {"digest": f"sha256:{digest}", "contextHash": _hex(digest, length=64), "ref": ""}
        return {}

    @staticmethod
    def _id(typ: str, name: str, physical: str, state: Mapping[str, Any]) -> str:
        """The id Pulumi's AWS provider gives a resource of this type."""
        if typ in _EC2_ID_PREFIXES:
            return f"{_EC2_ID_PREFIXES[typ]}-{_hex(typ, name, length=17)}"
        if typ in _ARN_IDS:
            return str(state["arn"])
        if typ == aws_types.ECS_TASK_DEFINITION:
            return str(state.get("family"))
        if typ == aws_types.IAM_ROLE_POLICY:
            return f"{state.get('role')}:{physical}"
        if typ.startswith("aws:"):
            return physical
        return f"{name}-id"


def _name_of(arn: str) -> str:
    """The last path segment of an ARN's resource part: NAME of ``cluster/NAME``."""
    return str(arn).split(":")[-1].split("/")[-1] if arn else ""


@dataclass
class ProgramRun:
    """Result of one program run: registrations, and the resolved outputs."""

    resources: list[Registration]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    #: Resource name -> its custom timeouts (create, update, delete), where the program set any:
    #: the mocks do not see resource options, a stack transformation records them.
    custom_timeouts: dict[str, tuple[str | None, str | None, str | None]] = field(
        default_factory=dict
    )
    #: (type, name) -> the properties whose changes ``up`` ignores, where the program set any
    #: (recorded the same way).
    ignore_changes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registration]:
        return sorted(
            (resource for resource in self.resources if resource.type == typ),
            key=lambda resource: resource.name,
        )

    def one(self, typ: str) -> Registration:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]

    def named(self, typ: str, name: str) -> Registration:
        found = [resource for resource in self.of_type(typ) if resource.name == name]
        assert len(found) == 1, f"no single {typ} named {name}"
        return found[0]

    def by_reference(self) -> dict[str, Registration]:
        """Every id, ARN and physical name -> the resource it refers to (inputs that reference
        another resource hold one of these)."""
        index: dict[str, Registration] = {}
        for resource in self.resources:
            if not resource.custom:
                continue
            for key in (resource.state.get("arn"), resource.physical_name, resource.id):
                if isinstance(key, str) and key:
                    index.setdefault(key, resource)
        return index

    def task_definitions(self) -> dict[str, RenderedTaskDefinition]:
        return {
            rendered.service: rendered
            for rendered in map(
                RenderedTaskDefinition.of, self.of_type(aws_types.ECS_TASK_DEFINITION)
            )
        }

    def policy_documents(self) -> list[tuple[str, dict[str, Any]]]:
        """(resource name, parsed document) of every IAM policy and trust policy."""
        documents = [
            (role.name, json.loads(role.inputs["assumeRolePolicy"]))
            for role in self.of_type(aws_types.IAM_ROLE)
        ]
        documents += [
            (policy.name, json.loads(policy.inputs["policy"]))
            for policy in self.of_type(aws_types.IAM_ROLE_POLICY)
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


def run_program(
    config: Mapping[str, object] | None = None,
    *,
    stack: str,
    region: str = DEFAULT_REGION,
    project_root: Path = ROOT,
    mocks: RecordingMocks | None = None,
    transformations: Sequence[pulumi.ResourceTransformation] = (),
    entry_point: Path | None = None,
) -> ProgramRun:
    """Run ``infra.program.main`` with ``config`` (the ``celery-ecs:`` keys, unprefixed, values
    as in Pulumi.<stack>.yaml) in ``region``. ``project_root`` is where the program looks for
    the Dockerfile to build. Exceptions of the program propagate; pass ``mocks`` to inspect
    what was registered before one. ``transformations`` are registered as stack
    transformations before the program runs (tests use them to break one invariant on purpose;
    they see each resource's Python-named props, e.g. ``deployment_maximum_percent``).

    ``entry_point``: the project directory whose ``__main__.py`` to run instead, the way
    Pulumi's language host does (``runpy.run_path`` of the program directory, with it first on
    ``sys.path``: pulumi/pulumi sdk/python/cmd/pulumi-language-python-exec); the outputs are
    then what it exported, read from the stack resource."""
    mocks = mocks if mocks is not None else RecordingMocks(region)
    result = ProgramRun(resources=mocks.registrations)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=mocks.monitor()
        )
        pulumi.runtime.set_all_config(
            {
                "aws:region": region,
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
            if args.opts.ignore_changes:
                result.ignore_changes[(args.type_, args.name)] = list(args.opts.ignore_changes)
            return None

        async def run() -> None:
            pulumi.runtime.register_stack_transformation(record_options)
            for transformation in transformations:
                pulumi.runtime.register_stack_transformation(transformation)
            if entry_point is None:
                outputs = program.main(project_root=project_root)
            else:
                runpy.run_path(str(entry_point), run_name="__main__")
                # set_mocks made the root resource, a Stack: pulumi.export records there.
                stack = pulumi.runtime.get_root_resource()
                outputs = dict(getattr(stack, "outputs", {}))
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


@dataclass(frozen=True)
class StackFile:
    """A ``Pulumi.<stack>.yaml``: the stack's name, region and ``celery-ecs:`` keys."""

    stack: str
    path: Path
    region: str | None
    config: dict[str, object]


#: Where the example apps' stacks are: ``examples/<stack>/Pulumi.<stack>.yaml``.
EXAMPLES = "examples"


def stack_path(stack: str, root: Path = ROOT) -> Path:
    """``Pulumi.<stack>.yaml`` of the project, or else of the example app named ``stack``."""
    path = root / f"Pulumi.{stack}.yaml"
    example = root / EXAMPLES / stack / path.name
    return example if not path.exists() and example.exists() else path


def stack_names(root: Path = ROOT) -> list[str]:
    """Every stack ``read_stack_file`` finds: the project's, then the examples'."""
    files = [*sorted(root.glob("Pulumi.*.yaml")), *sorted(root.glob(f"{EXAMPLES}/*/Pulumi.*.yaml"))]
    return [file.name.removeprefix("Pulumi.").removesuffix(".yaml") for file in files]


def read_stack_file(stack: str, root: Path = ROOT) -> StackFile:
    """Read ``Pulumi.<stack>.yaml`` (``stack_path``); raises ``FileNotFoundError`` naming the
    file."""
    return read_stack_path(stack_path(stack, root))


def read_stack_path(path: Path) -> StackFile:
    """Read a stack file; the stack's name is the file's (``Pulumi.<stack>.yaml``)."""
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    document = yaml.safe_load(path.read_text()) or {}
    values = document.get("config") or {}
    prefix = f"{PROJECT}:"
    region = values.get("aws:region")
    config = {key[len(prefix) :]: value for key, value in values.items() if key.startswith(prefix)}
    return StackFile(
        stack=stack,
        path=path,
        region=str(region) if region is not None else None,
        config=config,
    )


def stack_file_config(stack: str = "dev") -> dict[str, object]:
    """The ``celery-ecs:`` keys of ``Pulumi.<stack>.yaml``, unprefixed."""
    return read_stack_file(stack).config


def main(argv: Sequence[str]) -> int:
    """``python -m devtools.render STACK_FILE...``: run the project's ``__main__.py`` under the
    mocks for each stack file and print every run as JSON (``{stack: {resources, outputs,
    secret_outputs}}``), for a process in another environment to read (the tests run it in the
    virtualenv Pulumi builds from requirements.txt alone, tests/test_entry_environments.py)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.render")
    parser.add_argument("stack_files", nargs="+", type=Path, metavar="STACK_FILE")
    arguments = parser.parse_args(argv)
    runs: dict[str, object] = {}
    for path in arguments.stack_files:
        stack_file = read_stack_path(path)
        run = run_program(
            stack_file.config,
            stack=stack_file.stack,
            region=stack_file.region or DEFAULT_REGION,
            entry_point=ROOT,
        )
        runs[stack_file.stack] = {
            "resources": [resource.to_json() for resource in run.resources],
            "outputs": run.outputs,
            "secret_outputs": sorted(run.secret_outputs),
        }
    json.dump(runs, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
