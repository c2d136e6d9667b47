"""The offline plan: what a stack config deploys, whether AWS will accept it, what it costs.

    python -m devtools.plan --stack dev        (make plan; make plan STACK=prod)

Renders the Pulumi program under mocks for ``Pulumi.<stack>.yaml`` (no credentials, no Docker,
no network), validates every API request and IAM policy against AWS's own rules
(``devtools.validate``), draws the stack (``devtools.diagram``), estimates its monthly cost
(``devtools.cost``) and prints every resource grouped by component with the settings a
reviewer cares about. The same config gives byte-identical text: names come from the program,
ids and ARNs from deterministic mocks, everything is sorted, and the only date is the price
table's. Exit status: 0, or 1 when the config is invalid or a rule is broken (2: no such stack).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import broker_ceiling, cost, diagram
from devtools.docblocks import DOCS, GeneratedBlock
from devtools.render import (
    DEFAULT_REGION,
    ROOT,
    ProgramRun,
    Registration,
    read_stack_file,
    read_stack_path,
    run_program,
    stack_names,
)
from devtools.validate import Report, validate, versions
from infra.config import ConfigError, StackConfig, load, placeholders

#: Where ``make plan`` writes the diagram of a stack (not committed).
DIAGRAM_DIRECTORY = ROOT / ".plan"
#: The diagram the README and the docs show, and the docs' cost table, for ``Pulumi.dev.yaml``.
DOCS_DIAGRAM = DOCS / "plan-dev.png"
COST_BLOCK = GeneratedBlock(
    page=DOCS / "reference" / "cost.md",
    begin="<!-- plan: cost of Pulumi.dev.yaml -->",
    end="<!-- /plan -->",
)
#: Components in the order a reader meets them; others follow, by name.
_COMPONENT_ORDER = (
    "Network", "Broker", "Image", "Cluster", "Web", "Worker", "Beat", "Schedule", "ServiceScaling",
    "Alarms", "Notifications", "Dashboard",
)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    stack: str
    region: str
    config: StackConfig
    run: ProgramRun
    report: Report
    estimate: cost.Estimate


def make_plan(stack: str, config: dict[str, object], region: str) -> Plan:
    """Render, validate and price ``config``; an invalid config raises the program's
    ``InvalidStackConfig`` (a ``ConfigError``) before any resource is registered."""
    run = run_program(config, stack=stack, region=region, project_root=ROOT)
    stack_config = load(config)
    # A production stack is priced against the same config without production's defaults
    # too, to say what production adds and why.
    without_production = None
    if stack_config.production:
        base = {**config, "production": False}
        without_production = (
            run_program(base, stack=stack, region=region, project_root=ROOT),
            load(base),
        )
    return Plan(
        stack=stack,
        region=region,
        config=stack_config,
        run=run,
        report=validate(run),
        estimate=cost.estimate(run, stack_config, region, without_production),
    )


# --- text ---------------------------------------------------------------------------------


def render(plan: Plan, diagram_path: Path | None) -> str:
    lines = [
        f"Offline plan of stack {plan.stack}, region {plan.region}",
        "Rendered under Pulumi mocks: no credentials, no Docker, no network. Names are the",
        "program's; ids, ARNs and the 'abc1234' suffixes of generated names are placeholders.",
        "",
        *_section("Summary", _summary(plan)),
        *_section("Validation", _validation(plan.report) + _placeholders(plan.config)),
        *_section("Resources, by component", _resources(plan)),
        *_section("Broker ceiling", broker_ceiling.plan_lines(
            plan.config.broker.node_type, broker_ceiling.load_figures())),
        *_section("Monthly cost", cost.render(plan.estimate)),
    ]
    if diagram_path is not None:
        lines += _section("Diagram", [_relative(diagram_path)])
    return "\n".join(lines).rstrip() + "\n"


def _section(title: str, body: Sequence[str]) -> list[str]:
    return [title, "=" * len(title), *body, ""]


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _summary(plan: Plan) -> list[str]:
    run, config = plan.run, plan.config
    references = run.by_reference()
    services = ", ".join(
        f"{tasks.name} {cost.count_text(tasks.low, tasks.high)}"
        for tasks in cost.task_sets(run, references, config.schedule)
        if not tasks.name.startswith("enqueue (")
    )
    ingress = [rule for rule in run.of_type(_INGRESS) if rule.inputs.get("cidrIpv4") == "0.0.0.0/0"]
    public = [
        f"{_name(references, r.inputs['securityGroupId'])} accepts {_ports(r.inputs)} from "
        "0.0.0.0/0"
        for r in ingress
    ]
    if any(s.inputs["networkConfiguration"].get("assignPublicIp") for s in run.of_type(_SERVICE)):
        public.append("tasks get public IPs (security groups admit only the load balancer)")
    https = any(listener.inputs["protocol"] == "HTTPS" for listener in run.of_type(_LISTENER))
    broker = run.one(_REPLICATION_GROUP).inputs
    encryption = [
        f"broker: TLS {broker.get('transitEncryptionMode', 'off')}, "
        f"at rest {'yes' if broker.get('atRestEncryptionEnabled') else 'no'}, AUTH token; "
        "its URL only in Secrets Manager",
        "load balancer: HTTPS, HTTP redirected" if https else "load balancer: plain HTTP only",
    ]
    schedule = (
        "beat, one task (stopped before its replacement starts)"
        if config.scheduler == "beat"
        else f"EventBridge, {len(run.of_type(_RULE))} rules starting one-off tasks"
    )
    alarms = run.of_type(_ALARM)
    # The operator alarms notify on OK too; the scale-out alarms only start a scaling policy.
    notified = sorted({_name(references, a) for x in alarms for a in x.inputs.get("okActions", [])})
    lines = [
        f"Tasks:       {services} ({config.cpu_architecture})",
        *_labelled("Public:", public),
        *_labelled("Encryption:", encryption),
        f"Schedule:    {schedule}",
        *_labelled(
            "Alarms:",
            [
                f"{len(alarms)} ({sum(map(cost.high_resolution, alarms))} high-resolution, for "
                "scale-out)",
                "notifying "
                + (", ".join(notified) or "nobody (alerts.email and alerts.topicArn unset)"),
            ],
        ),
    ]
    if plan.estimate.prices is not None:
        low, high = plan.estimate.totals
        lines.append(
            f"Cost:        {cost.money(low)} a month at min count (floor "
            f"{cost.money(plan.estimate.floor)}), {cost.money(high)} at max count"
        )
    return lines


def _labelled(label: str, items: Sequence[str]) -> list[str]:
    return [f"{label if index == 0 else '':12} {item}" for index, item in enumerate(items)]


def _validation(report: Report) -> list[str]:
    rules = ", ".join(f"{name} {version}" for name, version in sorted(versions().items()))
    counts = (
        f"{report.requests} API requests and {report.policies} IAM, key and resource policies "
        f"({rules})"
    )
    if report.ok:
        return [cost.wrap(f"OK: {counts} follow AWS's rules.", "", "")]
    return [
        f"FAILED: {len(report.findings)} problem(s) in {counts}:",
        *(cost.wrap(str(finding), "  - ", "    ") for finding in report.findings),
    ]


def _placeholders(config: StackConfig) -> list[str]:
    """Documentation examples left in the config: fine offline, refused by a real deploy."""
    found = placeholders(config)
    if not found:
        return []
    return [
        "",
        f"WARNING: {len(found)} placeholder(s) to replace; pulumi preview and up refuse them "
        "in a real account:",
        *(cost.wrap(message, "  - ", "    ") for message in found),
    ]


def _resources(plan: Plan) -> list[str]:
    run = plan.run
    references = run.by_reference()
    components = {r.urn: r for r in run.resources if not r.custom}
    groups: dict[str, list[Registration]] = {}
    for resource in run.resources:
        if resource.custom:
            groups.setdefault(_component_of(resource, components), []).append(resource)
    lines: list[str] = []
    for urn in sorted(groups, key=lambda urn: _component_key(components.get(urn))):
        component = components.get(urn)
        title = f"{component.name} ({component.type.rsplit(':', 1)[1]})" if component else "(stack)"
        lines.append(title)
        lines += [
            cost.wrap(line, "  ", "    ") for line in _component_notes(component, plan.config)
        ]
        for resource in sorted(groups[urn], key=lambda r: (r.type, r.name)):
            lines.append(f"  {resource.type.rsplit(':', 1)[1]} {resource.name}")
            summarize = SUMMARIES.get(resource.type, _default_summary)
            lines += [
                cost.wrap(item, "      ", "        ") for item in summarize(resource, references)
            ]
        lines.append("")
    return lines


def _component_of(resource: Registration, components: dict[str, Registration]) -> str:
    """The URN of the component a resource belongs to ("" for the stack itself)."""
    return resource.parent if resource.parent in components else ""


def _component_key(component: Registration | None) -> tuple[int, str]:
    if component is None:
        return (-1, "")
    kind = component.type.rsplit(":", 1)[1]
    rank = _COMPONENT_ORDER.index(kind) if kind in _COMPONENT_ORDER else len(_COMPONENT_ORDER)
    return (rank, component.name)


def _component_notes(component: Registration | None, config: StackConfig) -> list[str]:
    """What the budget and the config decide for a component (timeouts, pools)."""
    if component is None:
        return []
    kind = component.type.rsplit(":", 1)[1]
    if kind == "Worker":
        (pool,) = [pool for pool in config.workers if f"worker-{pool.name}" == component.name]
        budget = pool.budget
        spot = "Fargate Spot above the first task" if pool.fargate_spot else "Fargate only"
        return [
            f"pool {pool.name}: queues {', '.join(pool.queues)}; concurrency {pool.concurrency}; "
            f"{pool.min_count}-{pool.max_count} tasks; {spot}",
            f"budget: taskTimeout {pool.task_timeout} s -> soft {budget.soft_time_limit} s / hard "
            f"{budget.time_limit} s, {budget.shutdown} shutdown, stopTimeout "
            f"{budget.stop_timeout} s, soft shutdown {budget.soft_shutdown_timeout} s, "
            f"visibility {budget.visibility_timeout} s, scale-in protection "
            f"{'yes' if budget.task_protection else 'no'}",
        ]
    if kind == "Web":
        web_budget = config.web.budget
        return [
            f"budget: requestTimeout {web_budget.request_timeout} s -> ALB idle timeout "
            f"{web_budget.idle_timeout} s, deregistration delay "
            f"{web_budget.deregistration_delay} s, stopTimeout {web_budget.stop_timeout} s"
        ]
    return []


# --- one line or a few per resource type ---------------------------------------------------

Summary = Callable[[Registration, dict[str, Registration]], list[str]]
_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
_SERVICE = "aws:ecs/service:Service"
_LISTENER = "aws:lb/listener:Listener"
_RULE = "aws:cloudwatch/eventRule:EventRule"
_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
_REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"


def _name(references: dict[str, Registration], value: object) -> str:
    """The logical name of the resource an id or ARN refers to (the value if none)."""
    text = str(value)
    found = references.get(text) or references.get(text.removesuffix(":*"))
    if found is None:
        return text
    return found.name + (":*" if text.endswith(":*") and text not in references else "")


def _days(value: float) -> str:
    return f"{value:g} day" if value == 1 else f"{value:g} days"


def _on(value: object) -> str:
    return "on" if value else "off"


def _ports(inputs: dict[str, Any]) -> str:
    low, high = inputs.get("fromPort"), inputs.get("toPort")
    ports = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    return f"{inputs.get('ipProtocol')} {ports}"


def _default_summary(resource: Registration, _: dict[str, Registration]) -> list[str]:
    """Any other type: its scalar inputs (never the secret ones)."""
    shown = [
        f"{key}={json.dumps(value, sort_keys=True)}"
        for key, value in sorted(resource.inputs.items())
        if key not in resource.secret_inputs
    ]
    return ["; ".join(shown)] if shown else []


def _rule(resource: Registration, refs: dict[str, Registration], direction: str) -> list[str]:
    inputs = resource.inputs
    peer = inputs.get("cidrIpv4") or _name(refs, inputs.get("referencedSecurityGroupId"))
    arrow, word = ("<-", "from") if direction == "in" else ("->", "to")
    public = " PUBLIC" if direction == "in" and peer == "0.0.0.0/0" else ""
    return [
        f"{_name(refs, inputs['securityGroupId'])} {arrow} {_ports(inputs)} {word} {peer}{public}"
    ]


def _role(resource: Registration, _: dict[str, Registration]) -> list[str]:
    found = []
    for statement in _statements(json.loads(resource.inputs["assumeRolePolicy"])):
        principal = statement.get("Principal", {}).get("Service")
        condition = statement.get("Condition", {}).get("StringEquals", {})
        guard = f", for account {condition['aws:SourceAccount']} only" if condition else ""
        found.append(f"assumed by {principal}{guard}")
    return found


def _policy(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    return _statement_lines(json.loads(resource.inputs["policy"]), refs)


def _statement_lines(
    document: dict[str, Any], refs: dict[str, Registration], star: str = "*"
) -> list[str]:
    """One line per statement: effect, principal (resource policies), actions, resources,
    condition. ``star``: how to show ``"Resource": "*"`` (in a key policy: the key itself)."""
    found = []
    for statement in _statements(document):
        actions = ", ".join(_as_list(statement["Action"]))
        resources = ", ".join(
            star if r == "*" else _name(refs, r) for r in _as_list(statement["Resource"])
        )
        condition = statement.get("Condition")
        when = f" when {json.dumps(condition, sort_keys=True)}" if condition else ""
        principal = _principal(statement.get("Principal"))
        who = f" {principal}:" if principal else ""
        found.append(f"{statement['Effect'].lower()}{who} {actions} on {resources}{when}")
    return found


def _principal(principal: object) -> str:
    """A statement's principal as a reader says it ("" for an identity policy: it has none)."""
    if principal is None:
        return ""
    if principal == "*":
        return "anyone"
    if isinstance(principal, dict):
        return ", ".join(str(p) for value in principal.values() for p in _as_list(value))
    return str(principal)


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(document["Statement"])


