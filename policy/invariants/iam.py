"""IAM: no wildcard actions in any policy document, and ``"Resource": "*"`` only for actions that
have no resource-level permissions."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from . import aws_types
from .readers import as_list, as_mapping

#: Resource type -> the props that hold an IAM policy document (JSON text or an object).
POLICY_DOCUMENTS: Mapping[str, tuple[str, ...]] = {
    aws_types.IAM_ROLE: ("assumeRolePolicy",),
    aws_types.IAM_POLICY: ("policy",),
    aws_types.IAM_ROLE_POLICY: ("policy",),
    aws_types.IAM_USER_POLICY: ("policy",),
    aws_types.IAM_GROUP_POLICY: ("policy",),
    aws_types.SQS_QUEUE_POLICY: ("policy",),
    aws_types.SQS_QUEUE: ("policy",),
    aws_types.SNS_TOPIC_POLICY: ("policy",),
    aws_types.SNS_TOPIC: ("policy",),
    # A key policy grants on "*", which in a key policy means the key itself: only its actions
    # are checked here, like every other document's.
    aws_types.KMS_KEY: ("policy",),
    aws_types.KMS_KEY_POLICY: ("policy",),
    aws_types.SECRETSMANAGER_SECRET_POLICY: ("policy",),
    aws_types.ECR_REPOSITORY_POLICY: ("policy",),
    aws_types.S3_BUCKET_POLICY: ("policy",),
}

#: Identity policies (what their holder may do, to ``Resource``), by resource type -> the props
#: that hold one besides a role's inline policies. Trust, key and other resource policies are
#: not among them: there ``"Resource": "*"`` means the resource the policy is attached to.
IDENTITY_POLICY_DOCUMENTS: Mapping[str, tuple[str, ...]] = {
    aws_types.IAM_ROLE: (),
    aws_types.IAM_POLICY: ("policy",),
    aws_types.IAM_ROLE_POLICY: ("policy",),
    aws_types.IAM_USER_POLICY: ("policy",),
    aws_types.IAM_GROUP_POLICY: ("policy",),
}
#: The only actions an identity policy may allow on ``"Resource": "*"``: those with no
#: resource-level permissions, each with the condition key that must then scope it (None: the
#: action offers none). Service Authorization Reference ("Actions, resources, and condition
#: keys for" Amazon ECR, CloudWatch Logs, Amazon CloudWatch): GetAuthorizationToken and
#: DescribeLogGroups list no resource type and no condition key of their own; PutMetricData
#: lists no resource type and ``cloudwatch:namespace`` (CloudWatch User Guide, "Using
#: condition keys to limit access to CloudWatch namespaces"). The program grants these
#: (infra/cluster.py, infra/network.py, infra/worker_service.py).
STAR_RESOURCE_ACTIONS: Mapping[str, str | None] = {
    "ecr:getauthorizationtoken": None,
    "logs:describeloggroups": None,
    "cloudwatch:putmetricdata": "cloudwatch:namespace",
}


def _policy_documents(props: Mapping[str, Any], keys: Sequence[str]) -> Iterator[tuple[str, Any]]:
    for key in keys:
        if props.get(key) is not None:
            yield key, props.get(key)
    for inline in as_list(props.get("inlinePolicies")):
        if isinstance(inline, Mapping) and inline.get("policy") is not None:
            yield f"inline policy {inline.get('name')!r}", inline.get("policy")


def _parsed_policy_documents(
    props: Mapping[str, Any], keys: Sequence[str]
) -> Iterator[tuple[str, Mapping[str, Any] | str]]:
    """Each policy document of a resource, parsed, or what is wrong with it (a string)."""
    for key, raw in _policy_documents(props, keys):
        try:
            document = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            yield key, "is not valid JSON; fix the policy document"
            continue
        if not isinstance(document, Mapping):
            yield key, "is not a policy document object"
            continue
        yield key, document


def wildcard_actions(document: Mapping[str, Any]) -> list[str]:
    """The wildcard grants of an IAM policy document: ``*``, ``service:*`` or any pattern in
    an allowed action, and ``NotAction`` in an allow (which grants everything else)."""
    found = []
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            # A Deny with a wildcard (e.g. sqs:* without TLS) only takes rights away.
            continue
        if statement.get("NotAction") is not None:
            found.append(f"NotAction {json.dumps(as_list(statement.get('NotAction')))}")
        found += [
            f"Action {action!r}"
            for action in map(str, as_list(statement.get("Action")))
            if "*" in action
        ]
    return found


def validate_iam_actions(args: ResourceValidationArgs, report: ReportViolation) -> None:
    keys = POLICY_DOCUMENTS.get(args.resource_type)
    if keys is None:
        return
    for key, document in _parsed_policy_documents(args.props, keys):
        if isinstance(document, str):
            report(f"'{args.name}': {key} {document}", args.urn)
            continue
        for grant in wildcard_actions(document):
            report(
                f"'{args.name}' ({key}) allows {grant}; name the exact actions the role needs "
                "(IAM.1, IAM.21)",
                args.urn,
            )


def star_resource_grants(document: Mapping[str, Any]) -> list[str]:
    """What an identity policy allows on ``"Resource": "*"`` beyond ``STAR_RESOURCE_ACTIONS``:
    an action with resource-level permissions, or one without them that is not held by the
    condition key it offers (a condition on the key whose values hold no wildcard)."""
    found = []
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        if "*" not in map(str, as_list(statement.get("Resource"))):
            continue
        scoped = {
            str(key).lower()
            for operator in as_mapping(statement.get("Condition")).values()
            for key, values in as_mapping(operator).items()
            if as_list(values) and not any("*" in str(value) for value in as_list(values))
        }
        for action in map(str, as_list(statement.get("Action"))):
            if action.lower() not in STAR_RESOURCE_ACTIONS:
                found.append(f"{action!r} on every resource; name the resources it needs")
                continue
            key = STAR_RESOURCE_ACTIONS[action.lower()]
            if key is not None and key not in scoped:
                found.append(f"{action!r} on every resource without a condition on {key!r}")
    return found


def validate_iam_star_resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    keys = IDENTITY_POLICY_DOCUMENTS.get(args.resource_type)
    if keys is None:
        return
    for key, document in _parsed_policy_documents(args.props, keys):
        if isinstance(document, str):
            continue  # iam-no-wildcard-actions reports it
        for grant in star_resource_grants(document):
            report(f"'{args.name}' ({key}) allows {grant} (IAM least privilege)", args.urn)
