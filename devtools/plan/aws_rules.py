"""Validate a rendered stack against AWS's own rules, before AWS sees it.

Every resource the program registers is either mapped to the API calls its provider makes
(``devtools.plan.api_calls.MAPPINGS``) or declared as no AWS call (``NOT_AWS``); a type that is
neither is a finding, so a new kind of resource cannot go unchecked. For each call the request is
built from the resource's inputs and checked against the operation's input shape in botocore's
models (``devtools.plan.awsmodel``: enums, ranges, lengths, patterns, required members, types, and
the rules the models' documentation states). Every input must reach some request member or be
declared provider-only with its reason, so a new input cannot slip past unmapped.

IAM policies, trust policies and resource policies (SQS queue, SNS topic and KMS key policies)
are linted with parliament: unknown actions, prefixes and condition keys, resources that match
no resource type of the action, condition operators and value types. parliament accepts
``"Resource": "*"`` for an action with no resource-level permissions, even when the action
offers a condition key to scope it instead (``cloudwatch:PutMetricData`` and
``cloudwatch:namespace``); ``unscoped_star_grants`` asks for that key. Documents the API takes
as text (the ECR lifecycle policy, the dashboard body) must be JSON and follow their rules.
A ``Finding`` names the resource, the field and the rule it breaks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from typing import Any

import regex

from devtools.plan import awsmodel
from devtools.plan.api_calls import MAPPINGS, NOT_AWS
from devtools.plan.apimap import (
    MISSING,
    Attributes,
    Inputs,
    ListOf,
    Source,
    Struct,
    json_text,
)
from devtools.render import ProgramRun, Registration
from policy.invariants import aws_types


@dataclass(frozen=True)
class Finding:
    """One rule a resource breaks."""

    resource: str
    type: str
    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource} ({self.type}): {self.field}: {self.message} [{self.rule}]"


@dataclass(frozen=True)
class Report:
    """The outcome of validating one rendered stack."""

    findings: tuple[Finding, ...]
    #: API requests built and checked against the models.
    requests: int
    #: Policy documents linted (IAM, trust, queue, topic and key policies).
    policies: int

    @property
    def ok(self) -> bool:
        return not self.findings


def check_against_aws(run: ProgramRun) -> Report:
    findings: list[Finding] = []
    requests = 0
    for resource in sorted(run.resources, key=lambda r: (r.type, r.name)):
        resource_findings, resource_requests = check_resource(resource)
        findings += resource_findings
        requests += resource_requests
    documents = policy_documents(run)
    for linted in documents:
        resource = linted.resource
        findings += [
            Finding(resource.name, resource.type, linted.field, rule, message)
            for rule, message in lint_policy(linted.document, linted.not_granted_here)
        ]
    return Report(findings=tuple(findings), requests=requests, policies=len(documents))


def check_resource(resource: Registration) -> tuple[list[Finding], int]:
    """Every rule ``resource`` breaks, and how many requests were checked to find out."""

    def finding(field: str, rule: str, message: str) -> Finding:
        return Finding(resource.name, resource.type, field, rule, message)

    if not resource.custom or resource.type in NOT_AWS:
        return [], 0
    mapping = MAPPINGS.get(resource.type)
    if mapping is None:
        message = (
            "no API mapping for this resource type: add it to devtools/plan/api_calls.py MAPPINGS "
            "(or NOT_AWS if it makes no AWS call)"
        )
        return [finding("(type)", "mapped to the AWS API", message)], 0
    inputs = Inputs(resource)
    findings = []
    requests = 0
    for call in mapping.calls:
        resolved = {name: source.value(inputs) for name, source in call.members.items()}
        request = {name: value for name, value in resolved.items() if value is not MISSING}
        if call.when is not None and call.when not in request:
            continue
        requests += 1
        shape = awsmodel.operation_input(call.service, call.operation)
        for violation in awsmodel.check(request, shape, service=call.service):
            field = f"{call.operation}.{violation.path}{_origin(call.members, violation.path)}"
            findings.append(finding(field, violation.rule, violation.message))
    for path, check_document in mapping.documents.items():
        document = inputs.get(path)
        if document is MISSING:
            continue
        try:
            parsed = json_text(document)
        except ValueError as error:
            findings.append(finding(path, "document rules", f"not JSON: {error}"))
            continue
        for problem in check_document(parsed):
            findings.append(finding(path, "document rules", problem))
    for path in inputs.unread():
        if path.split(".")[0] not in mapping.provider_only:
            message = (
                "this input reaches no API member: map it in devtools/plan/api_calls.py, or "
                "declare it provider-only with the reason"
            )
            findings.append(finding(path, "mapped to the AWS API", message))
    return findings, requests


def _origin(members: Mapping[str, Source], path: str) -> str:
    """ " (from <input>)": the input the value at ``path`` of a request was built from."""
    name, rest = _first_segment(path)
    source = members.get(name)
    while source is not None:
        if isinstance(source, ListOf):
            source, rest = source.item, regex.sub(r"^\[\d+\]\.?", "", rest)
        elif isinstance(source, Struct) and rest:
            name, rest = _first_segment(rest)
            if name not in source.members:
                break
            source = source.members[name]
        elif isinstance(source, Attributes) and (key := regex.search(r"<([^>]+)>", rest)):
            return f" (from {source.origin_of(key[1])})"
        else:
            break
    return f" (from {source.origin})" if source is not None else ""


def _first_segment(path: str) -> tuple[str, str]:
    """("IpPermissions", "[0].IpRanges[0].CidrIp") of "IpPermissions[0].IpRanges[0].CidrIp"."""
    match = regex.match(r"([^.\[<]*)\.?(.*)", path)
    assert match is not None
    name, rest = match[1], match[2]
    if path[len(name) : len(name) + 1] in ("[", "<"):
        rest = path[len(name) :]
    return name, rest


@dataclass(frozen=True)
class PolicyDocument:
    """One policy the program renders, as parliament lints it."""

    resource: Registration
    #: The input that holds it.
    field: str
    document: dict[str, Any]
    #: Resource ARN formats parliament asks for that this kind of policy cannot grant (its
    #: RESOURCE_MISMATCH for them does not apply).
    not_granted_here: frozenset[str] = frozenset()


#: The ARN format parliament asks of KMS's alias operations besides the key's.
KMS_ALIAS_FORMAT = "arn:*:kms:*:*:alias/*"


def policy_documents(run: ProgramRun) -> list[PolicyDocument]:
    """Every policy the program renders: the roles' policies and trust policies, queue
    policies, SNS topic policies and KMS key policies.

    A trust policy is a resource policy without ``Resource``: its resource is the role it is
    attached to. It is linted with the role's ARN as ``Resource``, so parliament checks its
    actions against the resource they act on (``sts:AssumeRole`` on a role).

    A key policy says ``"Resource": "*"``, which in a key policy means the key it is attached
    to (KMS Developer Guide, "Elements in a key policy"); parliament reads it as every resource
    (RESOURCE_STAR). It is linted with the key's ARN instead, like a trust policy with its
    role's. The alias operations (CreateAlias, UpdateAlias, DeleteAlias) need permission on the
    alias as well as on the key, and the alias side is granted by IAM policies, never by a key
    policy (KMS Developer Guide, "Controlling access to aliases"): parliament's demand for an
    alias resource does not apply to a key policy, every other one does.
    """
    documents: list[PolicyDocument] = []
    for role in run.of_type(aws_types.IAM_ROLE):
        trust = json.loads(role.inputs["assumeRolePolicy"])
        for statement in _statements(trust):
            statement.setdefault("Resource", role.state["arn"])
        documents.append(PolicyDocument(role, "assumeRolePolicy", trust))
    for typ in (
        aws_types.IAM_ROLE_POLICY,
        aws_types.SQS_QUEUE_POLICY,
        aws_types.SNS_TOPIC_POLICY,
        aws_types.SNS_TOPIC,
    ):
        for policy in run.of_type(typ):
            if "policy" in policy.inputs:
                documents.append(
                    PolicyDocument(policy, "policy", json.loads(policy.inputs["policy"]))
                )
    for key in run.of_type(aws_types.KMS_KEY):
        if "policy" not in key.inputs:
            continue
        document = json.loads(key.inputs["policy"])
        for statement in _statements(document):
            if statement.get("Resource") in ("*", ["*"]):
                statement["Resource"] = key.state["arn"]
        documents.append(PolicyDocument(key, "policy", document, frozenset({KMS_ALIAS_FORMAT})))
    return documents


def _statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def lint_policy(
    document: Mapping[str, Any], not_granted_here: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(rule, message) of every finding parliament has for ``document``, whatever its severity:
    a policy this program renders has no reason for any. A RESOURCE_MISMATCH only about
    resource formats in ``not_granted_here`` is no finding (see ``PolicyDocument``)."""
    # Imported here: parliament loads its 10 MB of IAM definitions at import.
    import parliament

    policy = parliament.analyze_policy_string(json.dumps(document, sort_keys=True))
    found = []
    for finding in policy.findings:
        detail = finding.detail
        if finding.issue == "RESOURCE_MISMATCH" and isinstance(detail, list):
            detail = [d for d in detail if d.get("required_format") not in not_granted_here]
            if not detail:
                continue
        found.append((f"parliament {finding.issue}", _detail(detail)))
    found += [("iam UNSCOPED_RESOURCE_STAR", message) for message in unscoped_star_grants(document)]
    return sorted(found)


