"""Containers: hardened (read-only root, non-root user, not privileged, a log driver), and no
secret in their environment."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, ResourceValidationArgs

from . import aws_types
from .readers import as_mapping, container_environment, containers_or_report

_ROOT_USERS = frozenset({"0", "root"})


def validate_container_hardening(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.ECS_TASK_DEFINITION:
        return
    # A task-level setting, and a constant: read before the containers (unknown in a preview).
    if args.props.get("pidMode") == "host":
        report(
            f"task definition '{args.name}' shares the host's process namespace (pidMode "
            "host); remove pidMode (ECS.3)",
            args.urn,
        )
    for container in containers_or_report(args, report):
        where = f"container '{container.get('name')}' of task definition '{args.name}'"
        if container.get("readonlyRootFilesystem") is not True:
            report(
                f"{where} has a writable root filesystem; set readonlyRootFilesystem to true "
                "and mount a volume where it must write (ECS.5)",
                args.urn,
            )
        user = container.get("user")
        if not isinstance(user, str) or not user.strip():
            report(
                f"{where} sets no user, so it runs as the image's user (root unless the image "
                "says otherwise); set user to a non-root uid:gid such as 10001:10001 (ECS.20)",
                args.urn,
            )
        elif user.split(":", 1)[0].strip() in _ROOT_USERS:
            report(
                f"{where} runs as user {user!r}; set user to a non-root uid:gid such as "
                "10001:10001 (ECS.20)",
                args.urn,
            )
        if container.get("privileged") is True:
            report(f"{where} is privileged; remove privileged (ECS.4)", args.urn)
        if not as_mapping(container.get("logConfiguration")).get("logDriver"):
            report(
                f"{where} has no logConfiguration; send its logs with the awslogs driver (ECS.9)",
                args.urn,
            )


#: Words of a variable name (split at anything but letters and digits) that say its value is a
#: credential.
_SECRET_WORDS = frozenset(
    {
        "PASSWORD",
        "PASSWD",
        "PWD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "APIKEY",
        "SECRETKEY",
        "ACCESSKEY",
        "APITOKEN",
        "AUTHTOKEN",
    }
)
#: Name endings that mean the value only points at or names something (a Redis key prefix, a
#: secret's ARN, a file holding the secret).
_REFERENCE_SUFFIXES = ("_PREFIX", "_SUFFIX", "_NAME", "_ARN", "_FILE", "_PATH", "_ID_FIELD")
#: Values that are credentials whatever the name: a URL with a password in it, an AWS access
#: key id, a PEM private key.
_SECRET_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a URL with a password in it", re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.I)),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)


def secret_reason(name: str, value: str) -> str | None:
    """Why a variable looks like it carries a secret, or None."""
    for what, pattern in _SECRET_VALUES:
        if pattern.search(value):
            return f"its value is {what}"
    upper = name.upper()
    if upper.endswith(_REFERENCE_SUFFIXES):
        return None
    words = set(re.split(r"[^A-Z0-9]+", upper))
    found = sorted(words & _SECRET_WORDS)
    if found:
        return f"its name contains {found[0]}"
    return None


def validate_no_secrets_in_environment(
    args: ResourceValidationArgs, report: ReportViolation
) -> None:
    if args.resource_type != aws_types.ECS_TASK_DEFINITION:
        return
    for container in containers_or_report(args, report):
        for name, value in sorted(container_environment(container).items()):
            reason = secret_reason(name, value)
            if reason is not None:
                # The value itself never goes into the message: it may be the secret.
                report(
                    f"container '{container.get('name')}' of task definition '{args.name}' "
                    f"has {name} in its environment, which looks like a secret ({reason}); "
                    "move it to the container's secrets (valueFrom a Secrets Manager or SSM "
                    "ARN) so it never appears in the task definition (ECS.8)",
                    args.urn,
                )
