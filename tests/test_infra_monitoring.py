"""Alarms, their notification topic and the dashboard, as the program renders them under mocks,
for the stacks of ``test_infra_program`` (both scheduler modes, one to three pools, no
notification target, a created topic, an existing one)."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from devtools.render import ACCOUNT, RecordingMocks
from devtools.render import DEFAULT_REGION as REGION
from infra.alarms import MIN_REQUESTS_FOR_RATE
from infra.config import load
from policy.invariants import aws_types
from tests.support import run_program, shared_run
from tests.test_infra_program import (
    ALARM,
    ALL_STACKS,
    KEY,
    NAMESPACE,
    PREFIX,
    QUEUE,
    RULE,
    STACKS,
    TOPIC,
    Deployed,
)

#: The stacks with a dashboard (production's default, or ``dashboard: true``).
DASHBOARD_STACKS = [name for name in ALL_STACKS if load(STACKS[name]).dashboard]


@pytest.fixture(params=ALL_STACKS)
def deployed(request: pytest.FixtureRequest) -> Deployed:
    raw = STACKS[request.param]
    return Deployed(config=load(raw), run=shared_run(raw))


def operator_alarms(deployed: Deployed) -> dict[str, dict[str, Any]]:
    """Alarm name (without the stack prefix) -> inputs, the scaling alarms left out."""
    return {
        alarm.inputs["name"].removeprefix(f"{PREFIX}-"): alarm.inputs
        for alarm in deployed.run.of_type(ALARM)
        if "-scale-out-" not in alarm.inputs["name"]
    }


def stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [query["metric"] for query in alarm["metricQueries"] if "metric" in query]


def result(alarm: dict[str, Any]) -> str:
    (query,) = [q for q in alarm["metricQueries"] if q.get("returnData")]
    return str(query["expression"])


def test_every_alarm_exists_whatever_the_notification_target(deployed: Deployed) -> None:
    config = deployed.config
    expected = {"web-elb-5xx", "web-target-5xx", "broker-memory", "broker-cpu",
                "broker-connections"}  # fmt: skip
    for pool in config.workers:
        expected |= {f"queue-age-{pool.name}", f"tasks-below-min-{pool.name}"}
    if config.scheduler == "beat":
        expected.add("beat-silent")
    else:
        expected |= {f"schedule-failed-{entry.name}" for entry in config.schedule}
        expected.add("schedule-dead-letters")
    assert set(operator_alarms(deployed)) == expected


def test_alarms_notify_the_configured_topic_or_nobody(deployed: Deployed) -> None:
    run, alerts = deployed.run, deployed.config.alerts
    if alerts.topic_arn:
        topic = alerts.topic_arn
        assert run.of_type(TOPIC) == [] and run.of_type(KEY) == [], "an existing topic: no new one"
    elif alerts.email:
        topic = run.one(TOPIC).state["arn"]
    else:
        topic = None
        assert run.of_type(TOPIC) == [] and "alertTopicArn" not in run.outputs
    for name, alarm in operator_alarms(deployed).items():
        actions = [topic] if topic else []
        assert alarm.get("alarmActions", []) == actions, name
        assert alarm.get("okActions", []) == actions, name
    if topic:
        assert run.outputs["alertTopicArn"] == topic


@pytest.mark.parametrize("deployed", ["production-eventbridge"], indirect=True)
def test_a_created_topic_is_encrypted_and_only_this_stacks_alarms_may_publish(
    deployed: Deployed,
) -> None:
    run = deployed.run
    alarms = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{PREFIX}-*"
    only_ours = {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnLike": {"aws:SourceArn": alarms},
    }
    key = run.one(KEY)
    assert key.inputs["enableKeyRotation"] is True
    assert key.inputs["deletionWindowInDays"] == 30  # production
    by_sid = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    assert set(by_sid) == {"KeyOwner", "AlarmsPublish"}
    assert by_sid["KeyOwner"]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert "kms:PutKeyPolicy" in by_sid["KeyOwner"]["Action"], "the owner can always fix it"
    publish = by_sid["AlarmsPublish"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(publish["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert publish["Condition"] == only_ours

    topic = run.one(TOPIC)
    # The customer managed key: alias/aws/sns's policy cannot admit CloudWatch.
    assert topic.inputs["kmsMasterKeyId"] == key.state["arn"]
    policy = json.loads(run.one(aws_types.SNS_TOPIC_POLICY).inputs["policy"])
    allow, deny = policy["Statement"]
    assert allow["Effect"] == "Allow" and allow["Action"] == "sns:Publish"
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Resource"] == topic.state["arn"]
    assert allow["Condition"] == only_ours
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    subscription = run.one(aws_types.SNS_TOPIC_SUBSCRIPTION).inputs
    assert subscription == {
        "topic": topic.state["arn"],
        "protocol": "email",
        "endpoint": "ops@example.com",
        **{k: v for k, v in subscription.items() if k not in ("topic", "protocol", "endpoint")},
    }
    # Every alarm's name matches what the topic admits.
    assert all(a.inputs["name"].startswith(f"{PREFIX}-") for a in run.of_type(ALARM))


def test_pool_alarms_follow_each_pools_settings(deployed: Deployed) -> None:
    alarms = operator_alarms(deployed)
    for pool in deployed.config.workers:
        age = alarms[f"queue-age-{pool.name}"]
        assert age["threshold"] == pool.max_queue_seconds
        assert age["comparisonOperator"] == "GreaterThanThreshold"
        assert {m["dimensions"]["Queue"] for m in stats(age)} == set(pool.queues)
        assert {(m["metricName"], m["namespace"], m["stat"]) for m in stats(age)} == {
            ("OldestMessageAge", NAMESPACE, "Maximum")
        }
        assert result(age) == ("age0" if len(pool.queues) == 1 else "MAX([age0, age1])")

        below = alarms[f"tasks-below-min-{pool.name}"]
        assert below["threshold"] == pool.min_count
        assert below["comparisonOperator"] == "LessThanThreshold"
        assert below["treatMissingData"] == "breaching"
        assert below["evaluationPeriods"] == below["datapointsToAlarm"] == 5, "several minutes"
        # The workers' own count, with or without Container Insights: a task counts once its
        # worker runs and publishes; none publishing is missing data, which breaches.
        (workers,) = stats(below)
        assert (workers["metricName"], workers["namespace"], workers["stat"]) == (
            "Workers",
            NAMESPACE,
            "Maximum",
        )
        assert workers["dimensions"] == {"Pool": pool.name}


def test_the_schedule_source_has_its_alarms(deployed: Deployed) -> None:
    alarms, run = operator_alarms(deployed), deployed.run
    if deployed.config.scheduler == "beat":
        silent = alarms["beat-silent"]
        (beats,) = stats(silent)
        assert (beats["metricName"], beats["namespace"], beats["stat"]) == (
            "BeatHeartbeat", NAMESPACE, "Sum"
        )  # fmt: skip
        assert silent["comparisonOperator"] == "LessThanThreshold" and silent["threshold"] == 1
        # A beat that stopped writes nothing at all: missing data is the alarm.
        assert silent["treatMissingData"] == "breaching"
        return
    for entry in deployed.config.schedule:
        failed = alarms[f"schedule-failed-{entry.name}"]
        (metric,) = stats(failed)
        rule = run.named(RULE, f"schedule-{entry.name}").state["name"]
        assert (metric["namespace"], metric["metricName"]) == ("AWS/Events", "FailedInvocations")
        assert metric["dimensions"] == {"RuleName": rule}
        assert failed["threshold"] == 1 and failed["treatMissingData"] == "notBreaching"
    letters = alarms["schedule-dead-letters"]
    (metric,) = stats(letters)
    assert metric["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert metric["dimensions"] == {"QueueName": run.one(QUEUE).state["name"]}
    assert letters["threshold"] == 1


def test_web_and_broker_alarms_take_the_configured_thresholds(deployed: Deployed) -> None:
    alarms, run, alerts = operator_alarms(deployed), deployed.run, deployed.config.alerts
    balancer = run.one(aws_types.LB_LOAD_BALANCER).state["arnSuffix"]
    for name, metric_name in (("web-elb-5xx", "HTTPCode_ELB_5XX_Count"),
                              ("web-target-5xx", "HTTPCode_Target_5XX_Count")):  # fmt: skip
        alarm = alarms[name]
        assert alarm["threshold"] == alerts.http_5xx_percent
        assert {m["metricName"] for m in stats(alarm)} == {metric_name, "RequestCount"}
        assert {m["dimensions"]["LoadBalancer"] for m in stats(alarm)} == {balancer}
        assert result(alarm) == (
            f"IF(requests >= {MIN_REQUESTS_FOR_RATE}, 100 * FILL(errors, 0) / requests, 0)"
        )
    group = run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).id
    nodes = [f"{group}-{n:03d}" for n in range(1, 2 + deployed.config.broker.replicas)]
    for name, metric_name, threshold in (
        ("broker-memory", "DatabaseMemoryUsagePercentage", alerts.broker_memory_percent),
        ("broker-cpu", "EngineCPUUtilization", alerts.broker_cpu_percent),
        ("broker-connections", "CurrConnections", alerts.broker_connections),
    ):
        alarm = alarms[name]
        assert alarm["threshold"] == threshold
        assert [m["dimensions"]["CacheClusterId"] for m in stats(alarm)] == nodes
        assert {m["metricName"] for m in stats(alarm)} == {metric_name}


def dashboard(deployed: Deployed) -> dict[str, Any]:
    return json.loads(
        deployed.run.one(aws_types.CLOUDWATCH_DASHBOARD).inputs["dashboardBody"]
    )


def widget_metrics(widget: dict[str, Any]) -> list[tuple[str, ...]]:
    """(namespace, metric name, dimension values...) of each metric line of a widget."""
    return [
        tuple(str(part) for part in line if not isinstance(part, dict))
        for line in widget["properties"]["metrics"]
        if isinstance(line[0], str)
    ]


def test_a_dashboard_only_where_the_stack_asks_for_one(deployed: Deployed) -> None:
    """Its resource and its output exist with ``dashboard`` (config tests: its defaults)."""
    dashboards = deployed.run.of_type(aws_types.CLOUDWATCH_DASHBOARD)
    assert len(dashboards) == int(deployed.config.dashboard)
    assert ("dashboardUrl" in deployed.run.outputs) is deployed.config.dashboard


@pytest.mark.parametrize("stack", DASHBOARD_STACKS)
def test_the_dashboard_shows_what_the_alarms_watch(stack: str) -> None:
    deployed = Deployed(config=load(STACKS[stack]), run=shared_run(STACKS[stack]))
    run, config = deployed.run, deployed.config
    body = dashboard(deployed)
    widgets = {w["properties"]["title"]: w for w in body["widgets"]}
    assert run.one(aws_types.CLOUDWATCH_DASHBOARD).inputs["dashboardName"] == PREFIX
    alarm_arns = {a.state["arn"] for a in run.of_type(ALARM)}
    shown = set(widgets["Alarms"]["properties"]["alarms"])
    shown |= set(widgets["Scaling activity (scale-out alarms)"]["properties"]["alarms"])
    assert shown == alarm_arns
    cluster = run.outputs["clusterName"]
    for pool in config.workers:
        queues = widgets[f"Pool {pool.name}: waiting messages and oldest message age"]
        lines = widget_metrics(queues)
        for queue in pool.queues:
            assert (NAMESPACE, "Backlog", "Queue", queue) in lines
            assert (NAMESPACE, "OldestMessageAge", "Queue", queue) in lines
        assert queues["properties"]["period"] == 10
        tasks = widgets[f"Pool {pool.name}: tasks"]
        service = run.outputs["serviceNames"][f"worker-{pool.name}"]
        for name in ("DesiredTaskCount", "RunningTaskCount"):
            shown = ("ECS/ContainerInsights", name, "ClusterName", cluster, "ServiceName",
                     service) in widget_metrics(tasks)  # fmt: skip
            assert shown is deployed.config.container_insights, name
        assert (NAMESPACE, "Workers", "Pool", pool.name) in widget_metrics(tasks)
        marks = {a["label"]: a["value"] for a in tasks["properties"]["annotations"]["horizontal"]}
        assert marks == {"minCount": pool.min_count, "maxCount": pool.max_count}
        scaling = widgets[f"Pool {pool.name}: scaling (waiting messages per worker)"]
        marks = {a["label"]: a["value"] for a in scaling["properties"]["annotations"]["horizontal"]}
        assert marks["Target (backlogPerTask)"] == pool.backlog_per_task
    web = widget_metrics(widgets["Web: 5xx answers"]) + widget_metrics(
        widgets["Web: requests and latency"]
    )
    assert {line[1] for line in web} == {
        "HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count", "RequestCount",
        "TargetResponseTime",
    }  # fmt: skip
    broker = widget_metrics(widgets["Broker: memory and engine CPU (%)"])
    assert {line[1] for line in broker} == {"DatabaseMemoryUsagePercentage", "EngineCPUUtilization"}
    if config.scheduler == "beat":
        (line,) = widget_metrics(widgets["Schedule: beat heartbeats per minute"])
        assert line == (NAMESPACE, "BeatHeartbeat", "Service", "beat")
    else:
        lines = widget_metrics(widgets["Schedule: EventBridge invocations"])
        rules = {run.named(RULE, f"schedule-{e.name}").state["name"] for e in config.schedule}
        assert {line[3] for line in lines if line[0] == "AWS/Events"} == rules
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                run.one(QUEUE).state["name"]) in lines  # fmt: skip
    # Laid out in a grid, no two widgets on the same spot.
    spots = [(w["x"], w["y"]) for w in body["widgets"]]
    assert len(set(spots)) == len(spots)


@pytest.mark.parametrize(
    "alerts, key_path, allowed",
    [
        ({"email": "ops@example.com", "topicArn": "arn:aws:sns:us-east-1:123456789012:t"},
         "alerts.topicArn", "either email"),
        ({"email": "not-an-address"}, "alerts.email", "an e-mail address"),
        ({"topicArn": "arn:aws:sqs:us-east-1:123456789012:q"}, "alerts.topicArn", "SNS topic"),
        ({"http5xxPercent": 0}, "alerts.http5xxPercent", "1..100"),
        ({"brokerMemoryPercent": 100}, "alerts.brokerMemoryPercent", "10..95"),
        ({"brokerCpuPercent": 5}, "alerts.brokerCpuPercent", "10..100"),
        ({"brokerConnections": 70000}, "alerts.brokerConnections", "1..65000"),
        ({"pagerduty": "x"}, "alerts.pagerduty", "email, topicArn"),
    ],
)  # fmt: skip
def test_invalid_alert_settings_fail_before_any_resource(
    alerts: dict[str, Any], key_path: str, allowed: str
) -> None:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError, match=rf"^invalid stack config: {key_path}: ") as caught:
        run_program({"alerts": alerts}, mocks=mocks)
    assert allowed in str(caught.value)
    assert mocks.registrations == []
