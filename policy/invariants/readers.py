"""Small readers of the props the engine hands a policy, and a stack's resources indexed by
what other resources refer to them by."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, ResourceValidationArgs
from pulumi_policy.proxy import UnknownValueError

from .restated import SERVICE_TAG


def number_text(value: object) -> str:
    """A value as a person writes it: the engine's 200.0 is 200."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def whole_number(value: object) -> int | None:
    """A whole number from a number or numeric text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    """A list prop as a list (absent: empty; one value: a list of it)."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def service_tag(props: Mapping[str, Any]) -> str | None:
    tag = as_mapping(props.get("tags")).get(SERVICE_TAG)
    return tag if isinstance(tag, str) else None


def container_definitions(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A task definition's containers; ``containerDefinitions`` is JSON text. Raises
    ``ValueError`` when it is not a JSON list of objects."""
    raw = props.get("containerDefinitions")
    parsed = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(parsed, Sequence) or isinstance(parsed, str):
        raise ValueError("containerDefinitions is not a list")
    if not all(isinstance(container, Mapping) for container in parsed):
        raise ValueError("containerDefinitions holds something other than objects")
    return list(parsed)


def containers_or_report(
    args: ResourceValidationArgs, report: ReportViolation
) -> list[Mapping[str, Any]]:
    try:
        return container_definitions(args.props)
    except ValueError as error:
        report(
            f"task definition '{args.name}': containerDefinitions cannot be read ({error}); "
            "give it a JSON list of container definitions",
            args.urn,
        )
        return []


def container_environment(container: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(item.get("name")): str(item.get("value", ""))
        for item in as_list(container.get("environment"))
        if isinstance(item, Mapping)
    }


def container_command(container: Mapping[str, Any]) -> list[str]:
    return [str(arg) for arg in as_list(container.get("command"))]


#: Options of the ``celery`` command that take a value (so the value is not the subcommand).
_CELERY_OPTIONS_WITH_VALUE = frozenset(
    {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}
)


def container_role(command: Sequence[str]) -> str:
    """What a container runs, from its command: ``worker`` or ``beat`` (the celery
    subcommand), ``web`` (gunicorn), or ``other`` (e.g. the enqueue command)."""
    args = list(command)
    python = len(args) >= 3 and re.fullmatch(r"python[0-9.]*", args[0].rsplit("/", 1)[-1])
    if python and args[1] == "-m":
        args = args[2:]
    if not args:
        return "other"
    program = args[0].rsplit("/", 1)[-1]
    if program == "gunicorn":
        return "web"
    if program != "celery":
        return "other"
    takes_value = False
    for token in args[1:]:
        if takes_value:
            takes_value = False
        elif token in _CELERY_OPTIONS_WITH_VALUE:
            takes_value = True
        elif not token.startswith("-"):
            return token if token in ("worker", "beat") else "other"
    return "other"


def ec2_id(resource: PolicyResource) -> str | None:
    """An EC2 resource's id (``sg-…``, ``vpc-…``): its ``id`` output, or the end of its ARN
    (``arn:aws:ec2:…:security-group/sg-…``) should the outputs not carry the id."""
    value = resource.props.get("id") or str(resource.props.get("arn") or "").rsplit("/", 1)[-1]
    return value if isinstance(value, str) and value else None


class StackIndex:
    """A stack's resources, found by what other resources' props refer to them by."""

    def __init__(self, resources: Sequence[PolicyResource]) -> None:
        self.resources = list(resources)
        self._by_reference: dict[str, PolicyResource] = {}
        for resource in self.resources:
            try:
                values = [resource.props.get(key) for key in ("arn", "id", "name")]
                values.append(ec2_id(resource))
            except UnknownValueError:
                # Not known until up (a resource the preview creates): nothing can refer to it
                # by these values yet, and a reference to it is itself unknown.
                continue
            for value in values:
                if isinstance(value, str) and value:
                    self._by_reference.setdefault(f"{resource.resource_type}|{value}", resource)

    def of_type(self, resource_type: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type == resource_type]

    def find(self, resource_type: str, reference: object) -> PolicyResource | None:
        if not isinstance(reference, str):
            return None
        return self._by_reference.get(f"{resource_type}|{reference}")
