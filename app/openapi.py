"""The web API as an OpenAPI 3.1 document, built from the tasks' argument schemas.

``app.web`` serves it at ``GET /openapi.json``; the request body of ``POST /tasks/<name>`` is the
very schema the app validates that task's arguments with (``app.arguments``). The tests fuzz the
running API against this document with schemathesis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.arguments import whole
from celery_ecs.names import LIVENESS_PATH

#: Celery's task ids: lowercase UUIDs.
TASK_ID = whole("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

JSON = "application/json"

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "description": "Every error the service returns, including those of its HTTP server.",
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "description": "Stable and machine-readable, e.g. invalid_arguments.",
                        "type": "string",
                        "pattern": whole("[a-z_]+"),
                    },
                    "message": {"description": "For people; may change.", "type": "string"},
                    "details": {
                        "description": "invalid_arguments: one entry per argument problem; "
                        'unknown_task: {"allowed": [the task names]}.',
                        "anyOf": [
                            {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
                            {
                                "type": "object",
                                "required": ["allowed"],
                                "additionalProperties": False,
                                "properties": {
                                    "allowed": {"type": "array", "items": {"type": "string"}}
                                },
                            },
                        ],
                    },
                },
            }
        },
    },
    "Problem": {
        "type": "object",
        "required": ["field", "message"],
        "additionalProperties": False,
        "properties": {
            "field": {"description": "The argument's name.", "type": "string"},
            "message": {
                "description": "What is wrong with it, e.g. 'is required'.",
                "type": "string",
            },
        },
    },
    "TaskAccepted": {
        "type": "object",
        "required": ["id", "task", "status_url"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": TASK_ID},
            "task": {"type": "string"},
            "status_url": {"description": "Where to read the task's state.", "type": "string"},
        },
    },
    "TaskStatus": {
        "type": "object",
        "required": ["id", "state", "result"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": TASK_ID},
            "state": {
                "description": "Celery's state: PENDING (queued, unknown or expired), RECEIVED, "
                "STARTED, RETRY, SUCCESS, FAILURE or REVOKED.",
                "type": "string",
            },
            "result": {"description": "The task's return value on SUCCESS, else null."},
            "error": {
                "description": "Why the task failed (no traceback).",
                "type": "object",
                "required": ["type", "message"],
                "additionalProperties": False,
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _response(schema: Mapping[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    """A response whose body is JSON described by ``schema``."""
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    extra = {"headers": {"Retry-After": _RETRY_AFTER}} if retry_after else {}
    return _response(_ref("Error"), description, **extra)


#: The security scheme of the task operations (README, Web API: the keys and their rotation).
SECURITY_SCHEME = "apiKey"
_SECURITY_SCHEMES = {
    SECURITY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the stack's API keys, as Authorization: Bearer <key>. The keys "
        "are in the Secrets Manager secret of the stack output webApiKeysSecretArn.",
    }
}
_AUTHENTICATED: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
_UNAUTHORIZED = _error(
    "unauthorized: no API key, or not an accepted one (Authorization: Bearer <key>).",
)
_UNAUTHORIZED["headers"] = {
    "WWW-Authenticate": {
        "description": 'The challenge: Bearer realm="celery-ecs", with error="invalid_token" '
        "when a key was sent but not accepted.",
        "required": True,
        "schema": {"type": "string"},
    }
}
_AUTH_UNAVAILABLE = "auth_unavailable: the API keys cannot be read now (no key is checked)."


def _status_body(value: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"const": value}},
    }


#: Errors any operation may return, from the app or from gunicorn before the app.
_OTHER_ERRORS = _error(
    "Any other error: 405 method_not_allowed (with Allow), 500 internal_error, or an error of "
    "the HTTP server (400 bad_request, 431 request_header_fields_too_large, 501 not_implemented)."
)


def _submit(name: str, max_body_bytes: int) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"submit_{name}",
            "summary": f"Queue {name}",
            "tags": ["tasks"],
            "security": _AUTHENTICATED,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref(f"{name}_arguments")}},
            },
            "responses": {
                "202": _response(
                    _ref("TaskAccepted"),
                    "Queued.",
                    headers={
                        "Location": {
                            "description": "The task's status URL.",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    },
                ),
                "400": _error(
                    "malformed_json: the body is not UTF-8 JSON (or has duplicate keys, NaN, "
                    "numbers too long to read); bad_request: the request is not valid HTTP."
                ),
                "413": _error(
                    f"request_entity_too_large: the body is longer than {max_body_bytes} bytes "
                    "(WEB_MAX_BODY_BYTES), whether sent with Content-Length or chunked."
                ),
                "401": _UNAUTHORIZED,
                "415": _error(f"unsupported_media_type: the body is not {JSON}."),
                "422": _error(
                    "invalid_arguments: the body is not a JSON object, or its arguments break "
                    "the task's schema; details lists one {field, message} per problem."
                ),
                "503": _error(
                    "broker_unavailable: the task could not be queued. The broker may have "
                    f"received it: retry with the same idempotency key. {_AUTH_UNAVAILABLE}",
                    retry_after=True,
                ),
                "default": _OTHER_ERRORS,
            },
        }
    }


def document(
    task_arguments: Mapping[str, Mapping[str, Any]], max_body_bytes: int
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the web API; ``task_arguments``: task name -> its schema."""
    task_paths = {
        f"/tasks/{name}": _submit(name, max_body_bytes) for name in sorted(task_arguments)
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "celery-ecs web",
            "version": "1.0.0",
            "description": (
                "Queue allowlisted Celery tasks and read their results. Every /tasks request "
                "carries an API key (Authorization: Bearer <key>); the health checks and this "
                "document need none. JSON in, JSON out: every "
                'error is {"error": {"code", "message", "details"?}}. A POST to /tasks/{name} '
                "with another name is a 404 unknown_task. Integers are written without a "
                "fraction or exponent (25, not 25.0); booleans are not integers."
            ),
        },
        "paths": {
            **task_paths,
            "/tasks/{task_id}": {
                "get": {
                    "operationId": "task_status",
                    "summary": "A task's state, and its result or error",
                    "tags": ["tasks"],
                    "security": _AUTHENTICATED,
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": TASK_ID},
                        }
                    ],
                    "responses": {
                        "200": _response(_ref("TaskStatus"), "The task's state."),
                        "401": _UNAUTHORIZED,
                        "404": _error("not_found: not a task id (a lowercase UUID)."),
                        "503": _error(
                            "result_backend_unavailable: task states cannot be read now. "
                            + _AUTH_UNAVAILABLE,
                            retry_after=True,
                        ),
                        "default": _OTHER_ERRORS,
                    },
                }
            },
            LIVENESS_PATH: {
                "get": {
                    "operationId": "livez",
                    "summary": "The process answers (no broker call)",
                    "tags": ["health"],
                    "responses": {
                        "200": _response(_status_body("alive"), "Alive."),
                        "default": _OTHER_ERRORS,
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "The broker, and the result backend if separate, answer a PING",
                    "tags": ["health"],
                    "responses": {
                        "200": _response(_status_body("ready"), "Ready."),
                        "503": _error(
                            "not_ready: the message names what is unreachable (broker, "
                            "result_backend, api_keys).",
                            retry_after=True,
                        ),
                        "default": _OTHER_ERRORS,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "tags": ["meta"],
                    "responses": {
                        "200": _response({"type": "object"}, "The OpenAPI 3.1 document."),
                        "default": _OTHER_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": _SECURITY_SCHEMES,
            "schemas": {
                **_SCHEMAS,
                **{f"{name}_arguments": dict(schema) for name, schema in task_arguments.items()},
            }
        },
    }
