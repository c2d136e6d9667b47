"""Validation against AWS's own rules (devtools/plan/: aws_rules, api_calls, apimap, awsmodel).

Every shipped stack file passes; every kind of check catches a deliberate mistake, named by
resource, field and rule. (Every tested configuration passes too: tests/test_infra_program.py.)
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape

from devtools.plan import awsmodel
from devtools.plan.api_calls import MAPPINGS
from devtools.plan.apimap import lifecycle_policy_problems
from devtools.plan.aws_rules import (
    KMS_ALIAS_FORMAT,
    check_against_aws,
    lint_policy,
    policy_documents,
)
from devtools.render import ProgramRun, Registration, read_stack_file
from policy.invariants import aws_types
from tests.support import ROOT, shared_run, stack_run

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
#: Everything the program can register at once: EventBridge, HTTPS, access logs, NAT and flow
#: logs (production), a Fargate Spot pool, the alert topic with its key and e-mail subscription.
EVERYTHING: dict[str, object] = {
    "production": True,
    "scheduler": "eventbridge",
    "workers": [
        {"name": "short", "queues": ["default"], "taskTimeout": 60, "fargateSpot": True},
        {"name": "long", "queues": ["long"], "taskTimeout": 1800},
    ],
    "web": {
        "certificateArn": CERTIFICATE,
        "accessLogsBucket": "alb-logs-bucket",
        "targetRequestsPerTask": 100,
    },
    "network": {"natGateways": "perAz"},
    "alerts": {"email": "ops@example.com"},
}


@pytest.fixture(scope="module")
def everything() -> ProgramRun:
    return shared_run(EVERYTHING)


@pytest.mark.parametrize("stack", sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml")))
def test_every_shipped_stack_passes(stack: str) -> None:
    stack_file = read_stack_file(stack)
    run = stack_run(stack_file.config, stack=stack, region=stack_file.region or "us-east-1")
    report = check_against_aws(run)
    assert report.ok, "\n".join(map(str, report.findings))
    assert report.requests > 50 and report.policies >= 5


def test_everything_the_program_registers_is_mapped_and_passes(everything: ProgramRun) -> None:
    report = check_against_aws(everything)
    assert report.ok, "\n".join(map(str, report.findings))
    custom = {r.type for r in everything.resources if r.custom}
    assert {typ for typ in custom if typ.startswith("aws:")} <= set(MAPPINGS)


def mutated(
    run: ProgramRun, typ: str, name: str, change: Callable[[dict[str, Any]], Any]
) -> ProgramRun:
    """``run`` with one resource's inputs changed."""
    resources = []
    for resource in run.resources:
        if resource.type == typ and resource.name == name:
            inputs = copy.deepcopy(resource.inputs)
            change(inputs)
            resource = dataclasses.replace(resource, inputs=inputs)
        resources.append(resource)
    assert resources != run.resources, f"no {typ} named {name}"
    return ProgramRun(resources=resources, outputs=run.outputs)


