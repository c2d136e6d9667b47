"""A diagram of a rendered stack, drawn with ``diagrams`` (AWS icons, laid out by Graphviz).

Everything drawn is read from what the program renders: the VPC and where tasks run (public
subnets with public IPs, or private subnets behind NAT), the load balancer and its listeners,
every service with its task counts and Spot use, the broker, the schedule source, the scaling
loop (the metrics the workers write and Container Insights feed Application Auto Scaling,
which sets the services' counts), and monitoring (the operator alarms, the dashboard, and
where the alarms notify: the stack's encrypted topic and its e-mail subscription, an existing
topic, or nobody).

The drawing is deterministic: node ids come from resource names, never from ``diagrams``'
random ones, so the same stack gives the same Graphviz source. The PNG carries the SHA-256 of
that source (with the icon directory made relative) in a text chunk, so a test can tell that a
committed image is current without depending on Graphviz's or the fonts' exact pixels.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import diagrams
from diagrams import Cluster, Diagram, Edge
from diagrams.aws.compute import ApplicationAutoScaling, Fargate
from diagrams.aws.database import Elasticache
from diagrams.aws.general import Users
from diagrams.aws.integration import (
    EventbridgeRule,
    SimpleNotificationServiceSnsEmailNotification,
    SimpleNotificationServiceSnsTopic,
)
from diagrams.aws.management import Cloudwatch, CloudwatchAlarm
from diagrams.aws.network import ALB, NATGateway

from celery_ecs.names import BEAT_HEARTBEAT_METRIC
from devtools.plan.cost import app_metrics, high_resolution
from devtools.render import ProgramRun, Registration
from infra.config import StackConfig
from policy.invariants import aws_types

#: The PNG text chunk keyword that carries the digest of the Graphviz source.
DIGEST_KEYWORD = b"celery-ecs:dot-sha256"
#: Where diagrams' icons are, as diagrams spells it in the source (``Node._load_icon``: an
#: absolute path with symbolic links kept, so a virtualenv reached through a link matches too).
_ICONS = os.path.join(Path(os.path.abspath(diagrams.__file__)).parent.parent, "resources")


class _Drawing(Diagram):
    """A ``Diagram`` that builds the graph and leaves rendering to the caller (``Diagram``
    renders to a file named after the diagram when its ``with`` block ends)."""

    def __exit__(self, *exc_info: object) -> None:
        diagrams.setdiagram(None)


def graph_source(run: ProgramRun, config: StackConfig, title: str) -> str:
    """The stack's diagram as Graphviz source, icon paths made relative (stable anywhere)."""
    source: str = _build(run, config, title).source
    return source.replace(_ICONS, "<diagrams>")


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def write_png(run: ProgramRun, config: StackConfig, title: str, path: Path) -> str:
    """Render the diagram to ``path`` (PNG, digest embedded); returns the digest."""
    graph = _build(run, config, title)
    source = graph.source.replace(_ICONS, "<diagrams>")
    # quiet: Graphviz's notes on labels wider than diagrams' fixed-size icons are not errors.
    png = graph.pipe(format="png", quiet=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_with_text_chunk(png, DIGEST_KEYWORD, digest(source).encode()))
    return digest(source)


def embedded_digest(path: Path) -> str | None:
    """The Graphviz source digest a PNG written by ``write_png`` carries."""
    data = path.read_bytes()
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"tEXt" and body.startswith(DIGEST_KEYWORD + b"\0"):
            return body[len(DIGEST_KEYWORD) + 1 :].decode()
        offset += 12 + length
    return None


def _with_text_chunk(png: bytes, keyword: bytes, text: bytes) -> bytes:
    """``png`` with a tEXt chunk right after IHDR (PNG: length, type, data, CRC of type+data)."""
    body = keyword + b"\0" + text
    chunk = (
        struct.pack(">I", len(body))
        + b"tEXt"
        + body
        + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    )
    header_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:header_end] + chunk + png[header_end:]