def _as_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _task_definition(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    (container,) = json.loads(inputs["containerDefinitions"])
    linux = container.get("linuxParameters", {})
    options = container["logConfiguration"]["options"]
    hardening = [
        f"user {container.get('user')}",
        "read-only root" if container.get("readonlyRootFilesystem") else "writable root",
        "init process" if linux.get("initProcessEnabled") else "no init",
        f"capabilities dropped: {', '.join(linux.get('capabilities', {}).get('drop', []))}",
    ]
    lines = [
        f"{inputs['family']}: {inputs['cpu']} CPU units, {inputs['memory']} MiB, "
        f"{inputs['runtimePlatform']['cpuArchitecture']}; stopTimeout {container['stopTimeout']} s",
        f"command: {' '.join(container['command'])}",
        f"{'; '.join(hardening)}; logs to {options['awslogs-group']}",
        "environment: "
        + ", ".join(f"{item['name']}={item['value']}" for item in container["environment"]),
        "secrets: "
        + ", ".join(
            f"{s['name']} from {_name(refs, s['valueFrom'])}" for s in container["secrets"]
        ),
    ]
    check = container.get("healthCheck")
    if check:
        lines.append(
            f"health check: {' '.join(check['command'][1:])} every {check['interval']} s, "
            f"timeout {check['timeout']} s, {check['retries']} retries, start period "
            f"{check['startPeriod']} s"
        )
    return lines


def _service(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    strategy = inputs.get("capacityProviderStrategies")
    capacity = (
        " + ".join(
            f"{item['capacityProvider']} (base {item.get('base', 0):g}, weight {item['weight']:g})"
            for item in strategy
        )
        if strategy
        else f"launch type {inputs['launchType']}"
    )
    network = inputs["networkConfiguration"]
    lines = [
        f"runs {_name(refs, inputs['taskDefinition'])}, desired {inputs['desiredCount']:g}; "
        f"{capacity}, platform {inputs['platformVersion']}",
        f"subnets {', '.join(_name(refs, s) for s in network['subnets'])}; security group "
        f"{', '.join(_name(refs, g) for g in network['securityGroups'])}; public IP "
        f"{'yes' if network.get('assignPublicIp') else 'no'}",
        f"deployments: {inputs['deploymentMinimumHealthyPercent']:g}-"
        f"{inputs['deploymentMaximumPercent']:g} %, circuit breaker "
        f"{'with rollback' if inputs['deploymentCircuitBreaker'].get('rollback') else 'on'}",
    ]
    for balancer in inputs.get("loadBalancers", []):
        lines.append(
            f"behind {_name(refs, balancer['targetGroupArn'])} -> {balancer['containerName']}:"
            f"{balancer['containerPort']:g}, health check grace "
            f"{inputs.get('healthCheckGracePeriodSeconds', 0):g} s"
        )
    return lines


#: The task count a backlog-per-task policy divides by, as a reader says it.
_TASK_COUNTS = {
    "DesiredTaskCount": "desired task",
    "RunningTaskCount": "running task",
    "Workers": "worker (publishing)",
}


def _scaling_policy(resource: Registration, _: dict[str, Registration]) -> list[str]:
    step = resource.inputs.get("stepScalingPolicyConfiguration")
    if step is not None:
        return _step_policy(step)
    tracking = resource.inputs["targetTrackingScalingPolicyConfiguration"]
    predefined = tracking.get("predefinedMetricSpecification", {}).get("predefinedMetricType")
    if predefined == "ECSServiceAverageCPUUtilization":
        metric = "% average CPU"
    elif predefined == "ALBRequestCountPerTarget":
        metric = "requests per task and minute"
    else:
        metrics = [
            query["metricStat"]["metric"]
            for query in tracking.get("customizedMetricSpecification", {}).get("metrics", [])
            if "metricStat" in query
        ]
        queues = sorted(
            dimension["value"]
            for metric_of in metrics
            for dimension in metric_of.get("dimensions", [])
            if dimension["name"] == "Queue"
        )
        counts = [
            _TASK_COUNTS.get(m["metricName"], m["metricName"])
            for m in metrics
            if m["metricName"] in _TASK_COUNTS or m["namespace"].startswith("ECS/")
        ]
        per = counts[0] if counts else "task"
        metric = f"waiting messages per {per} (queues {', '.join(queues)})"
    return [
        f"target tracking: {tracking['targetValue']:g} {metric}; scale out after "
        f"{tracking['scaleOutCooldown']:g} s, in after {tracking['scaleInCooldown']:g} s"
    ]


def _step_policy(step: dict[str, Any]) -> list[str]:
    """The steps above the alarm's threshold, and how the policy adds capacity."""
    unit = {"PercentChangeInCapacity": " %", "ChangeInCapacity": " tasks"}.get(
        step.get("adjustmentType", ""), ""
    )
    steps = ", ".join(
        f"{adjustment['scalingAdjustment']:+g}{unit} from "
        f"{adjustment.get('metricIntervalLowerBound', '-inf')}"
        for adjustment in step.get("stepAdjustments", [])
    )
    least = step.get("minAdjustmentMagnitude")
    return [
        f"step scaling on its alarm ({step.get('adjustmentType')}): above the threshold by {steps}",
        f"{step.get('metricAggregationType', 'Average')} of the readings; cooldown "
        f"{step.get('cooldown', 300):g} s"
        + (f"; at least {least:g} task a step" if least is not None else ""),
    ]


_COMPARISONS = {
    "GreaterThanOrEqualToThreshold": ">=",
    "GreaterThanThreshold": ">",
    "LessThanOrEqualToThreshold": "<=",
    "LessThanThreshold": "<",
}


def _alarm(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    """What it watches against what, over which periods, what it reads, whom it tells."""
    inputs = resource.inputs
    queries = inputs.get("metricQueries", [])
    returned = [q for q in queries if q.get("returnData")]
    watched = (
        returned[0].get("label") or returned[0].get("expression")
        if returned
        else inputs.get("metricName")
    )
    metrics = [q["metric"] for q in queries if "metric" in q]
    # Metric math: each metric has its period; a single-metric alarm has its own.
    periods = sorted({m.get("period", 60) for m in metrics} or {inputs.get("period", 60)})
    read = "; ".join(
        f"{m['namespace']} {m['metricName']} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(m.get('dimensions', {}).items()))}) "
        f"{m.get('stat')}"
        for m in metrics
    )
    expression = returned[0].get("expression") if returned and len(metrics) > 1 else None
    operator = _COMPARISONS.get(inputs["comparisonOperator"], inputs["comparisonOperator"])
    evaluated = inputs["evaluationPeriods"]
    breaching = inputs.get("datapointsToAlarm", evaluated)
    actions = [_name(refs, a) for a in inputs.get("alarmActions", [])]
    ok = [_name(refs, a) for a in inputs.get("okActions", [])]
    told = f"on ALARM {', '.join(actions)}" if actions else "notifies nobody"
    if ok:
        told += f", on OK {', '.join(ok)}"
    return [
        f"{inputs.get('name', resource.physical_name)}: {watched} {operator} "
        f"{inputs['threshold']:g} in {breaching:g} of {evaluated:g} periods of "
        f"{'/'.join(f'{p:g}' for p in periods)} s; missing data "
        f"{inputs.get('treatMissingData', 'missing')}",
        f"reads {read}" + (f"; {expression}" if expression else ""),
        told,
    ]


def _key(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    lines = [
        f"{inputs.get('description', '(no description)')}; rotation "
        f"{_on(inputs.get('enableKeyRotation'))}; deleted "
        f"{_days(inputs.get('deletionWindowInDays', 30))} after destroy"
    ]
    if "policy" in inputs:
        lines += _statement_lines(json.loads(inputs["policy"]), refs, star="the key")
    return lines


def _dashboard(resource: Registration, _: dict[str, Registration]) -> list[str]:
    widgets = json.loads(resource.inputs["dashboardBody"]).get("widgets", [])
    kinds = [widget.get("type") for widget in widgets]
    return [
        f"{resource.inputs['dashboardName']}: {len(widgets)} widgets ({kinds.count('alarm')} "
        f"of alarm states, {kinds.count('metric')} graphs)"
    ]


def _listener(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    tls = (
        f" ({inputs['sslPolicy']}, certificate {inputs['certificateArn']})"
        if "sslPolicy" in inputs
        else ""
    )
    actions = []
    for action in inputs["defaultActions"]:
        if action["type"] == "redirect":
            redirect = action["redirect"]
            actions.append(
                f"redirect to {redirect['protocol']}:{redirect['port']} ({redirect['statusCode']})"
            )
        else:
            actions.append(f"{action['type']} to {_name(refs, action.get('targetGroupArn'))}")
    return [f"{inputs['protocol']} {inputs['port']:g}{tls} -> {', '.join(actions)}"]


def _load_balancer(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    logs = inputs.get("accessLogs")
    return [
        f"{'internal' if inputs.get('internal') else 'internet-facing PUBLIC'} "
        f"{inputs['loadBalancerType']} load balancer in "
        f"{', '.join(_name(refs, s) for s in inputs['subnets'])}",
        f"idle timeout {inputs['idleTimeout']:g} s; invalid header fields dropped "
        f"{_on(inputs.get('dropInvalidHeaderFields'))}; desync mitigation "
        f"{inputs.get('desyncMitigationMode')}; deletion protection "
        f"{_on(inputs.get('enableDeletionProtection'))}; access logs "
        f"{logs['bucket'] if logs else 'off'}",
    ]


def _target_group(resource: Registration, _: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    check = inputs["healthCheck"]
    return [
        f"{inputs['protocol']} {inputs['port']:g}, targets by {inputs['targetType']}; health "
        f"check {check['path']} expects {check['matcher']} every {check['interval']:g} s "
        f"(timeout {check['timeout']:g} s, {check['healthyThreshold']:g} healthy / "
        f"{check['unhealthyThreshold']:g} unhealthy); deregistration delay "
        f"{inputs['deregistrationDelay']:g} s"
    ]


def _replication_group(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    failover = inputs.get("automaticFailoverEnabled")
    return [
        f"{inputs['engine']} {inputs['engineVersion']}, {inputs['numCacheClusters']:g} x "
        f"{inputs['nodeType']}, cluster mode {inputs['clusterMode']}, port {inputs['port']:g}",
        f"TLS {inputs.get('transitEncryptionMode')}, encrypted at rest "
        f"{_on(inputs.get('atRestEncryptionEnabled'))}, AUTH token (secret); automatic "
        f"failover {_on(failover)}, Multi-AZ {_on(inputs.get('multiAzEnabled'))}; snapshots "
        f"kept {_days(inputs.get('snapshotRetentionLimit', 0))}; parameter group "
        f"{_name(refs, inputs['parameterGroupName'])}",
        f"deleted with a final snapshot {inputs.get('finalSnapshotIdentifier', '(none)')}",
    ]


def _enqueue_target(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    ecs = inputs["ecsTarget"]
    template = json.loads(inputs["inputTransformer"]["inputTemplate"])
    commands = [" ".join(o["command"]) for o in template.get("containerOverrides", [])]
    return [
        f"on {_name(refs, inputs['rule'])}: RunTask {_name(refs, ecs['taskDefinitionArn'])} "
        f"x{ecs['taskCount']:g}, {ecs['launchType']}, public IP "
        f"{'yes' if ecs['networkConfiguration'].get('assignPublicIp') else 'no'}",
        f"command: {'; '.join(commands)} (<time> = the event's time)",
    ]


def _lifecycle_policy(resource: Registration, _: dict[str, Registration]) -> list[str]:
    found = []
    for rule in json.loads(resource.inputs["policy"])["rules"]:
        selection = rule["selection"]
        found.append(
            f"rule {rule['rulePriority']}: {rule['action']['type']} {selection['tagStatus']} "
            f"images beyond {selection['countType']} {selection['countNumber']}"
        )
    return found


def _image(resource: Registration, _: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    return [
        f"built from {inputs['dockerfile']['location']} for {', '.join(inputs['platforms'])}, "
        "pushed and run by digest (no tag)"
    ]


SUMMARIES: dict[str, Summary] = {
    "aws:ec2/vpc:Vpc": lambda r, _: [
        f"{r.inputs['cidrBlock']}; DNS support {_on(r.inputs.get('enableDnsSupport'))}, "
        f"DNS hostnames {_on(r.inputs.get('enableDnsHostnames'))}"
    ],
    "aws:ec2/subnet:Subnet": lambda r, _: [
        f"{r.inputs['cidrBlock']} in {r.inputs['availabilityZone']}; public IPs on launch "
        f"{_on(r.inputs.get('mapPublicIpOnLaunch'))}"
    ],
    "aws:ec2/internetGateway:InternetGateway": lambda r, refs: [
        f"attached to {_name(refs, r.inputs['vpcId'])}"
    ],
    "aws:ec2/routeTable:RouteTable": lambda r, refs: [f"in {_name(refs, r.inputs['vpcId'])}"],
    "aws:ec2/route:Route": lambda r, refs: [
        f"{r.inputs['destinationCidrBlock']} -> "
        f"{_name(refs, r.inputs.get('gatewayId') or r.inputs.get('natGatewayId'))} "
        f"in {_name(refs, r.inputs['routeTableId'])}"
    ],
    "aws:ec2/routeTableAssociation:RouteTableAssociation": lambda r, refs: [
        f"{_name(refs, r.inputs['subnetId'])} uses {_name(refs, r.inputs['routeTableId'])}"
    ],
    "aws:ec2/eip:Eip": lambda r, _: ["a public IPv4 address"],
    "aws:ec2/natGateway:NatGateway": lambda r, refs: [
        f"in {_name(refs, r.inputs['subnetId'])}, address {_name(refs, r.inputs['allocationId'])}"
    ],
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": lambda r, refs: [
        f"the default group of {_name(refs, r.inputs['vpcId'])}, every rule removed"
    ],
    "aws:ec2/securityGroup:SecurityGroup": lambda r, _: [r.inputs["description"]],
    _INGRESS: lambda r, refs: _rule(r, refs, "in"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": lambda r, refs: _rule(
        r, refs, "out"
    ),
    "aws:ec2/flowLog:FlowLog": lambda r, refs: [
        f"{r.inputs['trafficType']} traffic of {_name(refs, r.inputs['vpcId'])} -> "
        f"{r.inputs['logDestinationType']} {_name(refs, r.inputs['logDestination'])}"
    ],
    "aws:cloudwatch/logGroup:LogGroup": lambda r, _: [
        f"{r.physical_name}, kept {_days(r.inputs['retentionInDays'])}"
    ],
    "aws:iam/role:Role": _role,
    "aws:iam/rolePolicy:RolePolicy": _policy,
    "aws:ecs/cluster:Cluster": lambda r, _: [
        ", ".join(f"{s['name']} {s['value']}" for s in r.inputs.get("settings", []))
    ],
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": lambda r, _: [
        f"capacity providers {', '.join(r.inputs['capacityProviders'])}"
    ],
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    _SERVICE: _service,
    "aws:appautoscaling/target:Target": lambda r, refs: [
        f"{r.inputs['minCapacity']:g}-{r.inputs['maxCapacity']:g} tasks of "
        f"{_name(refs, r.inputs['resourceId'].rsplit('/', 1)[1])}"
    ],
    "aws:appautoscaling/policy:Policy": _scaling_policy,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    _LISTENER: _listener,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    _REPLICATION_GROUP: _replication_group,
    "aws:elasticache/parameterGroup:ParameterGroup": lambda r, _: [
        f"family {r.inputs['family']}: "
        + ", ".join(f"{p['name']}={p['value']}" for p in r.inputs.get("parameters", []))
    ],
    "aws:elasticache/subnetGroup:SubnetGroup": lambda r, refs: [
        f"subnets {', '.join(_name(refs, s) for s in r.inputs['subnetIds'])}"
    ],
    "aws:secretsmanager/secret:Secret": lambda r, _: [
        f"name {r.inputs.get('namePrefix', r.physical_name)}..., recovery window "
        f"{_days(r.inputs.get('recoveryWindowInDays', 30))}"
        + (" (deleted at once)" if r.inputs.get("recoveryWindowInDays") == 0 else "")
    ],
    "aws:secretsmanager/secretVersion:SecretVersion": lambda r, refs: [
        f"the value of {_name(refs, r.inputs['secretId'])} (secret: not shown)"
    ],
    "random:index/randomId:RandomId": lambda r, _: [
        f"{2 * r.inputs['byteLength']:g} hex characters, new when "
        f"{', '.join(sorted(r.inputs.get('keepers', {})))} change"
    ],
    "random:index/randomPassword:RandomPassword": lambda r, _: [
        f"{r.inputs['length']:g} characters, "
        + (
            "letters and digits"
            if r.inputs.get("special") is False
            else f"specials {r.inputs.get('overrideSpecial')}"
        )
        + " (secret: not shown)"
    ],
    "aws:ecr/repository:Repository": lambda r, _: [
        f"tags {r.inputs['imageTagMutability']}, scan on push "
        f"{_on(r.inputs['imageScanningConfiguration'].get('scanOnPush'))}, deleted with its "
        f"images {'yes' if r.inputs.get('forceDelete') else 'no'}"
    ],
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": _lifecycle_policy,
    "docker-build:index:Image": _image,
    _RULE: lambda r, _: [
        f"{r.inputs['scheduleExpression']} {r.inputs['state']}: {r.inputs['description']}"
    ],
    "aws:cloudwatch/eventTarget:EventTarget": _enqueue_target,
    "aws:sqs/queuePolicy:QueuePolicy": _policy,
    _ALARM: _alarm,
    "aws:cloudwatch/dashboard:Dashboard": _dashboard,
    "aws:kms/key:Key": _key,
    "aws:sns/topic:Topic": lambda r, refs: [
        f"encrypted with {_name(refs, r.inputs['kmsMasterKeyId'])}"
        if "kmsMasterKeyId" in r.inputs
        else "not encrypted"
    ],
    "aws:sns/topicPolicy:TopicPolicy": _policy,
    "aws:sns/topicSubscription:TopicSubscription": lambda r, refs: [
        f"{r.inputs['protocol']} to {r.inputs['endpoint']} from "
        f"{_name(refs, r.inputs['topic'])}"
        + ("; pending until the address confirms" if r.inputs["protocol"] == "email" else "")
    ],
}


# --- the command ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.plan", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--stack", default="dev",
        help="the stack: reads Pulumi.<stack>.yaml, or examples/<stack>/Pulumi.<stack>.yaml",
    )  # fmt: skip
    source.add_argument("--file", type=Path, help="a stack file anywhere (Pulumi.<stack>.yaml)")
    parser.add_argument(
        "--diagram", type=Path, help="where to write the diagram (default .plan/<stack>.png)"
    )
    parser.add_argument("--no-diagram", action="store_true", help="skip the diagram")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the docs' diagram and cost table (for Pulumi.dev.yaml)",
    )
    args = parser.parse_args(argv)
    try:
        stack_file = read_stack_path(args.file) if args.file else read_stack_file(args.stack)
    except FileNotFoundError as error:
        stacks = ", ".join(stack_names())
        missing = _relative(Path(str(error.filename)))
        print(f"no stack file {missing}; stacks here: {stacks}", file=sys.stderr)
        return 2
    stack = stack_file.stack
    region = stack_file.region or DEFAULT_REGION
    try:
        plan = make_plan(stack, stack_file.config, region)
    except ConfigError as error:
        # The program's own message: "invalid stack config: <key>: <problem>; allowed: ...".
        print(error, file=sys.stderr)
        return 1
    diagram_path = None
    if not args.no_diagram:
        diagram_path = args.diagram or DIAGRAM_DIRECTORY / f"{stack}.png"
        diagram.write_png(plan.run, plan.config, _title(plan), diagram_path)
    if args.write_docs:
        write_docs(plan)
    sys.stdout.write(render(plan, diagram_path))
    return 0 if plan.report.ok else 1


def _title(plan: Plan) -> str:
    return f"celery-ecs: stack {plan.stack} ({plan.region})"


def write_docs(plan: Plan) -> None:
    """The docs' diagram (docs/plan-dev.png) and cost table, from this plan."""
    diagram.write_png(plan.run, plan.config, _title(plan), DOCS_DIAGRAM)
    COST_BLOCK.write(cost.markdown(plan.estimate))


if __name__ == "__main__":
    raise SystemExit(main())