def container(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def apply(inputs: dict[str, Any]) -> None:
        definitions = json.loads(inputs["containerDefinitions"])
        change(definitions[0])
        inputs["containerDefinitions"] = json.dumps(definitions)

    return apply


def policy(
    change: Callable[[dict[str, Any]], Any], key: str = "policy"
) -> Callable[[dict[str, Any]], None]:
    def apply(inputs: dict[str, Any]) -> None:
        document = json.loads(inputs[key])
        change(document["Statement"][0])
        inputs[key] = json.dumps(document)

    return apply


TASK = aws_types.ECS_TASK_DEFINITION
ROLE_POLICY = aws_types.IAM_ROLE_POLICY
SERVICE = aws_types.ECS_SERVICE
ALARM = aws_types.CLOUDWATCH_METRIC_ALARM
KEY = aws_types.KMS_KEY
MISTAKES = [
    # (id, type, resource, change, field contains, rule contains)
    pytest.param(
        TASK, "web-task", container(lambda c: c.update(stopTimeout=150)),
        "containerDefinitions[0].stopTimeout", "The valid values for Fargate are 2-120 seconds",
        id="task-stop-timeout-above-fargate-cap",
    ),
    pytest.param(
        TASK, "worker-long-task", container(lambda c: c["healthCheck"].update(retries=0)),
        "containerDefinitions[0].healthCheck.retries", "between 1 and 10 retries",
        id="task-health-check-retries",
    ),
    pytest.param(
        TASK, "web-task", container(lambda c: c.update(readOnlyRootFilesystem=True)),
        "containerDefinitions[0].readOnlyRootFilesystem", "unknown member",
        id="task-misspelt-member",
    ),
    pytest.param(
        TASK, "web-task", container(lambda c: c["logConfiguration"].update(logDriver="cloudwatch")),
        "logConfiguration.logDriver", "enum", id="task-log-driver",
    ),
    pytest.param(
        TASK, "web-task", lambda i: i["runtimePlatform"].update(cpuArchitecture="AMD64"),
        "runtimePlatform.cpuArchitecture", "enum", id="task-cpu-architecture",
    ),
    pytest.param(
        TASK, "web-task", lambda i: i.update(family="celery ecs web"),
        "RegisterTaskDefinition.family", "Up to 255 letters", id="task-family-characters",
    ),
    pytest.param(
        SERVICE, "web-service", lambda i: i["networkConfiguration"].pop("subnets"),
        "networkConfiguration.awsvpcConfiguration", "required", id="service-without-subnets",
    ),
    pytest.param(
        SERVICE, "worker-short-service",
        lambda i: i["capacityProviderStrategies"][1].update(weight=2000),
        "capacityProviderStrategy[1].weight", "max", id="service-spot-weight",
    ),
    pytest.param(
        aws_types.ELASTICACHE_REPLICATION_GROUP, "broker",
        lambda i: i.update(finalSnapshotIdentifier="Celery-Final"),
        "DeleteReplicationGroup.FinalSnapshotIdentifier", "stored as a lowercase string",
        id="broker-final-snapshot-capitals",
    ),
    pytest.param(
        SERVICE, "web-service", lambda i: i.update(propagateTags="TASK"),
        "CreateService.propagateTags", "enum", id="service-propagate-tags",
    ),
    pytest.param(
        aws_types.LB_TARGET_GROUP, "web-tg", lambda i: i["healthCheck"].update(timeout=1),
        "HealthCheckTimeoutSeconds (from healthCheck.timeout)", "min", id="target-group-timeout",
    ),
    pytest.param(
        aws_types.LB_TARGET_GROUP, "web-tg", lambda i: i.update(deregistrationDelay=3601),
        "<deregistration_delay.timeout_seconds> (from deregistrationDelay)", "0-3600",
        id="target-group-deregistration-delay",
    ),
    pytest.param(
        aws_types.LB_LISTENER, "web-http",
        lambda i: i["defaultActions"][0]["redirect"].update(statusCode="HTTP_308"),
        "DefaultActions[0].RedirectConfig.StatusCode", "enum", id="listener-redirect-status",
    ),
    pytest.param(
        aws_types.LB_LISTENER, "web-https", lambda i: i.update(port=0),
        "CreateListener.Port (from port)", "min", id="listener-port",
    ),
    pytest.param(
        aws_types.LB_LOAD_BALANCER, "web-alb", lambda i: i.update(idleTimeout=4001),
        "<idle_timeout.timeout_seconds> (from idleTimeout)", "valid range is 1-4000",
        id="alb-idle-timeout",
    ),
    pytest.param(
        aws_types.LB_LOAD_BALANCER, "web-alb",
        lambda i: i.update(desyncMitigationMode="off"),
        "<routing.http.desync_mitigation_mode> (from desyncMitigationMode)",
        "monitor, defensive, and strictest", id="alb-desync-mitigation",
    ),
    pytest.param(
        aws_types.LB_LOAD_BALANCER, "web-alb", lambda i: i.update(loadBalancerType="app"),
        "CreateLoadBalancer.Type", "enum", id="alb-type",
    ),
    pytest.param(
        aws_types.ELASTICACHE_REPLICATION_GROUP, "broker",
        lambda i: i.update(nodeType="cache.t4g.mikro"),
        "CacheNodeType (from nodeType)", "node types are supported", id="broker-node-type",
    ),
    pytest.param(
        aws_types.ELASTICACHE_REPLICATION_GROUP, "broker",
        lambda i: i.update(numCacheClusters=7),
        "NumCacheClusters", "maximum permitted value", id="broker-too-many-nodes",
    ),
    pytest.param(
        aws_types.ELASTICACHE_REPLICATION_GROUP, "broker",
        lambda i: i.update(authToken="short!"),
        "AuthToken", "at least 16 characters", id="broker-auth-token",
    ),
    pytest.param(
        aws_types.ELASTICACHE_PARAMETER_GROUP, "broker",
        lambda i: i.update(family="valkey9"),
        "CacheParameterGroupFamily (from family)", "Valid values are", id="parameter-group-family",
    ),
    pytest.param(
        aws_types.APPAUTOSCALING_TARGET, "web-scaling",
        lambda i: i.update(serviceNamespace="fargate"),
        "RegisterScalableTarget.ServiceNamespace", "enum", id="scaling-target-namespace",
    ),
    pytest.param(
        aws_types.APPAUTOSCALING_POLICY, "web-scaling-cpu",
        lambda i: i["targetTrackingScalingPolicyConfiguration"][
            "predefinedMetricSpecification"
        ].update(predefinedMetricType="ECSServiceCPU"),
        "PredefinedMetricSpecification.PredefinedMetricType", "enum", id="scaling-policy-metric",
    ),
    pytest.param(
        aws_types.APPAUTOSCALING_POLICY, "worker-short-scaling-backlog",
        lambda i: i["targetTrackingScalingPolicyConfiguration"]["customizedMetricSpecification"][
            "metrics"
        ][0].pop("id"),
        "Metrics[0]", "required", id="scaling-policy-metric-query-id",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_EVENT_RULE, "schedule-nightly-report",
        lambda i: i.update(state="ON"), "PutRule.State", "enum", id="rule-state",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_EVENT_RULE, "schedule-nightly-report",
        lambda i: i.update(scheduleExpression="cron(" + "0 " * 200 + ")"),
        "PutRule.ScheduleExpression", "max", id="rule-expression-length",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_EVENT_TARGET, "schedule-nightly-report",
        lambda i: i["ecsTarget"].update(taskCount=0),
        "EcsParameters.TaskCount", "min", id="target-task-count",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_EVENT_TARGET, "schedule-nightly-report",
        lambda i: i["inputTransformer"]["inputPaths"].update({"!": "$.time"}),
        "InputPathsMap<key '!'>", "pattern", id="target-input-path-key",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_LOG_GROUP, "cluster-web", lambda i: i.update(retentionInDays=45),
        "PutRetentionPolicy.retentionInDays", "Possible values are", id="log-retention",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_LOG_GROUP, "cluster-web", lambda i: i.update(name="/" + "a" * 512),
        "CreateLogGroup.logGroupName", "max", id="log-group-name-length",
    ),
    pytest.param(
        aws_types.ECR_REPOSITORY, "celery-ecs-test",
        lambda i: i.update(imageTagMutability="FROZEN"),
        "CreateRepository.imageTagMutability", "enum", id="ecr-tag-mutability",
    ),
    pytest.param(
        aws_types.ECR_LIFECYCLE_POLICY, "celery-ecs-test",
        lambda i: i.update(policy=json.dumps({"rules": [{"rulePriority": 1}]})),
        "PutLifecyclePolicy.lifecyclePolicyText", "min", id="ecr-lifecycle-policy-length",
    ),
    pytest.param(
        aws_types.ECR_LIFECYCLE_POLICY, "celery-ecs-test",
        lambda i: i.update(policy=i["policy"].replace("imageCountMoreThan", "imageCountAbove")),
        "policy", "document rules", id="ecr-lifecycle-count-type",
    ),
    pytest.param(
        aws_types.VPC_SECURITY_GROUP_INGRESS_RULE, "network-alb-https-in",
        lambda i: i.update(cidrIpv4="0.0.0.0/40"),
        "IpRanges[0].CidrIp (from cidrIpv4)", "/32 prefix length", id="ingress-cidr",
    ),
    pytest.param(
        aws_types.VPC_SECURITY_GROUP_EGRESS_RULE, "network-web-https-out",
        lambda i: i.update(fromPort="443"),
        "IpPermissions[0].FromPort (from fromPort)", "type", id="egress-port-type",
    ),
    pytest.param(
        aws_types.EC2_SECURITY_GROUP, "network-web",
        lambda i: i.update(description="Web tasks — from the ALB"),
        "CreateSecurityGroup.Description", "Valid characters", id="security-group-description",
    ),
    pytest.param(
        aws_types.SECRETSMANAGER_SECRET, "broker", lambda i: i.update(recoveryWindowInDays=3),
        "DeleteSecret.RecoveryWindowInDays", "from 7 to 30", id="secret-recovery-window",
    ),
    pytest.param(
        SERVICE, "web-service", lambda i: i.update(availabilityZoneRebalancing="ENABLED"),
        "availabilityZoneRebalancing", "mapped to the AWS API", id="unmapped-input",
    ),
    pytest.param(
        aws_types.IAM_ROLE_POLICY, "schedule-events",
        policy(lambda s: s.update(Action=["ecs:RunTasks"])),
        "policy", "parliament UNKNOWN_ACTION", id="iam-unknown-action",
    ),
    pytest.param(
        aws_types.IAM_ROLE_POLICY, "cluster-execution",
        policy(lambda s: s.update(Action=["s3:GetObject"])),
        "policy", "parliament RESOURCE_MISMATCH", id="iam-resource-does-not-match-action",
    ),
    pytest.param(
        aws_types.IAM_ROLE_POLICY, "schedule-events",
        policy(lambda s: s.update(Condition={"ArnEqual": s["Condition"]["ArnEquals"]})),
        "policy", "parliament UNKNOWN_OPERATOR", id="iam-malformed-condition",
    ),
    pytest.param(
        aws_types.IAM_ROLE_POLICY, "schedule-events",
        policy(lambda s: s.update(Condition={"StringEquals": {"ecs:cluster": "default"}})),
        "policy", "parliament MISMATCHED_TYPE", id="iam-condition-value-type",
    ),
    pytest.param(
        aws_types.IAM_ROLE, "cluster-execution",
        policy(lambda s: s.update(Action="sts:AssumeRoles"), key="assumeRolePolicy"),
        "assumeRolePolicy", "parliament UNKNOWN_ACTION", id="iam-trust-policy-action",
    ),
    pytest.param(
        ALARM, "worker-short-scaling-burst",
        lambda i: i["metricQueries"][0]["metric"].update(period=15),
        "Metrics[0].MetricStat.Period (from metricQueries)",
        "Valid values are 10, 20, 30, and any multiple of 60.", id="alarm-period-15-seconds",
    ),
    pytest.param(
        ALARM, "alarm-web-elb-5xx", lambda i: i.update(comparisonOperator="GreaterThan"),
        "PutMetricAlarm.ComparisonOperator", "enum", id="alarm-comparison-operator",
    ),
    pytest.param(
        ALARM, "alarm-web-elb-5xx", lambda i: i.update(treatMissingData="notbreaching"),
        "PutMetricAlarm.TreatMissingData", "breaching | notBreaching | ignore | missing",
        id="alarm-missing-data-typo",
    ),
    pytest.param(
        ALARM, "alarm-web-elb-5xx", lambda i: i["metricQueries"][0].update(returnData=True),
        "PutMetricAlarm.Metrics", "the expression that the alarm watches",
        id="alarm-two-returned-series",
    ),
    pytest.param(
        ALARM, "alarm-web-elb-5xx", lambda i: i["metricQueries"][0].update(id="Errors"),
        "Metrics[0].Id", "must be a lowercase letter", id="alarm-query-id",
    ),
    pytest.param(
        aws_types.APPAUTOSCALING_POLICY, "worker-short-scaling-burst",
        lambda i: i["stepScalingPolicyConfiguration"].update(adjustmentType="PercentChange"),
        "StepScalingPolicyConfiguration.AdjustmentType", "enum", id="step-adjustment-type",
    ),
    pytest.param(
        aws_types.APPAUTOSCALING_POLICY, "worker-short-scaling-burst",
        lambda i: i["stepScalingPolicyConfiguration"]["stepAdjustments"][1].update(
            metricIntervalLowerBound="five"
        ),
        "StepAdjustments[1].MetricIntervalLowerBound", "type", id="step-bound-not-a-number",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_DASHBOARD, "dashboard",
        lambda i: i.update(dashboardName="celery ecs"),
        "PutDashboard.DashboardName", "valid characters are", id="dashboard-name",
    ),
    pytest.param(
        aws_types.CLOUDWATCH_DASHBOARD, "dashboard",
        lambda i: i.update(dashboardBody=i["dashboardBody"][:-1]),
        "dashboardBody", "document rules", id="dashboard-body-not-json",
    ),
    pytest.param(
        aws_types.SNS_TOPIC_SUBSCRIPTION, "notifications-email",
        lambda i: i.update(protocol="e-mail"),
        "Subscribe.Protocol", "Supported protocols include", id="subscription-protocol",
    ),
    pytest.param(
        aws_types.SNS_TOPIC_POLICY, "notifications-topic",
        policy(lambda s: s.update(Action="sns:Publishes")),
        "policy", "parliament UNKNOWN_ACTION", id="topic-policy-action",
    ),
    pytest.param(
        KEY, "notifications-key",
        policy(lambda s: s.update(Action=[*s["Action"], "kms:GenerateDataKeys"])),
        "policy", "parliament UNKNOWN_ACTION", id="key-policy-action",
    ),
    pytest.param(
        KEY, "notifications-key", policy(lambda s: s.update(Action="kms:*")),
        "policy", "parliament RESOURCE_MISMATCH", id="key-policy-wildcard-action",
    ),
    pytest.param(
        KEY, "notifications-key", lambda i: i.update(deletionWindowInDays=3),
        "ScheduleKeyDeletion.PendingWindowInDays", "between 7 and 30", id="key-deletion-window",
    ),
]  # fmt: skip


@pytest.mark.parametrize("typ, name, change, field, rule", MISTAKES)
def test_each_check_catches_a_deliberate_mistake(
    everything: ProgramRun,
    typ: str,
    name: str,
    change: Callable[[dict[str, Any]], Any],
    field: str,
    rule: str,
) -> None:
    findings = check_against_aws(mutated(everything, typ, name, change)).findings
    assert findings, "the mistake went through"
    assert all(finding.resource == name and finding.type == typ for finding in findings), findings
    assert any(field in finding.field and rule in finding.rule for finding in findings), findings


def test_a_finding_names_resource_field_and_rule(everything: ProgramRun) -> None:
    run = mutated(
        everything,
        aws_types.LB_LOAD_BALANCER,
        "web-alb",
        lambda i: i.update(idleTimeout=5000),
    )
    (finding,) = check_against_aws(run).findings
    assert str(finding) == (
        "web-alb (aws:lb/loadBalancer:LoadBalancer): ModifyLoadBalancerAttributes.Attributes[0]"
        "<idle_timeout.timeout_seconds> (from idleTimeout): 5000 is out of range 1..4000 "
        '[documented: "idle_timeout.timeout_seconds - The idle timeout value, in seconds. The '
        'valid range is 1-4000 seconds."]'
    )


def test_a_resource_type_without_mapping_is_a_finding(everything: ProgramRun) -> None:
    # A type the program never registers (SNS and CloudWatch alarms are mapped now).
    bucket = Registration(type=aws_types.S3_BUCKET, name="logs", inputs={"bucket": "logs"})
    run = ProgramRun(resources=[*everything.resources, bucket])
    (finding,) = check_against_aws(run).findings
    assert (finding.resource, finding.field, finding.rule) == (
        "logs",
        "(type)",
        "mapped to the AWS API",
    )


def test_a_dead_letter_queue_and_its_policy(everything: ProgramRun) -> None:
    """SQS is mapped too (the EventBridge targets' dead-letter queue): attributes by the model's
    names, and the queue policy linted like the IAM ones."""
    (queue,) = everything.of_type(aws_types.SQS_QUEUE)
    (policy,) = everything.of_type(aws_types.SQS_QUEUE_POLICY)
    assert check_against_aws(everything).ok, check_against_aws(everything).findings

    def misspell_send(inputs: dict[str, Any]) -> None:
        document = json.loads(inputs["policy"])
        for statement in document["Statement"]:
            if statement["Effect"] == "Allow":
                statement["Action"] = "sqs:Send"
        inputs["policy"] = json.dumps(document)

    broken = mutated(everything, policy.type, policy.name, misspell_send)
    assert {(f.resource, f.rule) for f in check_against_aws(broken).findings} == {
        (policy.name, "parliament UNKNOWN_ACTION")
    }
    misspelt = mutated(everything, queue.type, queue.name, lambda i: i.update(messageRetention=60))
    (finding,) = check_against_aws(misspelt).findings
    assert (finding.field, finding.rule) == ("messageRetention", "mapped to the AWS API")


def test_trust_policies_are_linted_against_the_role_they_belong_to(everything: ProgramRun) -> None:
    role = everything.named(aws_types.IAM_ROLE, "cluster-execution")
    # sts:AssumeRole on a role is right; the same statement about a log group is not.
    wrong = mutated(
        everything,
        role.type,
        role.name,
        policy(
            lambda s: s.update(Resource="arn:aws:logs:us-east-1:123456789012:log-group:x"),
            "assumeRolePolicy",
        ),
    )
    assert [f.rule for f in check_against_aws(wrong).findings] == ["parliament RESOURCE_MISMATCH"]


def test_a_key_policy_is_linted_as_about_its_key(everything: ProgramRun) -> None:
    """A key policy's "Resource": "*" is the key: linted with the key's ARN (no RESOURCE_STAR),
    its alias operations without parliament's demand for an alias resource (IAM policies grant
    that side), and anything else that is not about a key still caught."""
    key = everything.named(KEY, "notifications-key")
    (linted,) = [d for d in policy_documents(everything) if d.resource is key]
    arn = key.state["arn"]
    assert {s["Resource"] for s in linted.document["Statement"]} == {arn}
    assert "kms:CreateAlias" in linted.document["Statement"][0]["Action"]
    assert lint_policy(linted.document, linted.not_granted_here) == []
    # Without the exemption parliament wants an alias for the alias operations, and only that.
    (mismatch,) = lint_policy(linted.document)
    assert mismatch[0] == "parliament RESOURCE_MISMATCH"
    assert {m["required_format"] for m in json.loads(mismatch[1])} == {KMS_ALIAS_FORMAT}
    wrong = mutated(everything, KEY, key.name, policy(lambda s: s.update(Action="s3:GetObject")))
    assert [f.rule for f in check_against_aws(wrong).findings] == ["parliament RESOURCE_MISMATCH"]


def test_a_star_grant_must_use_the_condition_key_its_action_offers(everything: ProgramRun) -> None:
    """PutMetricData has no resource-level permissions, so "*" it is, but it offers
    ``cloudwatch:namespace``: a worker role without that condition may write any namespace.
    parliament lets that pass; ``unscoped_star_grants`` does not."""
    name = "worker-short-task"
    role_policy = everything.named(ROLE_POLICY, name)
    document = json.loads(role_policy.inputs["policy"])
    assert lint_policy(document) == []

    def unconditioned(inputs: dict[str, Any]) -> None:
        changed = json.loads(inputs["policy"])
        for statement in changed["Statement"]:
            if statement["Action"] == ["cloudwatch:PutMetricData"]:
                del statement["Condition"]
        inputs["policy"] = json.dumps(changed)

    findings = check_against_aws(mutated(everything, ROLE_POLICY, name, unconditioned)).findings
    assert [(f.resource, f.rule) for f in findings] == [(name, "iam UNSCOPED_RESOURCE_STAR")]
    assert "cloudwatch:namespace" in findings[0].message
    # Actions with neither resource types nor condition keys of their own stay allowed on "*".
    registry_login = {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"}
    assert lint_policy({"Version": "2012-10-17", "Statement": [registry_login]}) == []


def test_a_topic_policy_is_linted_against_its_topic(everything: ProgramRun) -> None:
    topic_policy = everything.named(aws_types.SNS_TOPIC_POLICY, "notifications-topic")
    assert any(d.resource is topic_policy for d in policy_documents(everything))
    elsewhere = mutated(
        everything,
        topic_policy.type,
        topic_policy.name,
        policy(lambda s: s.update(Resource="arn:aws:sqs:us-east-1:123456789012:queue")),
    )
    findings = check_against_aws(elsewhere).findings
    assert [f.rule for f in findings] == ["parliament RESOURCE_MISMATCH"]


def test_the_documented_rules_are_still_what_aws_documents() -> None:
    """Every rule taken from the models' documentation quotes a sentence the installed botocore
    still has: a rule AWS changes fails here, not silently in the plan."""
    assert awsmodel.stale_quotes() == []
    assert "cache.t4g.micro" in awsmodel.current_node_types()
    assert "cache.t1.micro" not in awsmodel.current_node_types()  # previous generation


def _shapes(shape: Shape, seen: set[str]) -> list[Shape]:
    if shape.name in seen:
        return []
    seen.add(shape.name)
    found = [shape]
    if isinstance(shape, StructureShape):
        for member in shape.members.values():
            found += _shapes(member, seen)
    elif isinstance(shape, ListShape):
        found += _shapes(shape.member, seen)
    elif isinstance(shape, MapShape):
        found += _shapes(shape.key, seen) + _shapes(shape.value, seen)
    return found


def test_every_pattern_of_the_mapped_operations_compiles() -> None:
    """Smithy patterns are ECMAScript with Java-style properties: each one the table can meet
    must compile, or a check would be skipped."""
    patterns = {
        (call.service, shape.name): shape.metadata["pattern"]
        for mapping in MAPPINGS.values()
        for call in mapping.calls
        for shape in _shapes(awsmodel.operation_input(call.service, call.operation), set())
        if "pattern" in shape.metadata
    }
    assert len(patterns) > 20
    assert [where for where, pattern in patterns.items() if not awsmodel.compiles(pattern)] == []


def test_the_model_walk_reports_every_kind_of_violation() -> None:
    shape = awsmodel.operation_input("ecs", "RegisterTaskDefinition")
    found = awsmodel.check(
        {
            "family": "web",
            "containerDefinitions": [
                {
                    "name": 1,
                    "colour": "red",
                    "essential": "yes",
                    "logConfiguration": {"logDriver": "stdout"},
                    "healthCheck": {"interval": 30},
                    "portMappings": [{"containerPort": 80.5}],
                }
            ],
            "tags": [{"key": "", "value": "x"}],
        },
        shape,
        service="ecs",
    )
    assert sorted((v.path, v.rule) for v in found) == sorted(
        [
            ("containerDefinitions[0].name", "type"),
            ("containerDefinitions[0].colour", "unknown member"),
            ("containerDefinitions[0].essential", "type"),
            ("containerDefinitions[0].logConfiguration.logDriver", "enum"),
            ("containerDefinitions[0].healthCheck", "required"),
            ("containerDefinitions[0].portMappings[0].containerPort", "type"),
            ("tags[0].key", "min"),
        ]
    )


def test_patterns_follow_smithy_not_python() -> None:
    # Not anchored, \p{L} classes, and supplementary characters written as surrogate pairs.
    assert awsmodel.compiles(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*")
    pattern = awsmodel._compiled(r"^[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF]*$")
    assert pattern.search("emoji \N{ROCKET}")
    assert not pattern.search("bell \a")


def test_lifecycle_policy_rules() -> None:
    keep = {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20}
    rule = {"rulePriority": 1, "selection": keep, "action": {"type": "expire"}}
    assert lifecycle_policy_problems({"rules": [rule]}) == []
    tagged = {**rule, "selection": {**keep, "tagStatus": "tagged"}}
    assert lifecycle_policy_problems({"rules": [tagged]}) != []
    aged = {**rule, "selection": {**keep, "countType": "sinceImagePushed"}}
    assert "'countUnit' is a required property" in lifecycle_policy_problems({"rules": [aged]})[0]
    later = {**rule, "rulePriority": 2, "selection": {**keep, "tagStatus": "untagged"}}
    assert lifecycle_policy_problems({"rules": [rule, later]}) == [
        "rules: a rule with tagStatus any must have the highest rulePriority"
    ]
