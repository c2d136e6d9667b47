"""The Pulumi program under mocks: every test runs the whole program afresh (fresh event loop,
fresh mocks, its own config) and checks the registered resources as plain data.

Every test runs against the defaults (only ``aws:region`` set) and a production stack on
EventBridge with three pools, NAT and HTTPS; the tests where it makes a difference also run
against an existing VPC with a prebuilt image. The dev stack file gets its own test.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pulumi
import pytest
from pulumi.runtime.mocks import MockResourceArgs

from app.api_keys import parse_keys
from celery_ecs import settings as env_names
from celery_ecs.schedule import entries_from_json
from celery_ecs.settings import PROTECTION_IDLE_GRACE_SECONDS
from devtools.plan.aws_rules import check_against_aws
from devtools.render import (
    ACCOUNT,
    MOCK_AUTH_TOKEN,
    ProgramRun,
    RecordingMocks,
    Registration,
    stack_file_config,
)
from devtools.render import (
    DEFAULT_REGION as REGION,
)
from infra import program
from infra.broker import broker_url
from infra.budget import BEAT_STOP_TIMEOUT, FARGATE_STOP_TIMEOUT_CAP, TASK_START_ALLOWANCE
from infra.config import ConfigError, ExistingVpc, NewVpc, StackConfig, load
from infra.config_tables import DEFAULT_SCHEDULE
from infra.containers import health_check
from infra.fargate_service import DeploymentRolledBack
from infra.schedule_expr import shortest_gap, to_eventbridge_expression
from policy.invariants import aws_types
from tests.support import ROOT, run_program, shared_run

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
ECR_IMAGE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/shared/celery-ecs@sha256:" + "a" * 64
STACKS: dict[str, dict[str, object]] = {
    "defaults": {},
    "production-eventbridge": {
        "production": True,
        "scheduler": "eventbridge",
        "maxCountdown": 600,
        "workers": [
            {
                "name": "default",
                "queues": ["default"],
                "concurrency": 8,
                "taskTimeout": 30,
                "minCount": 2,
                "maxCount": 10,
                "fargateSpot": True,
                "maxQueueSeconds": 120,
                "typicalTaskSeconds": 0.5,
            },
            {
                "name": "long",
                "queues": ["long"],
                "taskTimeout": 3600,
                "maxStopTimeout": 60,
                "cpu": 1024,
                "memory": 4096,
                "backlogPerTask": 1,
            },
            {"name": "overflow", "queues": ["default", "long"], "minCount": 1, "maxCount": 3},
        ],
        "web": {
            "certificateArn": CERTIFICATE,
            "accessLogsBucket": "alb-logs-bucket",
            "minCount": 2,
            "maxCount": 6,
            "requestTimeout": 60,
            "targetRequestsPerTask": 500,
        },
        "broker": {"engine": "valkey", "replicas": 2, "snapshotRetentionDays": 14},
        "network": {"natGateways": "single"},
        "alerts": {"email": "ops@example.com", "http5xxPercent": 2, "brokerMemoryPercent": 70},
    },
    "existing-vpc-prebuilt-image": {
        "image": {"uri": ECR_IMAGE},
        "cpuArchitecture": "ARM64",
        "dashboard": True,
        "scheduler": "eventbridge",
        "network": {
            "vpcId": "vpc-0123456789abcdef0",
            "publicSubnetIds": ["subnet-000000a1", "subnet-000000a2"],
            "privateSubnetIds": ["subnet-000000b1", "subnet-000000b2", "subnet-000000b3"],
            "privateSubnetsReachAws": "nat",
        },
        "alerts": {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops-alerts"},
    },
}

ALL_STACKS = list(STACKS)
BEAT_STACKS = [name for name, raw in STACKS.items() if raw.get("scheduler", "beat") == "beat"]
EVENTBRIDGE_STACKS = [name for name in STACKS if name not in BEAT_STACKS]

SERVICE = aws_types.ECS_SERVICE
TASK_DEFINITION = aws_types.ECS_TASK_DEFINITION
SCALING_TARGET = aws_types.APPAUTOSCALING_TARGET
SCALING_POLICY = aws_types.APPAUTOSCALING_POLICY
INGRESS = aws_types.VPC_SECURITY_GROUP_INGRESS_RULE
EGRESS = aws_types.VPC_SECURITY_GROUP_EGRESS_RULE
RULE = aws_types.CLOUDWATCH_EVENT_RULE
TARGET = aws_types.CLOUDWATCH_EVENT_TARGET
IMAGE = aws_types.DOCKER_BUILD_IMAGE
REPLICATION_GROUP = aws_types.ELASTICACHE_REPLICATION_GROUP
QUEUE = aws_types.SQS_QUEUE
ROLE = aws_types.IAM_ROLE
ROLE_POLICY = aws_types.IAM_ROLE_POLICY
ALARM = aws_types.CLOUDWATCH_METRIC_ALARM
TOPIC = aws_types.SNS_TOPIC
KEY = aws_types.KMS_KEY
PREFIX = "celery-ecs-test"
NAMESPACE = "CeleryEcs/celery-ecs-test"


@dataclass(frozen=True)
class Deployed:
    config: StackConfig
    run: ProgramRun

    def service(self, name: str) -> Registration:
        return self.run.named(SERVICE, f"{name}-service")

    def service_name(self, name: str) -> str:
        return self.run.outputs["serviceNames"][name]

    def physical_name(self, typ: str, logical: str) -> str:
        """The mock gives auto-named resources ``<logical>-abc1234``."""
        return self.run.named(typ, logical).inputs.get("name") or f"{logical}-abc1234"


@pytest.fixture(params=["defaults", "production-eventbridge"])
def deployed(request: pytest.FixtureRequest) -> Deployed:
    raw = STACKS[request.param]
    return Deployed(config=load(raw), run=shared_run(raw))


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return as_list(document["Statement"])  # type: ignore[arg-type]


# --- schedule source ------------------------------------------------------------------------


def test_exactly_one_schedule_source(deployed: Deployed) -> None:
    run = deployed.run
    beat_services = [s for s in run.of_type(SERVICE) if s.name == "beat-service"]
    if deployed.config.scheduler == "beat":
        assert len(beat_services) == 1
        assert run.of_type(RULE) == [] and run.of_type(TARGET) == []
        assert "beat" in run.outputs["serviceNames"]
    else:
        assert beat_services == []
        assert "beat" not in run.task_definitions()
        assert len(run.of_type(RULE)) == len(deployed.config.schedule)
        assert len(run.of_type(TARGET)) == len(deployed.config.schedule)
    assert run.outputs["scheduler"] == deployed.config.scheduler


@pytest.mark.parametrize("deployed", BEAT_STACKS, indirect=True)
def test_beat_is_a_singleton_without_scaling(deployed: Deployed) -> None:
    beat = deployed.service("beat").inputs
    assert beat["desiredCount"] == 1
    assert beat["deploymentMaximumPercent"] == 100
    assert beat["deploymentMinimumHealthyPercent"] == 0
    beat_name = deployed.service_name("beat")
    assert not [
        t
        for t in deployed.run.of_type(SCALING_TARGET)
        if t.inputs["resourceId"].endswith(f"/{beat_name}")
    ]


@pytest.mark.parametrize("deployed", EVENTBRIDGE_STACKS, indirect=True)
def test_one_rule_and_target_per_schedule_entry(deployed: Deployed) -> None:
    run = deployed.run
    enqueue = run.task_definitions()["enqueue"]
    for entry in deployed.config.schedule:
        rule = run.named(RULE, f"schedule-{entry.name}")
        assert rule.inputs["scheduleExpression"] == to_eventbridge_expression(entry.schedule)
        target = run.named(TARGET, f"schedule-{entry.name}").inputs
        assert target["rule"] == deployed.physical_name(RULE, f"schedule-{entry.name}")
        assert (
            target["arn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{run.outputs['clusterName']}"
        )
        ecs = target["ecsTarget"]
        assert ecs["taskDefinitionArn"].split("/")[-1] == f"{enqueue.family}:1"
        assert ecs["launchType"] == "FARGATE" and ecs["platformVersion"] == "LATEST"
        assert (
            ecs["networkConfiguration"]["assignPublicIp"] == deployed.config.tasks_in_public_subnets
        )
        transformer = target["inputTransformer"]
        assert transformer["inputPaths"] == {"time": "$.time"}
        overrides = json.loads(transformer["inputTemplate"])
        assert overrides == {
            "containerOverrides": [
                {
                    "name": enqueue.container["name"],
                    "command": [
                        "celery-ecs-enqueue", entry.task, "--queue", entry.queue,
                        "--name", entry.name, "--slot", "<time>",
                    ],
                }
            ]
        }
        # A failed RunTask is retried until the entry's next slot, then dead-lettered.
        retry = target["retryPolicy"]
        assert retry["maximumRetryAttempts"] == 185
        assert retry["maximumEventAgeInSeconds"] == min(86400, shortest_gap(entry.schedule))
        assert target["deadLetterConfig"] == {"arn": run.one(QUEUE).state["arn"]}


@pytest.mark.parametrize("deployed", EVENTBRIDGE_STACKS, indirect=True)
def test_schedule_failures_land_in_an_encrypted_queue_only_the_rules_may_write(
    deployed: Deployed,
) -> None:
    run = deployed.run
    queue = run.one(QUEUE)
    assert queue.inputs["sqsManagedSseEnabled"] is True
    assert queue.inputs["messageRetentionSeconds"] == 14 * 24 * 3600
    policy = json.loads(run.one(aws_types.SQS_QUEUE_POLICY).inputs["policy"])
    allow, deny = policy["Statement"]
    rule_arns = sorted(rule.state["arn"] for rule in run.of_type(RULE))
    assert allow["Effect"] == "Allow" and allow["Action"] == "sqs:SendMessage"
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arns
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert run.outputs["scheduleDeadLetterQueueUrl"].startswith("https://sqs.")


@pytest.mark.parametrize("deployed", EVENTBRIDGE_STACKS, indirect=True)
def test_eventbridge_role_may_only_run_the_enqueue_task(deployed: Deployed) -> None:
    run = deployed.run
    family = run.task_definitions()["enqueue"].family
    role = run.named(ROLE, "schedule-events")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert statements(trust)[0]["Principal"] == {"Service": "events.amazonaws.com"}
    policy = json.loads(run.named(ROLE_POLICY, "schedule-events").inputs["policy"])
    by_action = {tuple(as_list(s["Action"])): s for s in statements(policy)}
    assert set(by_action) == {("ecs:RunTask",), ("iam:PassRole",)}
    run_task = by_action[("ecs:RunTask",)]
    assert run_task["Resource"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:*"]
    assert run_task["Condition"] == {
        "ArnEquals": {
            "ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{run.outputs['clusterName']}"
        }
    }
    pass_role = by_action[("iam:PassRole",)]
    assert sorted(pass_role["Resource"]) == sorted(
        [
            f"arn:aws:iam::{ACCOUNT}:role/schedule-task-abc1234",
            f"arn:aws:iam::{ACCOUNT}:role/cluster-execution-abc1234",
        ]
    )
    enqueue_inputs = run.task_definitions()["enqueue"].inputs
    assert set(pass_role["Resource"]) == {
        enqueue_inputs["taskRoleArn"],
        enqueue_inputs["executionRoleArn"],
    }


# --- workers and scaling --------------------------------------------------------------------


def test_every_pool_has_a_consuming_service_and_scales_on_backlog(deployed: Deployed) -> None:
    run = deployed.run
    cluster = run.outputs["clusterName"]
    for pool in deployed.config.workers:
        service = deployed.service(f"worker-{pool.name}").inputs
        assert service["desiredCount"] == pool.min_count >= 1
        assert "loadBalancers" not in service
        name = deployed.service_name(f"worker-{pool.name}")
        target = run.named(SCALING_TARGET, f"worker-{pool.name}-scaling").inputs
        assert target["resourceId"] == f"service/{cluster}/{name}"
        assert target["scalableDimension"] == "ecs:service:DesiredCount"
        assert (target["minCapacity"], target["maxCapacity"]) == (pool.min_count, pool.max_count)

        policy = run.named(SCALING_POLICY, f"worker-{pool.name}-scaling-backlog").inputs
        tracking = policy["targetTrackingScalingPolicyConfiguration"]
        assert tracking["targetValue"] == pool.backlog_per_task
        assert tracking["scaleInCooldown"] > tracking["scaleOutCooldown"]
        metrics = {m["id"]: m for m in tracking["customizedMetricSpecification"]["metrics"]}
        backlog_ids = [
            key for key in metrics if key.startswith("backlog") and key != "backlog_per_task"
        ]
        queues = {
            metrics[key]["metricStat"]["metric"]["dimensions"][0]["value"] for key in backlog_ids
        }
        assert queues == set(pool.queues)
        for key in backlog_ids:
            stat = metrics[key]["metricStat"]
            assert stat["stat"] == "Maximum"
            assert stat["metric"]["namespace"] == "CeleryEcs/celery-ecs-test"
            assert stat["metric"]["metricName"] == "Backlog"
            assert stat["metric"]["dimensions"][0]["name"] == "Queue"
        tasks = metrics["tasks"]["metricStat"]["metric"]
        if deployed.config.container_insights:
            # The desired count: tasks the step policy asked for count at once, however long
            # they take to start, so target tracking does not ask for them a second time.
            assert tasks["namespace"] == "ECS/ContainerInsights"
            assert tasks["metricName"] == "DesiredTaskCount"
            assert tasks["dimensions"] == [
                {"name": "ClusterName", "value": cluster},
                {"name": "ServiceName", "value": name},
            ]
        else:
            # No Container Insights to read: the pool's running workers, as they count
            # themselves (the same metric as the step policy's alarm).
            assert metrics["tasks"]["metricStat"]["stat"] == "Maximum"
            assert tasks["namespace"] == "CeleryEcs/celery-ecs-test"
            assert tasks["metricName"] == "Workers"
            assert tasks["dimensions"] == [{"name": "Pool", "value": pool.name}]
        result = [m for m in metrics.values() if m["returnData"]]
        assert len(result) == 1 and result[0]["expression"].endswith("/ tasks")
        for key in backlog_ids:
            assert key in result[0]["expression"]


def test_every_pool_scales_out_within_a_minute_on_a_high_resolution_alarm(
    deployed: Deployed,
) -> None:
    run = deployed.run
    for pool in deployed.config.workers:
        target = pool.backlog_per_task
        tracking = run.named(SCALING_POLICY, f"worker-{pool.name}-scaling-backlog").inputs[
            "targetTrackingScalingPolicyConfiguration"
        ]
        # Scale-in stays with target tracking, as slow as before.
        assert tracking["scaleInCooldown"] == 300 and not tracking.get("disableScaleIn")
        step = run.named(SCALING_POLICY, f"worker-{pool.name}-scaling-burst")
        assert step.inputs["policyType"] == "StepScaling"
        assert step.inputs["resourceId"] == tracking_resource(run, pool.name)
        config = step.inputs["stepScalingPolicyConfiguration"]
        assert config["adjustmentType"] == "PercentChangeInCapacity"
        assert config["minAdjustmentMagnitude"] == 1
        assert config["metricAggregationType"] == "Maximum"
        assert config["cooldown"] == 120
        adjustments = config["stepAdjustments"]
        assert all(a["scalingAdjustment"] > 0 for a in adjustments), "scale-out only"
        # Proportional: from k x target on, (k - 1) x 100 % more tasks; bounds relative to the
        # alarm's threshold of 1.25 x target.
        for adjustment in adjustments:
            multiple = 1.25 + float(adjustment["metricIntervalLowerBound"]) / target
            assert adjustment["scalingAdjustment"] == pytest.approx((multiple - 1) * 100)

        alarm = run.named(ALARM, f"worker-{pool.name}-scaling-burst").inputs
        assert alarm["name"] == f"{PREFIX}-scale-out-{pool.name}"
        assert alarm["alarmActions"] == [step.state["arn"]]
        assert alarm["threshold"] == 1.25 * target
        assert alarm["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
        queries = {q["id"]: q for q in alarm["metricQueries"]}
        stats = [q["metric"] for q in queries.values() if "metric" in q]
        # High resolution: 10 s periods, CloudWatch evaluates such an alarm every 10 s. Two
        # breaching periods: the decision comes 20 s after the data (the simulator adds the
        # publication and delivery delays: bench/scaling_sim.py).
        assert {m["period"] for m in stats} == {10}
        assert alarm["evaluationPeriods"] == alarm["datapointsToAlarm"] == 2
        assert {m["stat"] for m in stats} == {"Maximum"}
        backlogs = {m["dimensions"]["Queue"] for m in stats if m["metricName"] == "Backlog"}
        assert backlogs == set(pool.queues)
        (workers,) = [m for m in stats if m["metricName"] == "Workers"]
        assert workers["dimensions"] == {"Pool": pool.name}
        assert {m["namespace"] for m in stats} == {NAMESPACE}
        (result,) = [q for q in queries.values() if q.get("returnData")]
        assert result["expression"].endswith("/ workers")
        assert "alarmActions" in alarm and not alarm.get("okActions"), "scaling, not paging"


def tracking_resource(run: ProgramRun, pool: str) -> str:
    return run.named(SCALING_TARGET, f"worker-{pool}-scaling").inputs["resourceId"]


def test_backlog_target_comes_from_latency_unless_given() -> None:
    pools = load(STACKS["production-eventbridge"]).workers
    by_name = {pool.name: pool for pool in pools}
    # 120 s acceptable, 0.5 s tasks, 8 at a time: half of 120 s of work per task = 960.
    assert by_name["default"].backlog_per_task == 960
    assert by_name["long"].backlog_per_task == 1, "backlogPerTask wins"
    assert by_name["overflow"].backlog_per_task == 20, "nothing to derive from: 10 x concurrency"
    run = shared_run(STACKS["production-eventbridge"])
    for pool in pools:
        tracking = run.named(SCALING_POLICY, f"worker-{pool.name}-scaling-backlog").inputs
        assert tracking["targetTrackingScalingPolicyConfiguration"]["targetValue"] == (
            pool.backlog_per_task
        )


def test_web_scales_on_cpu_and_optionally_requests(deployed: Deployed) -> None:
    run, web = deployed.run, deployed.config.web
    target = run.named(SCALING_TARGET, "web-scaling").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (web.min_count, web.max_count)
    cpu = run.named(SCALING_POLICY, "web-scaling-cpu").inputs
    tracking = cpu["targetTrackingScalingPolicyConfiguration"]
    assert (
        tracking["predefinedMetricSpecification"]["predefinedMetricType"]
        == "ECSServiceAverageCPUUtilization"
    )
    assert tracking["targetValue"] == web.target_cpu_percent
    requests = [p for p in run.of_type(SCALING_POLICY) if p.name == "web-scaling-requests"]
    if web.target_requests_per_task is None:
        assert requests == []
    else:
        spec = requests[0].inputs["targetTrackingScalingPolicyConfiguration"]
        assert spec["predefinedMetricSpecification"] == {
            "predefinedMetricType": "ALBRequestCountPerTarget",
            "resourceLabel": run.one(aws_types.LB_LOAD_BALANCER).state["arnSuffix"]
            + "/"
            + run.one(aws_types.LB_TARGET_GROUP).state["arnSuffix"],
        }
        assert spec["targetValue"] == web.target_requests_per_task


# --- network --------------------------------------------------------------------------------


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_only_the_load_balancer_is_open_to_the_internet(deployed: Deployed) -> None:
    run = deployed.run
    groups = {g.id: g.name for g in run.of_type(aws_types.EC2_SECURITY_GROUP)}
    ingress = [(groups[r.inputs["securityGroupId"]], r.inputs) for r in run.of_type(INGRESS)]
    public = [(group, rule["fromPort"]) for group, rule in ingress if "cidrIpv4" in rule]
    https = deployed.config.web.certificate_arn is not None
    assert sorted(public) == sorted(
        [("network-alb", 80)] + ([("network-alb", 443)] if https else [])
    )
    for group, rule in ingress:
        assert "cidrIpv6" not in rule and "prefixListId" not in rule
        assert rule["ipProtocol"] == "tcp" and rule["fromPort"] == rule["toPort"]
        if group == "network-web":
            assert (groups[rule["referencedSecurityGroupId"]], rule["fromPort"]) == (
                "network-alb",
                8000,
            )
        elif group == "network-broker":
            assert groups[rule["referencedSecurityGroupId"]] in (
                "network-web",
                "network-background",
            )
            assert rule["fromPort"] == 6379
        else:
            assert group == "network-alb"
    broker_sources = {
        groups[rule["referencedSecurityGroupId"]]
        for group, rule in ingress
        if group == "network-broker"
    }
    assert broker_sources == {"network-web", "network-background"}
    # The broker sits in the broker group; tasks in theirs; nothing else has any ingress.
    replication = run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).inputs
    assert [groups[g] for g in replication["securityGroupIds"]] == ["network-broker"]
    assert {
        groups[g]
        for s in run.of_type(SERVICE)
        for g in s.inputs["networkConfiguration"]["securityGroups"]
    } <= {"network-web", "network-background"}
    for rule in run.of_type(EGRESS):
        assert rule.inputs["ipProtocol"] == "tcp"
        assert rule.inputs.get("cidrIpv4") in (None, "0.0.0.0/0")
        if "cidrIpv4" in rule.inputs:
            assert rule.inputs["fromPort"] == 443


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_created_vpc_has_two_azs_and_a_closed_default_group(deployed: Deployed) -> None:
    run, network = deployed.run, deployed.config.network
    subnets = run.of_type(aws_types.EC2_SUBNET)
    if isinstance(network, ExistingVpc):
        assert subnets == [] and run.of_type(aws_types.EC2_VPC) == []
        for service in run.of_type(SERVICE):
            assert service.inputs["networkConfiguration"]["subnets"] == list(
                network.private_subnet_ids
            )
        return
    assert isinstance(network, NewVpc)
    for kind in ("public", "private"):
        zones = [s.inputs["availabilityZone"] for s in subnets if f"-{kind}-" in s.name]
        assert len(zones) == 2 and len(set(zones)) == 2
    default_group = run.one(aws_types.EC2_DEFAULT_SECURITY_GROUP).inputs
    assert "ingress" not in default_group and "egress" not in default_group
    nat_count = {"none": 0, "single": 1, "perAz": 2}[network.nat_gateways]
    assert len(run.of_type(aws_types.EC2_NAT_GATEWAY)) == nat_count
    for service in run.of_type(SERVICE):
        placement = service.inputs["networkConfiguration"]
        assert placement["assignPublicIp"] == (nat_count == 0)
        kind = "public" if nat_count == 0 else "private"
        assert placement["subnets"] == [
            run.named(aws_types.EC2_SUBNET, f"network-{kind}-{index}").id for index in (0, 1)
        ]
    flow_logs = run.of_type(aws_types.EC2_FLOW_LOG)
    assert len(flow_logs) == (1 if deployed.config.production else 0)


# --- broker and secrets ---------------------------------------------------------------------


def test_broker_is_encrypted_authenticated_and_never_evicts(deployed: Deployed) -> None:
    run, broker = deployed.run, deployed.config.broker
    group = run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).inputs
    assert group["engine"] == broker.engine == broker.engine.lower()
    assert group["engineVersion"] == broker.engine_version
    assert group["clusterMode"] == "disabled" and "numNodeGroups" not in group
    assert group["numCacheClusters"] == 1 + broker.replicas
    assert group["transitEncryptionEnabled"] is True
    assert group["transitEncryptionMode"] == "required"
    assert group["atRestEncryptionEnabled"] is True
    assert group["authToken"] == MOCK_AUTH_TOKEN
    assert "authToken" in run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).secret_inputs
    assert group["autoMinorVersionUpgrade"] is True
    assert group["snapshotRetentionLimit"] == broker.snapshot_retention_days
    failover = broker.replicas >= 1
    assert group["automaticFailoverEnabled"] is failover
    assert group["multiAzEnabled"] is failover
    parameters = run.one(aws_types.ELASTICACHE_PARAMETER_GROUP).inputs
    assert parameters["family"] == broker.parameter_group_family
    assert parameters["parameters"] == [{"name": "maxmemory-policy", "value": "noeviction"}]
    assert group["parameterGroupName"] == "broker-abc1234"  # the mock's auto-name of the group
    subnet_group = run.one(aws_types.ELASTICACHE_SUBNET_GROUP).inputs
    assert len(subnet_group["subnetIds"]) >= 2
    # Production keeps a final snapshot when the broker is deleted, named after the stack with
    # a random part of its own, and says so in the outputs; dev stacks keep none.
    if deployed.config.production:
        name = group["finalSnapshotIdentifier"]
        assert name.startswith(f"{PREFIX}-final-") and name == name.lower()
        assert run.outputs["brokerFinalSnapshotName"] == name
        suffix = run.one(aws_types.RANDOM_ID).inputs
        assert suffix["keepers"] == {
            "engine": broker.engine, "engineVersion": broker.engine_version
        }  # fmt: skip
    else:
        assert "finalSnapshotIdentifier" not in group
        assert "brokerFinalSnapshotName" not in run.outputs
        assert not run.of_type(aws_types.RANDOM_ID)
    password = run.named(aws_types.RANDOM_PASSWORD, "broker-auth-token").inputs
    assert password["overrideSpecial"] == "!&#$^<>-"
    assert 16 <= password["length"] <= 128
    # A token change applies at once and invalidates the old token (no window where both work,
    # none where the secret holds a token the broker does not take yet).
    assert group["authTokenUpdateStrategy"] == "SET"
    assert group["applyImmediately"] is True
    assert password["keepers"] == {"generation": str(broker.auth_token_generation)}


def test_a_new_token_generation_rolls_every_service_onto_the_new_broker_url() -> None:
    runs = {generation: shared_run({"broker": {"authTokenGeneration": generation}})
            for generation in (1, 2)}  # fmt: skip
    tokens, triggers = {}, {}
    for generation, run in runs.items():
        tokens[generation] = run.one(REPLICATION_GROUP).inputs["authToken"]
        services = run.of_type(aws_types.ECS_SERVICE)
        assert {service.inputs["forceNewDeployment"] for service in services} == {True}
        triggers[generation] = {service.name: service.inputs["triggers"] for service in services}
        # One version for all: the secret's, which every new value changes.
        assert len({json.dumps(t) for t in triggers[generation].values()}) == 1
    assert tokens[1] != tokens[2]
    assert set(triggers[1]) == set(triggers[2])
    assert all(triggers[1][name] != triggers[2][name] for name in triggers[1])


def test_broker_url_reaches_containers_only_as_a_secret(deployed: Deployed) -> None:
    run = deployed.run
    secret = run.named(aws_types.SECRETSMANAGER_SECRET, "broker")
    secret_arn = secret.state["arn"]
    version_registration = run.named(aws_types.SECRETSMANAGER_SECRET_VERSION, "broker")
    assert "secretString" in version_registration.secret_inputs
    version = version_registration.inputs
    host = run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).state[
        "primaryEndpointAddress"
    ]
    url = broker_url(MOCK_AUTH_TOKEN, host)
    assert version["secretString"] == url
    assert url.startswith("rediss://:") and url.endswith(f"@{host}:6379/0?ssl_cert_reqs=required")
    assert secret.inputs["namePrefix"] == "celery-ecs-test/broker-url-"
    token_forms = (MOCK_AUTH_TOKEN, quote(MOCK_AUTH_TOKEN, safe=""))
    for service, task in run.task_definitions().items():
        assert task.secrets == {env_names.BROKER_URL: secret_arn}, service
        assert env_names.BROKER_URL not in task.environment, service
        environment = json.dumps(task.environment)
        assert not any(token in environment for token in token_forms), service
    outputs = json.dumps(run.outputs)
    assert not any(token in outputs for token in token_forms)
    assert "rediss://" not in outputs
    assert run.secret_outputs == set()


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_the_web_reads_its_api_keys_from_a_secret_only_it_may_read(deployed: Deployed) -> None:
    run = deployed.run
    secret = run.named(aws_types.SECRETSMANAGER_SECRET, "web-api-keys")
    arn = secret.state["arn"]
    assert secret.inputs["namePrefix"] == f"{PREFIX}/web-api-keys-"
    assert secret.inputs["recoveryWindowInDays"] == (7 if deployed.config.production else 0)
    # The first value: one generated key of letters and digits, a secret input of the version.
    key = run.named(aws_types.RANDOM_PASSWORD, "web-api-key")
    assert key.inputs["special"] is False and key.inputs["length"] >= 32
    version = run.named(aws_types.SECRETSMANAGER_SECRET_VERSION, "web-api-keys")
    assert version.inputs["secretId"] == arn
    assert "secretString" in version.secret_inputs
    assert parse_keys(version.inputs["secretString"]) == (key.state["result"].encode(),)
    # The web finds the secret by its ARN, a plain variable (no file: exactly one source).
    web = run.task_definitions()["web"]
    assert web.environment[env_names.WEB_API_KEYS_SECRET_ARN] == arn
    assert env_names.WEB_API_KEYS_FILE not in web.environment
    assert env_names.ApiKeysSettings.from_env(web.environment).secret_arn == arn
    # Its task role may read it, nothing else may; the execution role does not start with it.
    policies = {p.name: json.loads(p.inputs["policy"]) for p in run.of_type(ROLE_POLICY)}
    assert statements(policies["web-task"]) == [
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": [arn]}
    ]
    readers = [name for name, policy in policies.items() if arn in json.dumps(policy)]
    assert readers == ["web-task"]
    # The ARN is an output; the key is in no output, environment or secret of a container.
    assert run.outputs["webApiKeysSecretArn"] == arn
    everything = json.dumps(run.outputs) + json.dumps(
        [(task.environment, task.secrets) for task in run.task_definitions().values()]
    )
    assert key.state["result"] not in everything
    assert run.secret_outputs == set()


def test_up_never_writes_the_api_keys_again() -> None:
    run = shared_run({})
    # A rotation done outside Pulumi is the secret's value from then on; AWS never deletes the
    # first version (a label of the stack's own stays on it), so a refresh never recreates it.
    version = (aws_types.SECRETSMANAGER_SECRET_VERSION, "web-api-keys")
    assert run.ignore_changes[version] == ["secret_string", "version_stages"]
    stages = run.named(*version).inputs["versionStages"]
    assert stages == ["AWSCURRENT", "STACK_INITIAL"]
    # The broker URL secret is the program's: a new token is written (docs: broker token).
    assert (aws_types.SECRETSMANAGER_SECRET_VERSION, "broker") not in run.ignore_changes


# --- task definitions -----------------------------------------------------------------------


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_aws_would_accept_every_request_and_policy(deployed: Deployed) -> None:
    """Every API request the providers would send passes botocore's models, and every policy
    parliament (tests/test_aws_rules.py proves each check catches a mistake)."""
    report = check_against_aws(deployed.run)
    assert report.findings == (), "\n".join(map(str, report.findings))
    for service, task in deployed.run.task_definitions().items():
        assert len(task.containers) == 1, service


def test_containers_are_hardened(deployed: Deployed) -> None:
    run = deployed.run
    log_groups = {
        g.inputs["name"]: g
        for g in run.of_type(aws_types.CLOUDWATCH_LOG_GROUP)
        if "name" in g.inputs
    }
    for service, task in run.task_definitions().items():
        container, inputs = task.container, task.inputs
        assert container["user"] == "10001:10001", service
        assert container["readonlyRootFilesystem"] is True, service
        assert container.get("privileged", False) is False, service
        assert container["linuxParameters"] == {
            "initProcessEnabled": True,
            "capabilities": {"drop": ["ALL"]},
        }, service
        assert container["mountPoints"] == [
            {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}
        ]
        assert inputs["volumes"] == [{"name": "tmp"}]
        log = container["logConfiguration"]
        assert log["logDriver"] == "awslogs"
        assert log["options"]["awslogs-region"] == REGION
        # A slow CloudWatch must never block a process writing a log line.
        assert log["options"]["mode"] == "non-blocking", service
        assert log["options"]["max-buffer-size"] == "25m", service
        group = log_groups[log["options"]["awslogs-group"]]
        assert group.inputs["name"] == f"/ecs/celery-ecs-test/{service}"
        assert group.inputs["retentionInDays"] == deployed.config.log_retention_days
        # Exec form: no shell between ECS's SIGTERM and the process.
        assert all(isinstance(arg, str) for arg in container["command"])
        assert container["command"][0] not in ("sh", "bash", "/bin/sh")
        assert inputs["requiresCompatibilities"] == ["FARGATE"]
        assert inputs["networkMode"] == "awsvpc"
        assert inputs["runtimePlatform"] == {
            "operatingSystemFamily": "LINUX",
            "cpuArchitecture": deployed.config.cpu_architecture,
        }


def test_stop_timeouts_come_from_the_budget(deployed: Deployed) -> None:
    config, tasks = deployed.config, deployed.run.task_definitions()
    expected = {"web": config.web.budget.stop_timeout}
    expected |= {f"worker-{pool.name}": pool.budget.stop_timeout for pool in config.workers}
    if config.scheduler == "beat":
        expected["beat"] = BEAT_STOP_TIMEOUT
    for service, stop_timeout in expected.items():
        assert tasks[service].container["stopTimeout"] == stop_timeout, service
    for service, task in tasks.items():
        assert task.container["stopTimeout"] <= FARGATE_STOP_TIMEOUT_CAP, service


def test_environments_carry_the_budget(deployed: Deployed) -> None:
    config, tasks = deployed.config, deployed.run.task_definitions()
    for pool in config.workers:
        worker = tasks[f"worker-{pool.name}"]
        assert worker.environment == {
            **pool.budget.environment(),
            env_names.WORKER_POOL: pool.name,
            env_names.LOG_LEVEL: config.log_level,
            env_names.METRICS_NAMESPACE: "CeleryEcs/celery-ecs-test",
        }
        assert worker.container["healthCheck"] == {
            "command": ["CMD", "celery-ecs-health", "worker"],
            "interval": 30,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 60,
        }
        assert (worker.cpu, worker.memory) == (pool.cpu, pool.memory)
    web = tasks["web"]
    assert web.environment.items() >= config.web.budget.environment().items()
    assert web.environment[env_names.WEB_PORT] == "8000"
    assert web.container["portMappings"] == [
        {"containerPort": 8000, "protocol": "tcp", "name": "http"}
    ]
    if config.scheduler == "beat":
        # Beat writes its heartbeat metric into the stack's namespace.
        assert tasks["beat"].environment[env_names.METRICS_NAMESPACE] == NAMESPACE
    for service, task in tasks.items():
        assert task.environment[env_names.MAX_COUNTDOWN] == str(config.max_countdown), service
        assert task.environment[env_names.LOG_LEVEL] == config.log_level, service


def test_every_environment_passes_the_apps_own_checks(deployed: Deployed) -> None:
    """The app refuses unsafe settings at import; each container's environment (with the
    broker URL the secret holds) must load."""
    url = broker_url(MOCK_AUTH_TOKEN, "master.example.cache.amazonaws.com")
    for service, task in deployed.run.task_definitions().items():
        settings = env_names.Settings.from_env({**task.environment, env_names.BROKER_URL: url})
        assert settings.max_countdown == deployed.config.max_countdown, service
    web = deployed.run.task_definitions()["web"]
    assert (
        env_names.WebSettings.from_env(web.environment).request_timeout
        == deployed.config.web.request_timeout
    )


# --- IAM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_no_policy_grants_wildcard_actions(deployed: Deployed) -> None:
    run = deployed.run
    documents = run.policy_documents()
    # The alert topic's key and topic policies (when the stack creates the topic).
    documents += [(key.name, json.loads(key.inputs["policy"])) for key in run.of_type(KEY)]
    documents += [
        (policy.name, json.loads(policy.inputs["policy"]))
        for policy in run.of_type(aws_types.SNS_TOPIC_POLICY)
    ]
    assert documents
    for name, document in documents:
        for statement in statements(document):
            assert "NotAction" not in statement and "NotResource" not in statement, name
            for action in as_list(statement["Action"]):
                assert "*" not in action, (name, action)
            # The one Deny: the alert topic refuses publishes without TLS.
            assert statement["Effect"] == "Allow" or statement.get("Sid") == "TlsOnly", name


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_execution_role_reads_exactly_the_broker_secret(deployed: Deployed) -> None:
    run = deployed.run
    policy = json.loads(run.named(ROLE_POLICY, "cluster-execution").inputs["policy"])
    by_action = {
        action: s["Resource"] for s in statements(policy) for action in as_list(s["Action"])
    }
    secret = run.named(aws_types.SECRETSMANAGER_SECRET, "broker").state["arn"]
    assert secret.startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:")
    assert by_action["secretsmanager:GetSecretValue"] == [secret]
    groups = sorted(
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{g.inputs['name']}:*"
        for g in run.of_type(aws_types.CLOUDWATCH_LOG_GROUP)
        if g.name.startswith("cluster-")
    )
    assert sorted(by_action["logs:PutLogEvents"]) == groups
    assert sorted(by_action["logs:CreateLogStream"]) == groups
    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/celery-ecs-test-abc1234"
    expected_pull = [repository]
    if deployed.config.image_uri:
        expected_pull.append("arn:aws:ecr:eu-west-1:210987654321:repository/shared/celery-ecs")
    assert by_action["ecr:BatchGetImage"] == expected_pull
    assert by_action["ecr:GetAuthorizationToken"] == "*"
    assert set(by_action) == {
        "secretsmanager:GetSecretValue",
        "logs:PutLogEvents",
        "logs:CreateLogStream",
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    }


def test_worker_roles_put_metrics_in_their_namespace_and_protect_only_cold_pools(
    deployed: Deployed,
) -> None:
    run = deployed.run
    cluster = run.outputs["clusterName"]
    policies = {p.name: json.loads(p.inputs["policy"]) for p in run.of_type(ROLE_POLICY)}
    definitions = run.task_definitions()
    for pool in deployed.config.workers:
        environment = definitions[f"worker-{pool.name}"].container["environment"]
        (namespace,) = [e["value"] for e in environment if e["name"] == "CELERY_METRICS_NAMESPACE"]
        assert namespace.startswith("CeleryEcs/")
        policy = policies[f"worker-{pool.name}-task"]
        by_action = {tuple(sorted(s["Action"])): s for s in statements(policy)}
        # PutMetricData has no resource-level permissions: "*", held to the stack's namespace.
        assert by_action.pop(("cloudwatch:PutMetricData",)) == {
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
        }, pool.name
        if not pool.budget.task_protection:
            assert by_action == {}, pool.name
            continue
        (statement,) = by_action.values()
        assert sorted(statement["Action"]) == ["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"]
        assert statement["Resource"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/*"]
    # Beat's heartbeat is a log line (EMF): beat, like the schedule, gets no right.
    for other in ("beat-task", "schedule-task"):
        assert other not in policies
    # The web's one right: reading its API keys (test_the_web_reads_its_api_keys_from_a_secret...).
    assert "ecs:" not in json.dumps(policies["web-task"])
    for role in run.of_type(ROLE):
        if role.name == "cluster-execution":
            continue  # see infra/cluster.py: no source-account guard on the execution role
        trust = statements(json.loads(role.inputs["assumeRolePolicy"]))
        assert trust[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}


# --- services, load balancer, image, outputs ------------------------------------------------


def test_up_waits_for_every_service_to_be_steady_within_its_budget(deployed: Deployed) -> None:
    config, run = deployed.config, deployed.run
    expected = {"web": config.web.budget.deployment_timeout}
    expected |= {f"worker-{p.name}": p.budget.deployment_timeout for p in config.workers}
    if config.scheduler == "beat":
        expected["beat"] = BEAT_STOP_TIMEOUT + TASK_START_ALLOWANCE
    for service, seconds in expected.items():
        registration = deployed.service(service)
        assert registration.inputs["waitForSteadyState"] is True, service
        timeout = f"{seconds}s"
        assert run.custom_timeouts[registration.name] == (timeout, timeout, timeout), service
    for pool in config.workers:
        # A protected pool's old workers finish the task they run before they may stop.
        hold = pool.budget.time_limit + PROTECTION_IDLE_GRACE_SECONDS
        assert pool.budget.deployment_timeout == TASK_START_ALLOWANCE + pool.budget.stop_timeout + (
            hold if pool.budget.task_protection else 0
        ), pool.name


def test_up_fails_loudly_when_ecs_rolls_a_deployment_back() -> None:
    class RolledBack(RecordingMocks):
        """ECS read back after the update: the circuit breaker went back to revision 0."""

        def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
            resource_id, state = super().new_resource(args)
            if args.typ == aws_types.ECS_SERVICE and args.name == "worker-default-service":
                state["taskDefinition"] = str(state["taskDefinition"]).rsplit(":", 1)[0] + ":0"
            return resource_id, state

    with pytest.raises(DeploymentRolledBack, match=r"service worker-default: the deployment of "
                       r"\S+:1 was rolled back by ECS's circuit breaker; the service runs \S+:0"):
        run_program({}, mocks=RolledBack())


def test_services_run_fargate_latest_with_rollback(deployed: Deployed) -> None:
    pools = {f"worker-{p.name}-service" for p in deployed.config.workers}
    for service in deployed.run.of_type(SERVICE):
        inputs = service.inputs
        if service.name not in pools:
            assert inputs["launchType"] == "FARGATE", service.name
            assert "capacityProviderStrategies" not in inputs, service.name
        assert inputs["platformVersion"] == "LATEST", service.name
        assert inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert inputs["enableExecuteCommand"] is False
        assert inputs["propagateTags"] == "SERVICE"


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_spot_pools_keep_one_task_on_regular_fargate(deployed: Deployed) -> None:
    """A Spot pool's first task runs on regular Fargate (its queues keep a consumer when Spot
    capacity runs out), every other on Spot; the cluster has both capacity providers."""
    run, config = deployed.run, deployed.config
    (association,) = run.of_type(aws_types.ECS_CLUSTER_CAPACITY_PROVIDERS)
    assert association.inputs["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert association.inputs["clusterName"] == run.outputs["clusterName"]
    for pool in config.workers:
        service = deployed.service(f"worker-{pool.name}").inputs
        assert "launchType" not in service, pool.name
        if not pool.fargate_spot:
            assert service["capacityProviderStrategies"] == [
                {"capacityProvider": "FARGATE", "weight": 1}
            ]
            continue
        assert pool.budget.finishes_within_spot_notice, pool.name
        assert service["capacityProviderStrategies"] == [
            {"capacityProvider": "FARGATE", "base": 1, "weight": 0},
            {"capacityProvider": "FARGATE_SPOT", "weight": 1},
        ]


def test_turning_fargate_spot_on_or_off_changes_only_the_pools_strategy() -> None:
    """The AWS provider replaces a service whose ``launch_type`` changes (ForceNew) and updates
    a ``capacity_provider_strategy`` change in place when ``force_new_deployment`` is set
    (terraform-provider-aws internal/service/ecs/service.go). So the two renderings of a pool
    differ in its strategy alone, every pool stays off the launch type, the cluster keeps the
    same capacity providers, and the service forces the new deployment the update needs."""
    pool = {"name": "default", "queues": ["default", "long"], "taskTimeout": 60}
    regular = shared_run({"workers": [pool]})
    spot = shared_run({"workers": [{**pool, "fargateSpot": True}]})
    name = "worker-default-service"
    before, after = regular.named(SERVICE, name).inputs, spot.named(SERVICE, name).inputs
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed == {"capacityProviderStrategies"}
    assert "launchType" not in before and "launchType" not in after
    assert before["forceNewDeployment"] is True
    providers = aws_types.ECS_CLUSTER_CAPACITY_PROVIDERS
    assert regular.one(providers).inputs == spot.one(providers).inputs


def test_arm64_tasks_run_an_arm64_image() -> None:
    run = shared_run({"cpuArchitecture": "ARM64"})
    assert run.one(IMAGE).inputs["platforms"] == ["linux/arm64"]
    for service, task in run.task_definitions().items():
        assert task.inputs["runtimePlatform"]["cpuArchitecture"] == "ARM64", service


def test_load_balancer_follows_the_web_budget(deployed: Deployed) -> None:
    run, web = deployed.run, deployed.config.web
    balancer = run.one(aws_types.LB_LOAD_BALANCER).inputs
    assert balancer["dropInvalidHeaderFields"] is True
    assert balancer["desyncMitigationMode"] in ("defensive", "strictest")
    assert balancer["idleTimeout"] == web.budget.idle_timeout
    assert balancer["internal"] is False
    assert balancer["enableDeletionProtection"] is web.deletion_protection
    assert len(balancer["subnets"]) >= 2
    if web.access_logs_bucket:
        assert balancer["accessLogs"]["bucket"] == web.access_logs_bucket
        assert balancer["accessLogs"]["enabled"] is True
    group = run.one(aws_types.LB_TARGET_GROUP).inputs
    assert (group["targetType"], group["port"], group["protocol"]) == ("ip", 8000, "HTTP")
    # Liveness: a broker outage must not make ECS replace web tasks that can answer 503.
    assert group["healthCheck"]["path"] == "/livez"
    assert run.task_definitions()["web"].container["healthCheck"] == health_check("web")
    assert group["deregistrationDelay"] == web.budget.deregistration_delay
    listeners = {
        listener.inputs["port"]: listener.inputs
        for listener in run.of_type(aws_types.LB_LISTENER)
    }
    if web.certificate_arn:
        assert set(listeners) == {80, 443}
        assert listeners[443]["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
        assert listeners[443]["certificateArn"] == web.certificate_arn
        assert listeners[80]["defaultActions"] == [
            {
                "type": "redirect",
                "redirect": {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"},
            }
        ]
        assert run.outputs["webUrl"].startswith("https://")
    else:
        assert set(listeners) == {80}
        assert listeners[80]["defaultActions"][0]["type"] == "forward"
        assert run.outputs["webUrl"].startswith("http://")
    service = deployed.service("web").inputs
    assert service["loadBalancers"] == [
        {
            "targetGroupArn": service["loadBalancers"][0]["targetGroupArn"],
            "containerName": "web",
            "containerPort": 8000,
        }
    ]
    assert service["healthCheckGracePeriodSeconds"] > 0
    assert service["desiredCount"] == web.min_count


@pytest.mark.parametrize("deployed", ALL_STACKS, indirect=True)
def test_image_is_built_and_pushed_or_taken_as_given(deployed: Deployed) -> None:
    run, config = deployed.run, deployed.config
    repository = run.one(aws_types.ECR_REPOSITORY).inputs
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["forceDelete"] is (not config.production)
    lifecycle = json.loads(run.one(aws_types.ECR_LIFECYCLE_POLICY).inputs["policy"])
    assert lifecycle["rules"][0]["selection"]["countType"] == "imageCountMoreThan"
    images = {task.container["image"] for task in run.task_definitions().values()}
    url = run.outputs["imageRepositoryUrl"]
    if config.image_uri:
        assert run.of_type(IMAGE) == []
        assert images == {config.image_uri}
        return
    built = run.one(IMAGE)
    image = built.inputs
    assert image["platforms"] == [
        {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}[config.cpu_architecture]
    ]
    # Pushed by digest only: no tag can collide with an immutable one already in ECR.
    assert image.get("tags") in (None, []) and image["push"] is False
    assert image["exports"] == [{"registry": {"names": [url], "pushByDigest": True}}]
    assert image["registries"] == [
        {"address": url, "username": "AWS", "password": "mock-ecr-password"}
    ]
    assert image["buildOnPreview"] is False  # previews need no Docker daemon
    assert not Path(image["context"]["location"]).is_absolute()
    assert not Path(image["dockerfile"]["location"]).is_absolute()
    assert images == {f"{url}@{built.state['digest']}"}


def test_outputs(deployed: Deployed) -> None:
    config, outputs = deployed.config, deployed.run.outputs
    assert set(outputs) == {
        "webUrl",
        "webApiKeysSecretArn",
        "brokerEndpoint",
        "clusterName",
        "serviceNames",
        "imageRepositoryUrl",
        "scheduler",
        *(["dashboardUrl"] if config.dashboard else []),
        *(["scheduleDeadLetterQueueUrl"] if config.scheduler == "eventbridge" else []),
        *(["alertTopicArn"] if config.alerts.notifies else []),
        *(["brokerFinalSnapshotName"] if config.production else []),
    }
    if config.dashboard:
        assert outputs["dashboardUrl"] == (
            "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
            f"#dashboards/dashboard/{PREFIX}"
        )
    expected = {"web", *(f"worker-{pool.name}" for pool in config.workers)}
    if config.scheduler == "beat":
        expected.add("beat")
    assert set(outputs["serviceNames"]) == expected
    assert outputs["brokerEndpoint"].endswith(".cache.amazonaws.com:6379")


def test_dev_stack_file_deploys() -> None:
    raw = stack_file_config("dev")
    config, run = load(raw), shared_run(raw)
    tasks = run.task_definitions()
    assert set(tasks) == {"web", "beat", *(f"worker-{pool.name}" for pool in config.workers)}
    assert check_against_aws(run).ok
    protected = {
        policy.name.removesuffix("-task")
        for policy in run.of_type(ROLE_POLICY)
        if policy.name.startswith("worker-")
        and "ecs:UpdateTaskProtection" in policy.inputs["policy"]
    }
    assert protected == {
        f"worker-{pool.name}" for pool in config.workers if pool.budget.task_protection
    }
    assert protected and len(protected) < len(config.workers)


def checkout_copy(destination: Path, *, umask: int, file_mode: int) -> Path:
    """What ``git clone`` leaves under another path, umask and file modes: the image's inputs."""
    previous = os.umask(umask)
    try:
        destination.mkdir(parents=True)
        shutil.copy(ROOT / "Dockerfile", destination / "Dockerfile")
        shutil.copy(ROOT / ".dockerignore", destination / ".dockerignore")
        shutil.copytree(ROOT / "app", destination / "app",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    finally:
        os.umask(previous)
    for path in destination.rglob("*"):
        if path.is_file():
            path.chmod(file_mode)
    return destination


def test_the_rendered_program_does_not_depend_on_where_or_how_the_checkout_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A laptop, then CI: another path, umask and file modes. pulumi up runs the program in the
    # project directory; every input must come out the same, or the image would be rebuilt.
    renders = []
    for name, umask, mode in (("laptop", 0o022, 0o644), ("ci-runner", 0o077, 0o755)):
        checkout = checkout_copy(tmp_path / name / "celery-ecs", umask=umask, file_mode=mode)
        monkeypatch.chdir(checkout)
        run = run_program(stack_file_config("dev"), project_root=checkout)
        # Registration order follows Pulumi's scheduling, not the program: compare by URN parts.
        renders.append(sorted(((r.type, r.name, r.inputs) for r in run.resources),
                              key=lambda resource: resource[:2]))  # fmt: skip
    assert renders[0] == renders[1]
    (image,) = [inputs for typ, _, inputs in renders[0] if typ == IMAGE]
    assert image["context"] == {"location": "."}
    assert image["dockerfile"] == {"location": "Dockerfile"}


# --- nothing is registered when validation fails --------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"workers": [{"name": "only", "queues": ["long"]}]},  # the schedule's queue: no pool
        {"celeryApp": "proj.celery"},  # another app: the example's image and commands won't do
        {"web": {"requestTimeout": 500}},
        {"broker": {"engine": "memcached"}},
        {"typo": "1"},
    ],
)
def test_invalid_config_registers_no_resource(raw: dict[str, object]) -> None:
    mocks = RecordingMocks()
    # A RunError: Pulumi prints the message alone, without a Python traceback.
    with pytest.raises(pulumi.RunError, match=r"^invalid stack config: "):
        run_program(raw, mocks=mocks)
    assert mocks.registrations == []
    assert mocks.calls == []


