"""The language the API table is written in: how a Pulumi resource type reaches AWS.

The table itself, ``MAPPINGS`` in ``devtools.plan.api_calls``, maps a Pulumi type to its ``Api``, a
list of ``Call``s. A call names the service and operation of botocore's models and its members; a
member's value is a Pulumi input (a dotted path into the inputs as the mocks receive them,
camelCase) or a ``Source``: the resource's physical name, its id or ARN, a structure or list built
from inputs, load-balancer style Key/Value attributes. A converter turns Pulumi's form of a value
into the API's (a tag map into a tag list, ``assignPublicIp: true`` into ``ENABLED``). ``Inputs``
reads a resource's inputs and remembers which ones a call consumed (``devtools.plan.aws_rules``
reports the rest).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema
from botocore.model import ServiceModel, StringShape

from devtools.plan import awsmodel
from devtools.render import Registration


class _Missing:
    """An input that is not set: the member is left out of the request."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Inputs:
    """A resource's inputs, read by dotted path; remembers what was read."""

    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        self.read: set[str] = set()

    def get(self, path: str) -> Any:
        self.read.add(path)
        value: Any = self.registration.inputs
        for part in path.split("."):
            if not isinstance(value, Mapping) or value.get(part) is None:
                return MISSING
            value = value[part]
        return value

    def unread(self) -> list[str]:
        """Input paths no call consumed (a path covers everything below it)."""
        return [
            leaf
            for leaf in _leaves(self.registration.inputs)
            if not any(leaf == path or leaf.startswith(f"{path}.") for path in self.read)
        ]


def _leaves(value: Mapping[str, Any], prefix: str = "") -> list[str]:
    leaves = []
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            leaves += _leaves(item, f"{path}.")
        else:
            leaves.append(path)
    return leaves


# --- sources: where a request member's value comes from -------------------------------------


@dataclass(frozen=True)
class In:
    """The Pulumi input at ``path``, optionally converted to the API's form (a converter may
    return MISSING to leave the member out); ``default`` is what the provider sends when the
    input is not set."""

    path: str
    convert: Callable[[Any], Any] | None = None
    default: Any = MISSING

    @property
    def origin(self) -> str:
        return self.path

    def value(self, inputs: Inputs) -> Any:
        value = inputs.get(self.path)
        if value is MISSING:
            return self.default
        return value if self.convert is None else self.convert(value)


@dataclass(frozen=True)
class Known:
    """What the provider knows without an input: the physical name it gives the resource, its
    id or ARN once it exists, or a fixed value."""

    origin: str
    resolve: Callable[[Registration], Any]
    #: Inputs this value is made from (marked as consumed).
    reads: tuple[str, ...] = ()

    def value(self, inputs: Inputs) -> Any:
        for path in self.reads:
            inputs.get(path)
        return self.resolve(inputs.registration)


NAME = Known(
    "the name (auto-named unless given)",
    lambda r: r.inputs.get("name") or r.physical_name,
    ("name", "namePrefix"),
)
ARN = Known("the resource's ARN", lambda r: r.state["arn"])
ID = Known("the resource's id", lambda r: r.id)


def const(value: Any) -> Known:
    return Known(f"always {value!r}", lambda _: value)


@dataclass(frozen=True)
class Struct:
    """A structure of several members; left out when none of them is set."""

    members: Mapping[str, Source]

    @property
    def origin(self) -> str:
        return ", ".join(sorted({source.origin for source in self.members.values()}))

    def value(self, inputs: Inputs) -> Any:
        resolved = {name: source.value(inputs) for name, source in self.members.items()}
        return {name: value for name, value in resolved.items() if value is not MISSING} or MISSING


def struct(**members: Source | str) -> Struct:
    return Struct({name: _source(member) for name, member in members.items()})


@dataclass(frozen=True)
class ListOf:
    """A one-element list: a Pulumi resource that is one item of an API list."""

    item: Source

    @property
    def origin(self) -> str:
        return self.item.origin

    def value(self, inputs: Inputs) -> Any:
        item = self.item.value(inputs)
        return MISSING if item is MISSING else [item]


@dataclass(frozen=True)
class Attributes:
    """Attributes whose values the API takes as text: a list of Key/Value structures (load
    balancers, target groups), or a map (``as_map``: SQS queues)."""

    keys: Mapping[str, Source]
    as_map: bool = False

    @property
    def origin(self) -> str:
        return ", ".join(sorted(source.origin for source in self.keys.values()))

    def origin_of(self, key: str) -> str:
        return self.keys[key].origin if key in self.keys else self.origin

    def value(self, inputs: Inputs) -> Any:
        values = {
            key: awsmodel.text(value)
            for key, source in self.keys.items()
            if (value := source.value(inputs)) is not MISSING
        }
        if self.as_map:
            return values or MISSING
        return [{"Key": key, "Value": value} for key, value in values.items()] or MISSING


