"""Check a container definition against the ECS API model (botocore's RegisterTaskDefinition
input, shape ``ContainerDefinition``): unknown members, wrong types, enum values, required
members. Pulumi's ``containerDefinitions`` JSON uses the API's camelCase names."""

from __future__ import annotations

from functools import cache
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, Shape, StructureShape


@cache
def container_definition_shape() -> StructureShape:
    model = botocore.session.get_session().get_service_model("ecs")
    operation_input = model.operation_model("RegisterTaskDefinition").input_shape
    shape = operation_input.members["containerDefinitions"]
    assert isinstance(shape, ListShape)
    member = shape.member
    assert isinstance(member, StructureShape) and member.name == "ContainerDefinition"
    return member


def problems(value: Any, shape: Shape | None = None, path: str = "") -> list[str]:
    """Every way ``value`` violates ``shape`` (default: ContainerDefinition), with its path."""
    shape = shape or container_definition_shape()
    where = path or "containerDefinition"
    kind = shape.type_name
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return [f"{where}: expected an object ({shape.name}), got {type(value).__name__}"]
        found = [
            f"{where}: missing required member {name!r}"
            for name in shape.required_members
            if name not in value
        ]
        for name, item in value.items():
            member_path = f"{path}.{name}" if path else name
            if name not in shape.members:
                found.append(f"{member_path}: unknown member of {shape.name}")
            else:
                found += problems(item, shape.members[name], member_path)
        return found
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [
            problem
            for index, item in enumerate(value)
            for problem in problems(item, shape.member, f"{where}[{index}]")
        ]
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{where}: expected a map, got {type(value).__name__}"]
        return [
            problem
            for key, item in value.items()
            for problem in (
                problems(key, shape.key, f"{where}<key {key!r}>")
                + problems(item, shape.value, f"{where}[{key!r}]")
            )
        ]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {type(value).__name__}"]
        if shape.enum and value not in shape.enum:
            return [f"{where}: {value!r} is not one of {shape.enum}"]
        return []
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: expected an integer, got {type(value).__name__}"]
        return []
    if kind == "boolean":
        return (
            []
            if isinstance(value, bool)
            else [f"{where}: expected a boolean, got {type(value).__name__}"]
        )
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{where}: expected a number, got {type(value).__name__}"]
        return []
    return [f"{where}: shape type {kind!r} is not checked by this validator"]