class RealAccount(RecordingMocks):
    """The mocks, answering as a real account rather than AWS's documentation example."""

    ACCOUNT = "210987654321"

    def call(self, args: Any) -> dict[str, Any]:
        answer = super().call(args)
        if args.token == aws_types.AWS_GET_CALLER_IDENTITY:
            answer = {**answer, "id": self.ACCOUNT, "accountId": self.ACCOUNT}
        return answer


def test_placeholders_are_refused_in_a_real_account_before_any_resource() -> None:
    """Pulumi.prod.yaml ships documentation examples (account 123456789012, example.com): they
    render offline, which runs as that account, and a deploy to a real one refuses them."""
    raw = stack_file_config("prod")
    mocks = RealAccount()
    with pytest.raises(
        pulumi.RunError,
        match=r"^invalid stack config: web\.certificateArn: \S+ is in account 123456789012.*"
        r"allowed: a value of your own \(the stack deploys to account 210987654321\)",
    ):
        run_program(raw, mocks=mocks)
    assert mocks.registrations == []
    assert shared_run(raw).of_type(SERVICE)
    own = {
        **raw,
        "web": {"certificateArn": CERTIFICATE.replace("123456789012", "210987654321")},
        "alerts": {"email": "ops@celery.io"},
    }
    assert run_program(own, mocks=RealAccount()).of_type(SERVICE)