def unscoped_star_grants(document: Mapping[str, Any]) -> list[str]:
    """Allow statements on ``"Resource": "*"`` whose action has no resource-level permissions
    but has condition keys of its own service (the Service Authorization Reference's ""
    resource row, as parliament bundles it), with none of those keys in the statement's
    ``Condition``: the grant reaches every resource when the action offered a way to scope
    it (PutMetricData to one namespace)."""
    privileges = _privileges()
    found = []
    for statement in _statements(document):
        if statement.get("Effect") != "Allow" or statement.get("Resource") not in ("*", ["*"]):
            continue
        actions = statement.get("Action", [])
        used = {
            key.lower()
            for operator in _mapping(statement.get("Condition")).values()
            for key in _mapping(operator)
        }
        for action in [actions] if isinstance(actions, str) else actions:
            prefix, _, name = str(action).partition(":")
            resource_types = privileges.get((prefix, name.lower()), [])
            if any(entry["resource_type"] for entry in resource_types):
                continue  # has resource types: parliament's RESOURCE_STAR covers it
            keys = sorted(
                key
                for entry in resource_types
                for key in entry["condition_keys"]
                if key.startswith(f"{prefix}:")
            )
            if keys and not used & {key.lower() for key in keys}:
                found.append(
                    f"{action} on \"*\" without a condition on {', '.join(keys)}: scope it "
                    "with one"
                )
    return found


@cache
def _privileges() -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(service prefix, action in lower case) -> its resource types, as parliament bundles the
    Service Authorization Reference: built once per process (about 19,000 actions; building it
    took most of a plan's validation when it was done for every policy)."""
    import parliament

    return {
        (service["prefix"], privilege["privilege"].lower()): privilege["resource_types"]
        for service in parliament.iam_definition
        for privilege in service["privileges"]
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _detail(detail: Any) -> str:
    return detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)


def versions() -> dict[str, str]:
    """The packages whose rules the validation applies, with their versions."""
    return {name: version(name) for name in ("botocore", "parliament")}