Source = In | Known | Struct | ListOf | Attributes


def _source(member: Source | str) -> Source:
    return In(member) if isinstance(member, str) else member


# --- converters: Pulumi's form of a value -> the API's --------------------------------------


def pascal(**renames: str) -> Callable[[Any], Any]:
    """camelCase keys -> PascalCase at every depth (``renames`` where the API differs)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                renames.get(key, key[:1].upper() + key[1:]): convert(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return convert


def tag_list(key: str = "Key", value: str = "Value") -> Callable[[Any], Any]:
    """Pulumi's tag map -> the API's list of key/value structures."""
    return lambda tags: [{key: name, value: text} for name, text in sorted(tags.items())]


def enabled(value: Any) -> str:
    return "ENABLED" if value else "DISABLED"


def awsvpc(subnets: str, security_groups: str, public_ip: str) -> Callable[[Any], Any]:
    """Pulumi's network configuration -> ``awsvpcConfiguration`` with the API's member names."""

    def convert(network: Mapping[str, Any]) -> dict[str, Any]:
        names = {"subnets": subnets, "securityGroups": security_groups}
        configuration = {names[key]: value for key, value in network.items() if key in names}
        if "assignPublicIp" in network:
            configuration[public_ip] = enabled(network["assignPublicIp"])
        return {"awsvpcConfiguration": configuration}

    return convert


def ecs_parameters(target: Mapping[str, Any]) -> dict[str, Any]:
    """An EventTarget's ``ecsTarget`` -> PutTargets' ``EcsParameters`` (whose capacity provider
    strategy items keep ECS's camelCase)."""
    converted: dict[str, Any] = pascal()(
        {key: value for key, value in target.items() if key not in _ECS_OWN}
    )
    if "networkConfiguration" in target:
        converted["NetworkConfiguration"] = awsvpc("Subnets", "SecurityGroups", "AssignPublicIp")(
            target["networkConfiguration"]
        )
    if "capacityProviderStrategies" in target:
        converted["CapacityProviderStrategy"] = target["capacityProviderStrategies"]
    return converted


_ECS_OWN = ("networkConfiguration", "capacityProviderStrategies")


def json_text(text: str) -> Any:
    return json.loads(text)


def cloudwatch_dimensions(dimensions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pulumi's dimension map -> CloudWatch's list of Name/Value structures (sorted: the
    provider reads a map, whose order carries no meaning)."""
    return [{"Name": name, "Value": value} for name, value in sorted(dimensions.items())]


def metric_queries(queries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A MetricAlarm's ``metricQueries`` -> PutMetricAlarm's ``Metrics``. A query's ``metric``
    becomes ``MetricStat``: its period, stat and unit beside ``Metric`` (namespace, name,
    dimensions), as the API nests them. Any other key is passed on, so the model names it."""

    def convert(query: Mapping[str, Any]) -> dict[str, Any]:
        converted: dict[str, Any] = pascal()({k: v for k, v in query.items() if k != "metric"})
        if "metric" in query:
            metric = dict(query["metric"])
            stat = {key: metric.pop(key) for key in ("period", "stat", "unit") if key in metric}
            if "dimensions" in metric:
                metric["dimensions"] = cloudwatch_dimensions(metric["dimensions"])
            converted["MetricStat"] = {**pascal()(stat), "Metric": pascal()(metric)}
        return converted

    return [convert(query) for query in queries]


_STEP_BOUNDS = ("MetricIntervalLowerBound", "MetricIntervalUpperBound")


def step_scaling(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """``stepScalingPolicyConfiguration`` -> the API's structure. Pulumi takes the step bounds
    as text, so that a bound of 0 differs from none; the provider parses them as numbers
    (terraform-provider-aws ``expandStepAdjustments``) and leaves an empty one out. Text that
    is no number stays text: the model check reports it, as the provider refuses it."""
    converted: dict[str, Any] = pascal()(configuration)

    def bound(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return float(value)
        except ValueError:
            return value

    converted["StepAdjustments"] = [
        {
            key: bound(value) if key in _STEP_BOUNDS else value
            for key, value in step.items()
            if not (key in _STEP_BOUNDS and value == "")
        }
        for step in converted.get("StepAdjustments", [])
    ]
    if not converted["StepAdjustments"]:
        del converted["StepAdjustments"]
    return converted


# --- documents the API takes as text ---------------------------------------------------------


def json_only(_: Any) -> list[str]:
    """A document whose only known rule is that it is JSON (which the validator checks before
    any document rule): the CloudWatch dashboard body, whose structure botocore's models and
    their documentation do not describe (they point to the CloudWatch user guide)."""
    return []


def lifecycle_policy_problems(document: Any) -> list[str]:
    """An ECR lifecycle policy against ECR's rules (User Guide, "Lifecycle policy
    properties"); the enums come from the ECR model (``TagStatus``, ``ImageActionType``)."""
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or 'policy'}: {error.message}"
        for error in _lifecycle_validator().iter_errors(document)
    ]
    if problems:
        return problems
    priorities = [rule["rulePriority"] for rule in document["rules"]]
    if len(set(priorities)) != len(priorities):
        problems.append("rules: rulePriority values must be unique")
    for rule in document["rules"]:
        if rule["selection"]["tagStatus"] == "any" and rule["rulePriority"] != max(priorities):
            problems.append("rules: a rule with tagStatus any must have the highest rulePriority")
    return problems


def _enum(model: ServiceModel, shape_name: str) -> list[str]:
    """The values of a string enumeration of ``model``."""
    shape = model.shape_for(shape_name)
    assert isinstance(shape, StringShape), f"{shape_name} is not a string shape"
    return shape.enum


@cache
def _lifecycle_validator() -> jsonschema.Draft202012Validator:
    ecr = awsmodel.service_model("ecr")
    strings = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    selection = {
        "type": "object",
        "required": ["tagStatus", "countType", "countNumber"],
        "additionalProperties": False,
        "properties": {
            "tagStatus": {"enum": [s.lower() for s in _enum(ecr, "TagStatus")]},
            "tagPatternList": strings,
            "tagPrefixList": strings,
            "storageClass": {"type": "string"},
            "countType": {
                "enum": [
                    "imageCountMoreThan",
                    "sinceImagePushed",
                    "sinceImagePulled",
                    "sinceImageTransitioned",
                ]
            },
            "countUnit": {"enum": ["days"]},
            "countNumber": {"type": "integer", "minimum": 1},
        },
        "allOf": [
            {
                "if": {"properties": {"tagStatus": {"const": "tagged"}}},
                "then": {
                    "anyOf": [{"required": ["tagPatternList"]}, {"required": ["tagPrefixList"]}]
                },
            },
            {
                # A count of images takes no unit; an age takes days.
                "if": {"properties": {"countType": {"const": "imageCountMoreThan"}}},
                "then": {"not": {"required": ["countUnit"]}},
                "else": {"required": ["countUnit"]},
            },
        ],
    }
    action = {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {"enum": [a.lower() for a in _enum(ecr, "ImageActionType")]},
            "targetStorageClass": {"type": "string"},
        },
    }
    rule = {
        "type": "object",
        "required": ["rulePriority", "selection", "action"],
        "additionalProperties": False,
        "properties": {
            "rulePriority": {"type": "integer", "minimum": 1},
            "description": {"type": "string"},
            "selection": selection,
            "action": action,
        },
    }
    return jsonschema.Draft202012Validator(
        {
            "type": "object",
            "required": ["rules"],
            "additionalProperties": False,
            "properties": {"rules": {"type": "array", "minItems": 1, "items": rule}},
        }
    )


# --- calls and APIs: what a row of the table holds ------------------------------------------


@dataclass(frozen=True)
class Call:
    """One API call the provider makes: service and operation as botocore names them, and each
    request member's source (a string is the path of a Pulumi input)."""

    service: str
    operation: str
    members: Mapping[str, Source]
    #: The member without which the provider makes no such call (an attribute call for an
    #: input that is not set); None: always made.
    when: str | None = None


def call(service: str, operation: str, when: str | None = None, **members: Source | str) -> Call:
    return Call(service, operation, {name: _source(m) for name, m in members.items()}, when)


@dataclass(frozen=True)
class Api:
    """How a Pulumi resource type reaches AWS."""

    calls: tuple[Call, ...]
    #: Inputs the provider uses itself rather than sending them as such, with the reason.
    provider_only: Mapping[str, str] = field(default_factory=dict)
    #: Input -> a check of the JSON document it holds (documents the API takes as text).
    documents: Mapping[str, Callable[[Any], list[str]]] = field(default_factory=dict)


def api(*calls: Call, **options: Any) -> Api:
    return Api(calls=calls, **options)