def test_unexpressible_schedule_fails_before_any_resource() -> None:
    every_30s = {"name": "too-often", "task": "app.tasks.noop", "every": 30, "queue": "default"}
    schedule = [*DEFAULT_SCHEDULE, every_30s]
    mocks = RecordingMocks()
    with pytest.raises(ConfigError, match=r"^invalid stack config: schedule\[2\]: cannot run "
                       r"on EventBridge: 'too-often'.*scheduler: beat"):  # fmt: skip
        run_program({"scheduler": "eventbridge", "schedule": schedule}, mocks=mocks)
    assert mocks.registrations == []
    # Beat can run what EventBridge cannot.
    assert run_program({"schedule": schedule}).of_type(RULE) == []


def test_missing_dockerfile_fails_before_any_resource(tmp_path: Path) -> None:
    mocks = RecordingMocks()
    with pytest.raises(ConfigError, match=r"^invalid stack config: image\.dockerfile: there is "
                       r"no file Dockerfile in "):  # fmt: skip
        run_program({}, project_root=tmp_path, mocks=mocks)
    with pytest.raises(ConfigError, match=r"^invalid stack config: image\.context: examples/x "
                       r"is not a directory"):  # fmt: skip
        run_program({"image": {"context": "examples/x"}}, project_root=tmp_path, mocks=mocks)
    assert mocks.registrations == []