def _build(run: ProgramRun, config: StackConfig, title: str) -> Any:
    """The diagram as a graphviz ``Digraph``."""
    services = _services(run, run.by_reference(), config)
    public_tasks = any(service["public_ip"] for service in services)
    rules = run.of_type(aws_types.CLOUDWATCH_EVENT_RULE)
    with _Drawing(
        title,
        direction="LR",
        show=False,
        # Splines, not diagrams' default orthogonal edges: those lose their labels.
        graph_attr={
            "pad": "0.4",
            "fontsize": "20",
            "nodesep": "0.4",
            "ranksep": "1.0",
            "splines": "spline",
        },
        node_attr={"fontsize": "12"},
    ) as drawing:
        users = Users("Internet", nodeid="internet")
        with Cluster(_vpc_label(run)):
            with Cluster("public subnets"):
                balancer = ALB(_balancer_label(run), nodeid="alb")
                for nat in run.of_type(aws_types.EC2_NAT_GATEWAY):
                    NATGateway(f"{nat.name}\n(tasks' egress)", nodeid=nat.name)
                if public_tasks:
                    tasks = _draw_services(run, services, public=True)
            with Cluster("private subnets"):
                broker = Elasticache(_broker_label(run), nodeid="broker")
                if not public_tasks:
                    tasks = _draw_services(run, services, public=False)
        with Cluster("scaling"):
            metrics = Cloudwatch(_metrics_label(run), nodeid="cloudwatch")
            scaling = ApplicationAutoScaling("Application\nAuto Scaling", nodeid="autoscaling")
        users >> Edge(label=_listener_ports(run)) >> balancer
        balancer >> Edge(label="8000") >> tasks["web"]
        for node in tasks.values():
            node >> Edge(color="#C7131F") >> broker
        # The workers write their queues' metrics; beat its heartbeat, when it writes one.
        beat_writes = any(name == BEAT_HEARTBEAT_METRIC for _, name, _ in app_metrics(run))
        for name, node in tasks.items():
            if name.startswith("worker-") or (name == "beat" and beat_writes):
                node >> Edge(style="dashed", color="#7B8894") >> metrics
        metrics >> Edge(label=_scaling_edge_label(run), style="dashed") >> scaling
        _draw_monitoring(run, metrics)
        for name, node in tasks.items():
            if name.startswith(("worker-", "web")):
                scaling >> Edge(style="dashed", color="#7B8894") >> node
        if rules and "enqueue" in tasks:
            expressions = "\n".join(rule.inputs["scheduleExpression"] for rule in rules)
            schedule = EventbridgeRule(f"EventBridge\n{expressions}", nodeid="eventbridge")
            schedule >> Edge(label="RunTask") >> tasks["enqueue"]
        return drawing.dot


def _metrics_label(run: ProgramRun) -> str:
    """The metrics the app writes (by name), and Container Insights where the cluster has it."""
    names = sorted({name for _, name, _ in app_metrics(run)})
    rows = [", ".join(names[i : i + 2]) for i in range(0, len(names), 2)]
    insights = any(
        setting == {"name": "containerInsights", "value": "enabled"}
        for cluster in run.of_type(aws_types.ECS_CLUSTER)
        for setting in cluster.inputs.get("settings", [])
    )
    return "\n".join(["CloudWatch", *rows, *(["+ Container Insights"] if insights else [])])


def _scaling_edge_label(run: ProgramRun) -> str:
    """What drives scaling: backlog per task (target tracking, one-minute data) and, with the
    step policies' alarms, backlog per worker every 10 s."""
    fast = [
        alarm for alarm in run.of_type(aws_types.CLOUDWATCH_METRIC_ALARM) if high_resolution(alarm)
    ]
    return "backlog per task" + ("\n(+ per worker, 10 s alarms)" if fast else "")


def _draw_monitoring(run: ProgramRun, metrics: Any) -> None:
    """The operator alarms (the scale-out ones belong to scaling), the dashboard, and where the
    alarms notify."""
    alarms = [
        alarm
        for alarm in run.of_type(aws_types.CLOUDWATCH_METRIC_ALARM)
        if not high_resolution(alarm)
    ]
    dashboards = run.of_type(aws_types.CLOUDWATCH_DASHBOARD)
    if not alarms and not dashboards:
        return
    notified = sorted({arn for alarm in alarms for arn in alarm.inputs.get("okActions", [])})
    topics = run.of_type(aws_types.SNS_TOPIC)
    subscriptions = run.of_type(aws_types.SNS_TOPIC_SUBSCRIPTION)
    with Cluster("monitoring"):
        if alarms:
            quiet = "" if notified else "\nnotifying nobody\n(alerts.* unset)"
            node = CloudwatchAlarm(f"{len(alarms)} alarms{quiet}", nodeid="alarms")
            metrics >> Edge(style="dashed", color="#7B8894") >> node
        for dashboard in dashboards:
            Cloudwatch(f"dashboard\n{dashboard.inputs['dashboardName']}", nodeid=dashboard.name)
        if alarms and notified:
            encrypted = any("kmsMasterKeyId" in topic.inputs for topic in topics)
            label = "SNS topic\n(KMS-encrypted)" if encrypted else "SNS topic"
            if not topics:
                label = "SNS topic\n(existing: alerts.topicArn)"
            topic = SimpleNotificationServiceSnsTopic(label, nodeid="topic")
            node >> Edge(label="ALARM, OK") >> topic
            for subscription in subscriptions:
                protocol = subscription.inputs["protocol"]
                email = SimpleNotificationServiceSnsEmailNotification(
                    f"{protocol} subscription", nodeid=subscription.name
                )
                topic >> email


