"""What the offline plan says under each resource: a line or a few per resource type.

``SUMMARIES`` is the table: a Pulumi type -> the function that summarizes a resource of that
type for a reviewer (its CIDR, its ports, its task counts, its alarm's threshold...), given the
resources by reference so it can name what it points at. A type not in the table gets
``default_summary``. ``devtools.plan.report`` lays the summaries out under their components.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from devtools.render import Registration
from policy.invariants import aws_types

Summary = Callable[[Registration, dict[str, Registration]], list[str]]


def name_of(references: dict[str, Registration], value: object) -> str:
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


def ports_text(inputs: dict[str, Any]) -> str:
    low, high = inputs.get("fromPort"), inputs.get("toPort")
    ports = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    return f"{inputs.get('ipProtocol')} {ports}"


def default_summary(resource: Registration, _: dict[str, Registration]) -> list[str]:
    """Any other type: its scalar inputs (never the secret ones)."""
    shown = [
        f"{key}={json.dumps(value, sort_keys=True)}"
        for key, value in sorted(resource.inputs.items())
        if key not in resource.secret_inputs
    ]
    return ["; ".join(shown)] if shown else []


def _rule(resource: Registration, refs: dict[str, Registration], direction: str) -> list[str]:
    inputs = resource.inputs
    peer = inputs.get("cidrIpv4") or name_of(refs, inputs.get("referencedSecurityGroupId"))
    arrow, word = ("<-", "from") if direction == "in" else ("->", "to")
    public = " PUBLIC" if direction == "in" and peer == "0.0.0.0/0" else ""
    return [
        f"{name_of(refs, inputs['securityGroupId'])} {arrow} {ports_text(inputs)} {word} "
        f"{peer}{public}"
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
            star if r == "*" else name_of(refs, r) for r in _as_list(statement["Resource"])
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
            f"{s['name']} from {name_of(refs, s['valueFrom'])}" for s in container["secrets"]
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
        f"runs {name_of(refs, inputs['taskDefinition'])}, desired {inputs['desiredCount']:g}; "
        f"{capacity}, platform {inputs['platformVersion']}",
        f"subnets {', '.join(name_of(refs, s) for s in network['subnets'])}; security group "
        f"{', '.join(name_of(refs, g) for g in network['securityGroups'])}; public IP "
        f"{'yes' if network.get('assignPublicIp') else 'no'}",
        f"deployments: {inputs['deploymentMinimumHealthyPercent']:g}-"
        f"{inputs['deploymentMaximumPercent']:g} %, circuit breaker "
        f"{'with rollback' if inputs['deploymentCircuitBreaker'].get('rollback') else 'on'}",
    ]
    for balancer in inputs.get("loadBalancers", []):
        lines.append(
            f"behind {name_of(refs, balancer['targetGroupArn'])} -> {balancer['containerName']}:"
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
    actions = [name_of(refs, a) for a in inputs.get("alarmActions", [])]
    ok = [name_of(refs, a) for a in inputs.get("okActions", [])]
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
            actions.append(f"{action['type']} to {name_of(refs, action.get('targetGroupArn'))}")
    return [f"{inputs['protocol']} {inputs['port']:g}{tls} -> {', '.join(actions)}"]


def _load_balancer(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    logs = inputs.get("accessLogs")
    return [
        f"{'internal' if inputs.get('internal') else 'internet-facing PUBLIC'} "
        f"{inputs['loadBalancerType']} load balancer in "
        f"{', '.join(name_of(refs, s) for s in inputs['subnets'])}",
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
        f"{name_of(refs, inputs['parameterGroupName'])}",
        f"deleted with a final snapshot {inputs.get('finalSnapshotIdentifier', '(none)')}",
    ]


def _enqueue_target(resource: Registration, refs: dict[str, Registration]) -> list[str]:
    inputs = resource.inputs
    ecs = inputs["ecsTarget"]
    template = json.loads(inputs["inputTransformer"]["inputTemplate"])
    commands = [" ".join(o["command"]) for o in template.get("containerOverrides", [])]
    return [
        f"on {name_of(refs, inputs['rule'])}: RunTask {name_of(refs, ecs['taskDefinitionArn'])} "
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
    aws_types.EC2_VPC: lambda r, _: [
        f"{r.inputs['cidrBlock']}; DNS support {_on(r.inputs.get('enableDnsSupport'))}, "
        f"DNS hostnames {_on(r.inputs.get('enableDnsHostnames'))}"
    ],
    aws_types.EC2_SUBNET: lambda r, _: [
        f"{r.inputs['cidrBlock']} in {r.inputs['availabilityZone']}; public IPs on launch "
        f"{_on(r.inputs.get('mapPublicIpOnLaunch'))}"
    ],
    aws_types.EC2_INTERNET_GATEWAY: lambda r, refs: [
        f"attached to {name_of(refs, r.inputs['vpcId'])}"
    ],
    aws_types.EC2_ROUTE_TABLE: lambda r, refs: [f"in {name_of(refs, r.inputs['vpcId'])}"],
    aws_types.EC2_ROUTE: lambda r, refs: [
        f"{r.inputs['destinationCidrBlock']} -> "
        f"{name_of(refs, r.inputs.get('gatewayId') or r.inputs.get('natGatewayId'))} "
        f"in {name_of(refs, r.inputs['routeTableId'])}"
    ],
    aws_types.EC2_ROUTE_TABLE_ASSOCIATION: lambda r, refs: [
        f"{name_of(refs, r.inputs['subnetId'])} uses {name_of(refs, r.inputs['routeTableId'])}"
    ],
    aws_types.EC2_EIP: lambda r, _: ["a public IPv4 address"],
    aws_types.EC2_NAT_GATEWAY: lambda r, refs: [
        f"in {name_of(refs, r.inputs['subnetId'])}, "
        f"address {name_of(refs, r.inputs['allocationId'])}"
    ],
    aws_types.EC2_DEFAULT_SECURITY_GROUP: lambda r, refs: [
        f"the default group of {name_of(refs, r.inputs['vpcId'])}, every rule removed"
    ],
    aws_types.EC2_SECURITY_GROUP: lambda r, _: [r.inputs["description"]],
    aws_types.VPC_SECURITY_GROUP_INGRESS_RULE: lambda r, refs: _rule(r, refs, "in"),
    aws_types.VPC_SECURITY_GROUP_EGRESS_RULE: lambda r, refs: _rule(
        r, refs, "out"
    ),
    aws_types.EC2_FLOW_LOG: lambda r, refs: [
        f"{r.inputs['trafficType']} traffic of {name_of(refs, r.inputs['vpcId'])} -> "
        f"{r.inputs['logDestinationType']} {name_of(refs, r.inputs['logDestination'])}"
    ],
    aws_types.CLOUDWATCH_LOG_GROUP: lambda r, _: [
        f"{r.physical_name}, kept {_days(r.inputs['retentionInDays'])}"
    ],
    aws_types.IAM_ROLE: _role,
    aws_types.IAM_ROLE_POLICY: _policy,
    aws_types.ECS_CLUSTER: lambda r, _: [
        ", ".join(f"{s['name']} {s['value']}" for s in r.inputs.get("settings", []))
    ],
    aws_types.ECS_CLUSTER_CAPACITY_PROVIDERS: lambda r, _: [
        f"capacity providers {', '.join(r.inputs['capacityProviders'])}"
    ],
    aws_types.ECS_TASK_DEFINITION: _task_definition,
    aws_types.ECS_SERVICE: _service,
    aws_types.APPAUTOSCALING_TARGET: lambda r, refs: [
        f"{r.inputs['minCapacity']:g}-{r.inputs['maxCapacity']:g} tasks of "
        f"{name_of(refs, r.inputs['resourceId'].rsplit('/', 1)[1])}"
    ],
    aws_types.APPAUTOSCALING_POLICY: _scaling_policy,
    aws_types.LB_LOAD_BALANCER: _load_balancer,
    aws_types.LB_LISTENER: _listener,
    aws_types.LB_TARGET_GROUP: _target_group,
    aws_types.ELASTICACHE_REPLICATION_GROUP: _replication_group,
    aws_types.ELASTICACHE_PARAMETER_GROUP: lambda r, _: [
        f"family {r.inputs['family']}: "
        + ", ".join(f"{p['name']}={p['value']}" for p in r.inputs.get("parameters", []))
    ],
    aws_types.ELASTICACHE_SUBNET_GROUP: lambda r, refs: [
        f"subnets {', '.join(name_of(refs, s) for s in r.inputs['subnetIds'])}"
    ],
    aws_types.SECRETSMANAGER_SECRET: lambda r, _: [
        f"name {r.inputs.get('namePrefix', r.physical_name)}..., recovery window "
        f"{_days(r.inputs.get('recoveryWindowInDays', 30))}"
        + (" (deleted at once)" if r.inputs.get("recoveryWindowInDays") == 0 else "")
    ],
    aws_types.SECRETSMANAGER_SECRET_VERSION: lambda r, refs: [
        f"the value of {name_of(refs, r.inputs['secretId'])} (secret: not shown)"
    ],
    aws_types.RANDOM_ID: lambda r, _: [
        f"{2 * r.inputs['byteLength']:g} hex characters, new when "
        f"{', '.join(sorted(r.inputs.get('keepers', {})))} change"
    ],
    aws_types.RANDOM_PASSWORD: lambda r, _: [
        f"{r.inputs['length']:g} characters, "
        + (
            "letters and digits"
            if r.inputs.get("special") is False
            else f"specials {r.inputs.get('overrideSpecial')}"
        )
        + " (secret: not shown)"
    ],
    aws_types.ECR_REPOSITORY: lambda r, _: [
        f"tags {r.inputs['imageTagMutability']}, scan on push "
        f"{_on(r.inputs['imageScanningConfiguration'].get('scanOnPush'))}, deleted with its "
        f"images {'yes' if r.inputs.get('forceDelete') else 'no'}"
    ],
    aws_types.ECR_LIFECYCLE_POLICY: _lifecycle_policy,
    aws_types.DOCKER_BUILD_IMAGE: _image,
    aws_types.CLOUDWATCH_EVENT_RULE: lambda r, _: [
        f"{r.inputs['scheduleExpression']} {r.inputs['state']}: {r.inputs['description']}"
    ],
    aws_types.CLOUDWATCH_EVENT_TARGET: _enqueue_target,
    aws_types.SQS_QUEUE_POLICY: _policy,
    aws_types.CLOUDWATCH_METRIC_ALARM: _alarm,
    aws_types.CLOUDWATCH_DASHBOARD: _dashboard,
    aws_types.KMS_KEY: _key,
    aws_types.SNS_TOPIC: lambda r, refs: [
        f"encrypted with {name_of(refs, r.inputs['kmsMasterKeyId'])}"
        if "kmsMasterKeyId" in r.inputs
        else "not encrypted"
    ],
    aws_types.SNS_TOPIC_POLICY: _policy,
    aws_types.SNS_TOPIC_SUBSCRIPTION: lambda r, refs: [
        f"{r.inputs['protocol']} to {r.inputs['endpoint']} from "
        f"{name_of(refs, r.inputs['topic'])}"
        + ("; pending until the address confirms" if r.inputs["protocol"] == "email" else "")
    ],
}