def test_config_is_read_from_the_language_hosts_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PULUMI_CONFIG",
        json.dumps(
            {
                "aws:region": REGION,
                "celery-ecs:scheduler": "eventbridge",
                "celery-ecs:workers": json.dumps([{"name": "a", "queues": ["default", "long"]}]),
            }
        ),
    )
    assert program.stack_config_values() == {
        "scheduler": "eventbridge",
        "workers": json.dumps([{"name": "a", "queues": ["default", "long"]}]),
    }


# --- another app than the example --------------------------------------------------------------


OTHER_APP: dict[str, object] = {
    "celeryApp": "proj.celery:app",
    "image": {"context": "proj", "dockerfile": "proj/deploy/Dockerfile"},
    "web": {"command": ["gunicorn", "proj.wsgi"], "port": 8080, "livenessPath": "/healthz"},
    "workers": [{"name": "mail", "queues": ["celery", "emails"]}],
    "schedule": [
        {"name": "digest", "task": "proj.tasks.send_digest", "cron": "0 9 * * mon-fri",
         "queue": "emails", "args": ["daily"], "kwargs": {"limit": 50}},
    ],
}  # fmt: skip


def test_a_stack_of_another_app_runs_its_commands_image_port_and_schedule(tmp_path: Path) -> None:
    """Nothing of the example app is left in a stack that names its own app."""
    (tmp_path / "proj" / "deploy").mkdir(parents=True)
    (tmp_path / "proj" / "deploy" / "Dockerfile").write_text("FROM scratch\n")
    for scheduler in ("beat", "eventbridge"):
        run = run_program({**OTHER_APP, "scheduler": scheduler}, project_root=tmp_path)
        tasks = run.task_definitions()
        assert tasks["worker-mail"].command[:5] == [
            "celery", "--app", "proj.celery:app", "worker", "--queues"
        ]  # fmt: skip
        assert tasks["worker-mail"].command[5] == "celery,emails"
        web = tasks["web"]
        assert web.command == ["gunicorn", "proj.wsgi"]
        assert web.container["portMappings"][0]["containerPort"] == 8080
        assert web.environment["WEB_PORT"] == "8080"
        assert web.environment["WEB_LIVENESS_PATH"] == "/healthz"
        group = run.one(aws_types.LB_TARGET_GROUP).inputs
        assert (group["port"], group["healthCheck"]["path"]) == (8080, "/healthz")
        balanced = run.named(SERVICE, "web-service").inputs["loadBalancers"]
        assert [entry["containerPort"] for entry in balanced] == [8080]
        ports = {(rule.name, rule.inputs["fromPort"]) for rule in run.of_type(INGRESS)}
        assert ("network-web-from-alb", 8080) in ports
        (image,) = run.of_type(IMAGE)
        assert image.inputs["context"] == {"location": os.path.relpath(tmp_path / "proj")}
        assert image.inputs["dockerfile"] == {
            "location": os.path.relpath(tmp_path / "proj/deploy/Dockerfile")
        }
        text = " ".join(" ".join(task.command) for task in tasks.values())
        assert "app.celery_app" not in text and "app.web" not in text
        if scheduler == "beat":
            assert tasks["beat"].command == ["celery", "--app", "proj.celery:app", "beat"]
            (entry,) = entries_from_json(tasks["beat"].environment["CELERY_BEAT_SCHEDULE_JSON"])
            assert (entry.task, entry.queue, entry.args) == ("proj.tasks.send_digest",
                                                             "emails", ("daily",))  # fmt: skip
            continue
        target = run.named(TARGET, "schedule-digest").inputs
        (override,) = json.loads(target["inputTransformer"]["inputTemplate"])["containerOverrides"]
        assert override["command"] == [
            "celery-ecs-enqueue", "proj.tasks.send_digest", "--queue", "emails",
            "--args", '["daily"]', "--kwargs", '{"limit":50}', "--name", "digest",
            "--slot", "<time>",
        ]  # fmt: skip
        rule = run.named(RULE, "schedule-digest").inputs
        assert rule["scheduleExpression"] == "cron(0 9 ? * MON-FRI *)"


def test_the_default_stack_s_beat_carries_the_example_schedule() -> None:
    tasks = shared_run({}).task_definitions()
    assert entries_from_json(tasks["beat"].environment["CELERY_BEAT_SCHEDULE_JSON"]) == (
        load({}).schedule
    )
    # The liveness path is the app's default: no variable for it (the task definition as before).
    assert "WEB_LIVENESS_PATH" not in tasks["web"].environment