def _draw_services(run: ProgramRun, services: list[dict[str, Any]], public: bool) -> dict[str, Any]:
    cluster = run.one(aws_types.ECS_CLUSTER)
    placement = "public IPs" if public else "no public IPs"
    label = (
        f"ECS cluster {cluster.physical_name}: Fargate, {placement}\n"
        "image from ECR, broker URL from Secrets Manager"
    )
    with Cluster(label):
        return {
            service["name"]: Fargate(service["label"], nodeid=f"task-{service['name']}")
            for service in services
        }


def _services(
    run: ProgramRun, references: dict[str, Registration], config: StackConfig
) -> list[dict[str, Any]]:
    pools = {pool.name: pool for pool in config.workers}
    bounds = {
        target.inputs["resourceId"].rsplit("/", 1)[1]: target.inputs
        for target in run.of_type(aws_types.APPAUTOSCALING_TARGET)
    }
    found = []
    for service in run.of_type(aws_types.ECS_SERVICE):
        name = service.inputs["tags"]["Service"]
        definition = references[service.inputs["taskDefinition"]].inputs
        target = bounds.get(service.physical_name)
        counts = (
            f"{target['minCapacity']:g}-{target['maxCapacity']:g} tasks"
            if target
            else f"{service.inputs['desiredCount']:g} task"
        )
        strategy = service.inputs.get("capacityProviderStrategies", [])
        on_spot = any(item["capacityProvider"] == "FARGATE_SPOT" for item in strategy)
        spot = " (Spot above 1)" if on_spot else ""
        size = f"{int(definition['cpu']) / 1024:g} vCPU, {int(definition['memory']) / 1024:g} GB"
        pool = pools.get(name.removeprefix("worker-")) if name.startswith("worker-") else None
        shutdown = (
            f"\ntaskTimeout {pool.task_timeout} s, {pool.budget.shutdown} stop" if pool else ""
        )
        found.append(
            {
                "name": name,
                "label": f"{name}\n{counts}{spot}\n{size}{shutdown}",
                "public_ip": service.inputs["networkConfiguration"].get("assignPublicIp", False),
            }
        )
    for task_definition in run.of_type(aws_types.ECS_TASK_DEFINITION):
        if task_definition.inputs["tags"]["Service"] == "enqueue":
            found.append(
                {"name": "enqueue", "label": "enqueue\none-off task per slot", "public_ip": False}
            )
    return sorted(found, key=lambda service: service["name"])


def _vpc_label(run: ProgramRun) -> str:
    vpcs = run.of_type(aws_types.EC2_VPC)
    if not vpcs:
        return "existing VPC"
    zones = sorted({s.inputs["availabilityZone"] for s in run.of_type(aws_types.EC2_SUBNET)})
    return f"VPC {vpcs[0].inputs['cidrBlock']} ({', '.join(zones)})"


def _listener_ports(run: ProgramRun) -> str:
    listeners = run.of_type(aws_types.LB_LISTENER)
    return ", ".join(
        f"{listener.inputs['protocol']} {listener.inputs['port']:g}"
        for listener in sorted(listeners, key=lambda listener: listener.inputs["port"])
    )


def _balancer_label(run: ProgramRun) -> str:
    balancer = run.one(aws_types.LB_LOAD_BALANCER)
    scheme = "internal" if balancer.inputs.get("internal") else "internet-facing"
    return f"ALB {balancer.name}\n{scheme}"


def _broker_label(run: ProgramRun) -> str:
    group = run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).inputs
    nodes = int(group.get("numCacheClusters", 1))
    return (
        f"ElastiCache {group['engine']} {group['engineVersion']}\n"
        f"{nodes} x {group['nodeType']}\nTLS, port {group['port']:g}"
    )
