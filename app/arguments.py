"""The keyword arguments each task accepts over HTTP: one JSON Schema per task.

The schemas are the single source of the argument rules: ``app.web`` validates request bodies
with them (``jsonschema``, Draft 2020-12) and publishes them in its OpenAPI document
(``app.openapi``). Validation errors come back as ``{"field", "message"}`` pairs whose messages
speak JSON ("expected a string, got null"), not Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, TypeChecker, ValidationError, validators

#: Largest credit (either sign), in the ledger's minor units.
MAX_CREDIT_AMOUNT = 1_000_000_000
#: Longest retention for purge_expired_records: ten years, in seconds.
MAX_RETENTION_SECONDS = 10 * 366 * 24 * 3600


def whole(pattern: str) -> str:
    r"""A JSON Schema ``pattern`` (a search) that matches strings ``pattern`` matches entirely.

    Patterns are read by Python's re here and by ECMA-262 engines in clients (schemathesis uses
    Rust's), so they use only what both read alike: Python's ``$`` also matches before a final
    newline, so the end is "no character follows", ``(?![\s\S])``.
    """
    return rf"^(?:{pattern})(?![\s\S])"


#: Identifiers that become part of Redis key names (idempotency keys, report ids).
KEY = whole("[A-Za-z0-9:_-]*")
#: Free text: no control characters (category Cc), so no NUL, newline or escape reaches a worker.
TEXT = whole(r"[^\x00-\x1f\x7f-\x9f]*")

#: What a failed pattern means, in words.
PATTERN_RULES = {
    KEY: "may contain only letters, digits, ':', '_' and '-'",
    TEXT: "must not contain control characters (U+0000-U+001F, U+007F-U+009F)",
}
#: Why a JSON string that is not text fails the "string" type.
LONE_SURROGATE = "must not contain lone surrogates (U+D800-U+DFFF): they are not characters"

_SECONDS = {"type": "number", "minimum": 0, "maximum": 60}


def _arguments(
    title: str, properties: Mapping[str, Mapping[str, Any]], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }


APPLY_CREDIT = _arguments(
    "apply_credit arguments",
    {
        "idempotency_key": {
            "description": "Names the credit: a task with a key already applied changes nothing.",
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": KEY,
        },
        "account": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": TEXT},
        "amount": {
            "description": "Minor units; negative for a debit.",
            "type": "integer",
            "minimum": -MAX_CREDIT_AMOUNT,
            "maximum": MAX_CREDIT_AMOUNT,
            "not": {"const": 0},
        },
        "work_seconds": {
            **_SECONDS,
            "description": "Simulated work before the credit is applied, in seconds.",
        },
    },
    required=("idempotency_key", "account", "amount"),
)
GENERATE_REPORT = _arguments(
    "generate_report arguments",
    {
        "report_id": {
            "description": "Names the report; its progress is kept under this id.",
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": KEY,
        },
        "steps": {"type": "integer", "minimum": 1, "maximum": 1000},
        "step_seconds": {**_SECONDS, "description": "Duration of each step, in seconds."},
    },
    required=("report_id", "steps"),
)
PURGE_EXPIRED_RECORDS = _arguments(
    "purge_expired_records arguments",
    {
        "retention_seconds": {
            "description": "Ledger entries older than this are removed (default: 7 days).",
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_RETENTION_SECONDS,
        }
    },
)
NOOP = _arguments("noop arguments", {})


# --- Validation --------------------------------------------------------------------------------


# json.loads joins the two halves of an escaped surrogate pair, so any surrogate left is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_text(_checker: TypeChecker, value: object) -> bool:
    """A JSON string that is Unicode text: no lone surrogate, which JSON's \\u escapes allow."""
    return isinstance(value, str) and not _SURROGATE.search(value)


# I-JSON (RFC 7493), the profile of JSON for APIs: strings are text. A lone surrogate cannot be
# encoded (as UTF-8 for Redis, the worker's logs...), so a task given one would fail. Schemas
# cannot name surrogates portably (engines that cannot hold one refuse a surrogate range), so
# the rule is the "string" type's, for every string of every schema. (extend makes the class with
# jsonschema's create(), as Draft202012Validator itself is made: the stubs' type for either;
# types-jsonschema leaves extend unannotated.)
ArgumentsValidator: type[Draft202012Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("string", _is_text),
)


def validator_for(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A validator of ``schema``, which is checked against the Draft 2020-12 meta-schema."""
    ArgumentsValidator.check_schema(schema)
    return ArgumentsValidator(schema)


def problems(validator: Draft202012Validator, arguments: object) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` per unknown, missing or invalid argument, sorted."""
    found = {pair for error in validator.iter_errors(arguments) for pair in _problems(error)}
    return [{"field": field, "message": message} for field, message in sorted(found)]


def _problems(error: ValidationError) -> Iterator[tuple[str, str]]:
    # Errors from iter_errors have every field set (the stubs' Unset is for an error made by
    # hand), each holding JSON: Any.
    keyword = error.validator
    instance: Any = error.instance
    value: Any = error.validator_value
    schema: Any = error.schema
    # jsonschema names the missing and the unexpected properties only in its (Python) message.
    if keyword == "required":
        for name in value:
            if name not in instance:
                yield name, "is required"
    elif keyword == "additionalProperties":
        for name in instance.keys() - schema.get("properties", {}).keys():
            yield name, "is not an argument of this task"
    else:
        yield (str(error.path[0]) if error.path else ""), _message(error)


def _message(error: ValidationError) -> str:
    keyword = error.validator
    value: Any = error.validator_value
    schema: Any = error.schema
    if keyword == "type":
        types = _as_list(value)
        if "string" in types and isinstance(error.instance, str):
            return LONE_SURROGATE
        expected = " or ".join(_TYPE_NAMES[name] for name in types)
        return f"expected {expected}, got {describe(error.instance)}"
    if keyword in ("minLength", "maxLength"):
        if "minLength" in schema and "maxLength" in schema:
            return f"must be {schema['minLength']} to {schema['maxLength']} characters long"
        return f"must be at {'least' if keyword == 'minLength' else 'most'} {value} characters long"
    if keyword in ("minimum", "maximum"):
        if "minimum" in schema and "maximum" in schema:
            return f"must be between {_json(schema['minimum'])} and {_json(schema['maximum'])}"
        return f"must be at {'least' if keyword == 'minimum' else 'most'} {_json(value)}"
    if keyword == "pattern":
        return PATTERN_RULES.get(value, f"must match the pattern {_json(value)}")
    if keyword == "not" and value.keys() == {"const"}:
        return f"must not be {_json(value['const'])}"
    return f"does not satisfy {keyword}"  # a keyword without words of its own (see WORDED)


#: The keywords worded above; a test checks that the schemas use no other.
WORDED = frozenset(
    {
        "required",
        "additionalProperties",
        "type",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "pattern",
        "not",
    }
)

_TYPE_NAMES = {
    "null": "null",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
}


def describe(value: object) -> str:
    """A JSON value for a message: scalars as written in JSON, strings and containers by type."""
    if value is None or isinstance(value, bool):
        return _json(value)
    if isinstance(value, int | float):
        text = _json(value)
        return text if len(text) <= 24 else "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]
