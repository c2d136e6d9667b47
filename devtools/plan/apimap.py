"""How each Pulumi resource type reaches AWS: the API calls its provider makes, and where each
request member comes from.

``MAPPINGS`` is the table: a Pulumi type -> its ``Api``, a list of ``Call``s. A call names the
service and operation of botocore's models and its members; a member's value is a Pulumi input
(a dotted path into the inputs as the mocks receive them, camelCase) or a ``Source``: the
resource's physical name, its id or ARN, a structure or list built from inputs, load-balancer
style Key/Value attributes. A converter turns Pulumi's form of a value into the API's (a tag map
into a tag list, ``assignPublicIp: true`` into ``ENABLED``). ``NOT_AWS`` lists the types that
make no AWS call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema
from botocore.model import ServiceModel, StringShape

from devtools.plan import awsmodel
from devtools.render import Registration


class _Missing:
    """An input that is not set: the member is left out of the request."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Inputs:
    """A resource's inputs, read by dotted path; remembers what was read."""

    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        self.read: set[str] = set()

    def get(self, path: str) -> Any:
        self.read.add(path)
        value: Any = self.registration.inputs
        for part in path.split("."):
            if not isinstance(value, Mapping) or value.get(part) is None:
                return MISSING
            value = value[part]
        return value

    def unread(self) -> list[str]:
        """Input paths no call consumed (a path covers everything below it)."""
        return [
            leaf
            for leaf in _leaves(self.registration.inputs)
            if not any(leaf == path or leaf.startswith(f"{path}.") for path in self.read)
        ]


def _leaves(value: Mapping[str, Any], prefix: str = "") -> list[str]:
    leaves = []
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            leaves += _leaves(item, f"{path}.")
        else:
            leaves.append(path)
    return leaves


# --- sources: where a request member's value comes from -------------------------------------


@dataclass(frozen=True)
class In:
    """The Pulumi input at ``path``, optionally converted to the API's form (a converter may
    return MISSING to leave the member out); ``default`` is what the provider sends when the
    input is not set."""

    path: str
    convert: Callable[[Any], Any] | None = None
    default: Any = MISSING

    @property
    def origin(self) -> str:
        return self.path

    def value(self, inputs: Inputs) -> Any:
        value = inputs.get(self.path)
        if value is MISSING:
            return self.default
        return value if self.convert is None else self.convert(value)


@dataclass(frozen=True)
class Known:
    """What the provider knows without an input: the physical name it gives the resource, its
    id or ARN once it exists, or a fixed value."""

    origin: str
    resolve: Callable[[Registration], Any]
    #: Inputs this value is made from (marked as consumed).
    reads: tuple[str, ...] = ()

    def value(self, inputs: Inputs) -> Any:
        for path in self.reads:
            inputs.get(path)
        return self.resolve(inputs.registration)


NAME = Known(
    "the name (auto-named unless given)",
    lambda r: r.inputs.get("name") or r.physical_name,
    ("name", "namePrefix"),
)
ARN = Known("the resource's ARN", lambda r: r.state["arn"])
ID = Known("the resource's id", lambda r: r.id)


def const(value: Any) -> Known:
    return Known(f"always {value!r}", lambda _: value)


@dataclass(frozen=True)
class Struct:
    """A structure of several members; left out when none of them is set."""

    members: Mapping[str, Source]

    @property
    def origin(self) -> str:
        return ", ".join(sorted({source.origin for source in self.members.values()}))

    def value(self, inputs: Inputs) -> Any:
        resolved = {name: source.value(inputs) for name, source in self.members.items()}
        return {name: value for name, value in resolved.items() if value is not MISSING} or MISSING


def struct(**members: Source | str) -> Struct:
    return Struct({name: _source(member) for name, member in members.items()})


@dataclass(frozen=True)
class ListOf:
    """A one-element list: a Pulumi resource that is one item of an API list."""

    item: Source

    @property
    def origin(self) -> str:
        return self.item.origin

    def value(self, inputs: Inputs) -> Any:
        item = self.item.value(inputs)
        return MISSING if item is MISSING else [item]


@dataclass(frozen=True)
class Attributes:
    """Attributes whose values the API takes as text: a list of Key/Value structures (load
    balancers, target groups), or a map (``as_map``: SQS queues)."""

    keys: Mapping[str, Source]
    as_map: bool = False

    @property
    def origin(self) -> str:
        return ", ".join(sorted(source.origin for source in self.keys.values()))

    def origin_of(self, key: str) -> str:
        return self.keys[key].origin if key in self.keys else self.origin

    def value(self, inputs: Inputs) -> Any:
        values = {
            key: awsmodel.text(value)
            for key, source in self.keys.items()
            if (value := source.value(inputs)) is not MISSING
        }
        if self.as_map:
            return values or MISSING
        return [{"Key": key, "Value": value} for key, value in values.items()] or MISSING


Source = In | Known | Struct | ListOf | Attributes


def _source(member: Source | str) -> Source:
    return In(member) if isinstance(member, str) else member


# --- converters: Pulumi's form of a value -> the API's --------------------------------------


def pascal(**renames: str) -> Callable[[Any], Any]:
    """camelCase keys -> PascalCase at every depth (``renames`` where the API differs)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                renames.get(key, key[:1].upper() + key[1:]): convert(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return convert


def tag_list(key: str = "Key", value: str = "Value") -> Callable[[Any], Any]:
    """Pulumi's tag map -> the API's list of key/value structures."""
    return lambda tags: [{key: name, value: text} for name, text in sorted(tags.items())]


def enabled(value: Any) -> str:
    return "ENABLED" if value else "DISABLED"


def awsvpc(subnets: str, security_groups: str, public_ip: str) -> Callable[[Any], Any]:
    """Pulumi's network configuration -> ``awsvpcConfiguration`` with the API's member names."""

    def convert(network: Mapping[str, Any]) -> dict[str, Any]:
        names = {"subnets": subnets, "securityGroups": security_groups}
        configuration = {names[key]: value for key, value in network.items() if key in names}
        if "assignPublicIp" in network:
            configuration[public_ip] = enabled(network["assignPublicIp"])
        return {"awsvpcConfiguration": configuration}

    return convert


def ecs_parameters(target: Mapping[str, Any]) -> dict[str, Any]:
    """An EventTarget's ``ecsTarget`` -> PutTargets' ``EcsParameters`` (whose capacity provider
    strategy items keep ECS's camelCase)."""
    converted: dict[str, Any] = pascal()(
        {key: value for key, value in target.items() if key not in _ECS_OWN}
    )
    if "networkConfiguration" in target:
        converted["NetworkConfiguration"] = awsvpc("Subnets", "SecurityGroups", "AssignPublicIp")(
            target["networkConfiguration"]
        )
    if "capacityProviderStrategies" in target:
        converted["CapacityProviderStrategy"] = target["capacityProviderStrategies"]
    return converted


_ECS_OWN = ("networkConfiguration", "capacityProviderStrategies")


def json_text(text: str) -> Any:
    return json.loads(text)


def cloudwatch_dimensions(dimensions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pulumi's dimension map -> CloudWatch's list of Name/Value structures (sorted: the
    provider reads a map, whose order carries no meaning)."""
    return [{"Name": name, "Value": value} for name, value in sorted(dimensions.items())]


def metric_queries(queries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A MetricAlarm's ``metricQueries`` -> PutMetricAlarm's ``Metrics``. A query's ``metric``
    becomes ``MetricStat``: its period, stat and unit beside ``Metric`` (namespace, name,
    dimensions), as the API nests them. Any other key is passed on, so the model names it."""

    def convert(query: Mapping[str, Any]) -> dict[str, Any]:
        converted: dict[str, Any] = pascal()({k: v for k, v in query.items() if k != "metric"})
        if "metric" in query:
            metric = dict(query["metric"])
            stat = {key: metric.pop(key) for key in ("period", "stat", "unit") if key in metric}
            if "dimensions" in metric:
                metric["dimensions"] = cloudwatch_dimensions(metric["dimensions"])
            converted["MetricStat"] = {**pascal()(stat), "Metric": pascal()(metric)}
        return converted

    return [convert(query) for query in queries]


_STEP_BOUNDS = ("MetricIntervalLowerBound", "MetricIntervalUpperBound")


def step_scaling(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """``stepScalingPolicyConfiguration`` -> the API's structure. Pulumi takes the step bounds
    as text, so that a bound of 0 differs from none; the provider parses them as numbers
    (terraform-provider-aws ``expandStepAdjustments``) and leaves an empty one out. Text that
    is no number stays text: the model check reports it, as the provider refuses it."""
    converted: dict[str, Any] = pascal()(configuration)

    def bound(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return float(value)
        except ValueError:
            return value

    converted["StepAdjustments"] = [
        {
            key: bound(value) if key in _STEP_BOUNDS else value
            for key, value in step.items()
            if not (key in _STEP_BOUNDS and value == "")
        }
        for step in converted.get("StepAdjustments", [])
    ]
    if not converted["StepAdjustments"]:
        del converted["StepAdjustments"]
    return converted


# --- documents the API takes as text ---------------------------------------------------------


def json_only(_: Any) -> list[str]:
    """A document whose only known rule is that it is JSON (which the validator checks before
    any document rule): the CloudWatch dashboard body, whose structure botocore's models and
    their documentation do not describe (they point to the CloudWatch user guide)."""
    return []


def lifecycle_policy_problems(document: Any) -> list[str]:
    """An ECR lifecycle policy against ECR's rules (User Guide, "Lifecycle policy
    properties"); the enums come from the ECR model (``TagStatus``, ``ImageActionType``)."""
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or 'policy'}: {error.message}"
        for error in _lifecycle_validator().iter_errors(document)
    ]
    if problems:
        return problems
    priorities = [rule["rulePriority"] for rule in document["rules"]]
    if len(set(priorities)) != len(priorities):
        problems.append("rules: rulePriority values must be unique")
    for rule in document["rules"]:
        if rule["selection"]["tagStatus"] == "any" and rule["rulePriority"] != max(priorities):
            problems.append("rules: a rule with tagStatus any must have the highest rulePriority")
    return problems


def _enum(model: ServiceModel, shape_name: str) -> list[str]:
    """The values of a string enumeration of ``model``."""
    shape = model.shape_for(shape_name)
    assert isinstance(shape, StringShape), f"{shape_name} is not a string shape"
    return shape.enum


@cache
def _lifecycle_validator() -> jsonschema.Draft202012Validator:
    ecr = awsmodel.service_model("ecr")
    strings = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    selection = {
        "type": "object",
        "required": ["tagStatus", "countType", "countNumber"],
        "additionalProperties": False,
        "properties": {
            "tagStatus": {"enum": [s.lower() for s in _enum(ecr, "TagStatus")]},
            "tagPatternList": strings,
            "tagPrefixList": strings,
            "storageClass": {"type": "string"},
            "countType": {
                "enum": [
                    "imageCountMoreThan",
                    "sinceImagePushed",
                    "sinceImagePulled",
                    "sinceImageTransitioned",
                ]
            },
            "countUnit": {"enum": ["days"]},
            "countNumber": {"type": "integer", "minimum": 1},
        },
        "allOf": [
            {
                "if": {"properties": {"tagStatus": {"const": "tagged"}}},
                "then": {
                    "anyOf": [{"required": ["tagPatternList"]}, {"required": ["tagPrefixList"]}]
                },
            },
            {
                # A count of images takes no unit; an age takes days.
                "if": {"properties": {"countType": {"const": "imageCountMoreThan"}}},
                "then": {"not": {"required": ["countUnit"]}},
                "else": {"required": ["countUnit"]},
            },
        ],
    }
    action = {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {"enum": [a.lower() for a in _enum(ecr, "ImageActionType")]},
            "targetStorageClass": {"type": "string"},
        },
    }
    rule = {
        "type": "object",
        "required": ["rulePriority", "selection", "action"],
        "additionalProperties": False,
        "properties": {
            "rulePriority": {"type": "integer", "minimum": 1},
            "description": {"type": "string"},
            "selection": selection,
            "action": action,
        },
    }
    return jsonschema.Draft202012Validator(
        {
            "type": "object",
            "required": ["rules"],
            "additionalProperties": False,
            "properties": {"rules": {"type": "array", "minItems": 1, "items": rule}},
        }
    )


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One API call the provider makes: service and operation as botocore names them, and each
    request member's source (a string is the path of a Pulumi input)."""

    service: str
    operation: str
    members: Mapping[str, Source]
    #: The member without which the provider makes no such call (an attribute call for an
    #: input that is not set); None: always made.
    when: str | None = None


def call(service: str, operation: str, when: str | None = None, **members: Source | str) -> Call:
    return Call(service, operation, {name: _source(m) for name, m in members.items()}, when)


@dataclass(frozen=True)
class Api:
    """How a Pulumi resource type reaches AWS."""

    calls: tuple[Call, ...]
    #: Inputs the provider uses itself rather than sending them as such, with the reason.
    provider_only: Mapping[str, str] = field(default_factory=dict)
    #: Input -> a check of the JSON document it holds (documents the API takes as text).
    documents: Mapping[str, Callable[[Any], list[str]]] = field(default_factory=dict)


def api(*calls: Call, **options: Any) -> Api:
    return Api(calls=calls, **options)


ECS_TAGS = In("tags", tag_list("key", "value"))
TAGS = In("tags", tag_list())


def ec2_tags(resource_type: str) -> In:
    """Pulumi's tag map -> EC2's TagSpecifications for ``resource_type``."""
    return In("tags", lambda tags: [{"ResourceType": resource_type, "Tags": tag_list()(tags)}])


def ec2_attribute(path: str) -> In:
    """EC2's attribute form: ``{"Value": true}``."""
    return In(path, lambda value: {"Value": value})


def security_group_rule(direction: str) -> Api:
    permission = struct(
        IpProtocol="ipProtocol",
        FromPort="fromPort",
        ToPort="toPort",
        IpRanges=In("cidrIpv4", lambda cidr: [{"CidrIp": cidr}]),
        Ipv6Ranges=In("cidrIpv6", lambda cidr: [{"CidrIpv6": cidr}]),
        PrefixListIds=In("prefixListId", lambda prefix: [{"PrefixListId": prefix}]),
        UserIdGroupPairs=In("referencedSecurityGroupId", lambda group: [{"GroupId": group}]),
    )
    return api(
        call(
            "ec2",
            f"AuthorizeSecurityGroup{direction}",
            GroupId="securityGroupId",
            IpPermissions=ListOf(permission),
            TagSpecifications=ec2_tags("security-group-rule"),
        ),
        provider_only={"description": "sent as the description of the rule's peer"},
    )


def topic_attribute(name: str, path: str) -> Call:
    """One SNS topic attribute: the provider creates the topic with none but FifoTopic, then
    sets each attribute with its own SetTopicAttributes call (terraform-provider-aws
    ``putTopicAttributes``)."""
    return call(
        "sns",
        "SetTopicAttributes",
        when="AttributeValue",
        TopicArn=ARN,
        AttributeName=const(name),
        AttributeValue=In(path, awsmodel.text),
    )


def key_id_when(path: str, value: bool) -> Known:
    """The KMS key's id, only when the boolean input ``path`` is ``value``: the provider makes
    a call of its own for it after CreateKey (EnableKeyRotation, DisableKey)."""
    return Known(
        f"the key's id (when {path} is {str(value).lower()})",
        lambda r: r.id if r.inputs.get(path) is value else MISSING,
        (path,),
    )


#: Pulumi resource type -> how it reaches AWS.
MAPPINGS: dict[str, Api] = {
    "aws:ecs/cluster:Cluster": api(
        call("ecs", "CreateCluster", clusterName=NAME, settings="settings", tags=ECS_TAGS)
    ),
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": api(
        call(
            "ecs",
            "PutClusterCapacityProviders",
            cluster="clusterName",
            capacityProviders="capacityProviders",
            # The provider sends an empty default strategy when none is given.
            defaultCapacityProviderStrategy=In("defaultCapacityProviderStrategies", default=[]),
        )
    ),
    "aws:ecs/taskDefinition:TaskDefinition": api(
        call(
            "ecs",
            "RegisterTaskDefinition",
            family="family",
            taskRoleArn="taskRoleArn",
            executionRoleArn="executionRoleArn",
            networkMode="networkMode",
            containerDefinitions=In("containerDefinitions", json_text),
            volumes="volumes",
            requiresCompatibilities="requiresCompatibilities",
            cpu="cpu",
            memory="memory",
            runtimePlatform="runtimePlatform",
            ephemeralStorage="ephemeralStorage",
            tags=ECS_TAGS,
        )
    ),
    "aws:ecs/service:Service": api(
        call(
            "ecs",
            "CreateService",
            cluster="cluster",
            serviceName=NAME,
            taskDefinition="taskDefinition",
            desiredCount="desiredCount",
            launchType="launchType",
            capacityProviderStrategy="capacityProviderStrategies",
            platformVersion="platformVersion",
            networkConfiguration=In(
                "networkConfiguration", awsvpc("subnets", "securityGroups", "assignPublicIp")
            ),
            loadBalancers="loadBalancers",
            healthCheckGracePeriodSeconds="healthCheckGracePeriodSeconds",
            deploymentConfiguration=struct(
                deploymentCircuitBreaker="deploymentCircuitBreaker",
                maximumPercent="deploymentMaximumPercent",
                minimumHealthyPercent="deploymentMinimumHealthyPercent",
            ),
            enableExecuteCommand="enableExecuteCommand",
            enableECSManagedTags="enableEcsManagedTags",
            propagateTags="propagateTags",
            tags=ECS_TAGS,
        ),
        provider_only={
            "waitForSteadyState": "the provider waits for the deployment to finish",
            "forceNewDeployment": "the provider starts a new deployment on update",
            "triggers": "changes that make the provider start a new deployment",
        },
    ),
    "aws:lb/loadBalancer:LoadBalancer": api(
        call(
            "elbv2",
            "CreateLoadBalancer",
            Name=NAME,
            Subnets="subnets",
            SecurityGroups="securityGroups",
            Scheme=In("internal", lambda internal: "internal" if internal else "internet-facing"),
            Type="loadBalancerType",
            Tags=TAGS,
        ),
        call(
            "elbv2",
            "ModifyLoadBalancerAttributes",
            when="Attributes",
            LoadBalancerArn=ARN,
            Attributes=Attributes(
                {
                    "idle_timeout.timeout_seconds": In("idleTimeout"),
                    "routing.http.drop_invalid_header_fields.enabled": In(
                        "dropInvalidHeaderFields"
                    ),
                    "routing.http.desync_mitigation_mode": In("desyncMitigationMode"),
                    "deletion_protection.enabled": In("enableDeletionProtection"),
                    "access_logs.s3.enabled": In("accessLogs.enabled"),
                    "access_logs.s3.bucket": In("accessLogs.bucket"),
                    "access_logs.s3.prefix": In("accessLogs.prefix"),
                }
            ),
        ),
    ),
    "aws:lb/targetGroup:TargetGroup": api(
        call(
            "elbv2",
            "CreateTargetGroup",
            Name=NAME,
            Protocol="protocol",
            Port="port",
            VpcId="vpcId",
            TargetType="targetType",
            HealthCheckEnabled="healthCheck.enabled",
            HealthCheckProtocol="healthCheck.protocol",
            HealthCheckPort="healthCheck.port",
            HealthCheckPath="healthCheck.path",
            HealthCheckIntervalSeconds="healthCheck.interval",
            HealthCheckTimeoutSeconds="healthCheck.timeout",
            HealthyThresholdCount="healthCheck.healthyThreshold",
            UnhealthyThresholdCount="healthCheck.unhealthyThreshold",
            Matcher=struct(HttpCode="healthCheck.matcher"),
            Tags=TAGS,
        ),
        call(
            "elbv2",
            "ModifyTargetGroupAttributes",
            when="Attributes",
            TargetGroupArn=ARN,
            Attributes=Attributes(
                {"deregistration_delay.timeout_seconds": In("deregistrationDelay")}
            ),
        ),
    ),
    "aws:lb/listener:Listener": api(
        call(
            "elbv2",
            "CreateListener",
            LoadBalancerArn="loadBalancerArn",
            Protocol="protocol",
            Port="port",
            SslPolicy="sslPolicy",
            Certificates=In("certificateArn", lambda arn: [{"CertificateArn": arn}]),
            DefaultActions=In(
                "defaultActions",
                pascal(
                    redirect="RedirectConfig",
                    fixedResponse="FixedResponseConfig",
                    forward="ForwardConfig",
                ),
            ),
            Tags=TAGS,
        )
    ),
    "aws:elasticache/replicationGroup:ReplicationGroup": api(
        call(
            "elasticache",
            "CreateReplicationGroup",
            ReplicationGroupId=NAME,
            ReplicationGroupDescription="description",
            Engine="engine",
            EngineVersion="engineVersion",
            CacheNodeType="nodeType",
            ClusterMode="clusterMode",
            NumCacheClusters="numCacheClusters",
            NumNodeGroups="numNodeGroups",
            ReplicasPerNodeGroup="replicasPerNodeGroup",
            AutomaticFailoverEnabled="automaticFailoverEnabled",
            MultiAZEnabled="multiAzEnabled",
            Port="port",
            CacheParameterGroupName="parameterGroupName",
            CacheSubnetGroupName="subnetGroupName",
            SecurityGroupIds="securityGroupIds",
            AtRestEncryptionEnabled="atRestEncryptionEnabled",
            TransitEncryptionEnabled="transitEncryptionEnabled",
            TransitEncryptionMode="transitEncryptionMode",
            AuthToken="authToken",
            AutoMinorVersionUpgrade="autoMinorVersionUpgrade",
            SnapshotRetentionLimit="snapshotRetentionLimit",
            Tags=TAGS,
        ),
        # A changed token goes out in a modify call: at once, replacing the old one.
        call(
            "elasticache",
            "ModifyReplicationGroup",
            ReplicationGroupId=NAME,
            ApplyImmediately="applyImmediately",
            AuthToken="authToken",
            AuthTokenUpdateStrategy="authTokenUpdateStrategy",
        ),
        # The final snapshot is a parameter of the delete call (none when it is not set).
        call(
            "elasticache",
            "DeleteReplicationGroup",
            ReplicationGroupId=NAME,
            FinalSnapshotIdentifier="finalSnapshotIdentifier",
        ),
    ),
    "aws:elasticache/parameterGroup:ParameterGroup": api(
        call(
            "elasticache",
            "CreateCacheParameterGroup",
            CacheParameterGroupName=NAME,
            CacheParameterGroupFamily="family",
            Description="description",
            Tags=TAGS,
        ),
        call(
            "elasticache",
            "ModifyCacheParameterGroup",
            when="ParameterNameValues",
            CacheParameterGroupName=NAME,
            ParameterNameValues=In(
                "parameters", pascal(name="ParameterName", value="ParameterValue")
            ),
        ),
    ),
    "aws:elasticache/subnetGroup:SubnetGroup": api(
        call(
            "elasticache",
            "CreateCacheSubnetGroup",
            CacheSubnetGroupName=NAME,
            CacheSubnetGroupDescription="description",
            SubnetIds="subnetIds",
            Tags=TAGS,
        )
    ),
    "aws:appautoscaling/target:Target": api(
        call(
            "application-autoscaling",
            "RegisterScalableTarget",
            ServiceNamespace="serviceNamespace",
            ResourceId="resourceId",
            ScalableDimension="scalableDimension",
            MinCapacity="minCapacity",
            MaxCapacity="maxCapacity",
            RoleARN="roleArn",
            Tags="tags",
        )
    ),
    "aws:appautoscaling/policy:Policy": api(
        call(
            "application-autoscaling",
            "PutScalingPolicy",
            PolicyName=NAME,
            ServiceNamespace="serviceNamespace",
            ResourceId="resourceId",
            ScalableDimension="scalableDimension",
            PolicyType="policyType",
            TargetTrackingScalingPolicyConfiguration=In(
                "targetTrackingScalingPolicyConfiguration", pascal()
            ),
            StepScalingPolicyConfiguration=In("stepScalingPolicyConfiguration", step_scaling),
        )
    ),
    "aws:cloudwatch/eventRule:EventRule": api(
        call(
            "events",
            "PutRule",
            Name=NAME,
            ScheduleExpression="scheduleExpression",
            EventPattern="eventPattern",
            State="state",
            Description="description",
            RoleArn="roleArn",
            EventBusName="eventBusName",
            Tags=TAGS,
        )
    ),
    "aws:cloudwatch/eventTarget:EventTarget": api(
        call(
            "events",
            "PutTargets",
            Rule="rule",
            EventBusName="eventBusName",
            Targets=ListOf(
                struct(
                    Id=Known("the target id", lambda r: r.state["targetId"], ("targetId",)),
                    Arn="arn",
                    RoleArn="roleArn",
                    Input="input",
                    EcsParameters=In("ecsTarget", ecs_parameters),
                    InputTransformer=In("inputTransformer", pascal(inputPaths="InputPathsMap")),
                    RetryPolicy=In("retryPolicy", pascal()),
                    DeadLetterConfig=In("deadLetterConfig", pascal()),
                )
            ),
        )
    ),
    "aws:cloudwatch/logGroup:LogGroup": api(
        call("logs", "CreateLogGroup", logGroupName=NAME, kmsKeyId="kmsKeyId", tags="tags"),
        call(
            "logs",
            "PutRetentionPolicy",
            when="retentionInDays",
            logGroupName=NAME,
            retentionInDays="retentionInDays",
        ),
    ),
    "aws:ecr/repository:Repository": api(
        call(
            "ecr",
            "CreateRepository",
            repositoryName=NAME,
            imageTagMutability="imageTagMutability",
            imageScanningConfiguration="imageScanningConfiguration",
            encryptionConfiguration=In("encryptionConfigurations", lambda items: items[0]),
            tags=TAGS,
        ),
        # At `pulumi destroy`.
        call("ecr", "DeleteRepository", repositoryName=NAME, force="forceDelete"),
    ),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": api(
        call(
            "ecr",
            "PutLifecyclePolicy",
            repositoryName="repository",
            lifecyclePolicyText="policy",
        ),
        documents={"policy": lifecycle_policy_problems},
    ),
    "aws:iam/role:Role": api(
        call(
            "iam",
            "CreateRole",
            RoleName=NAME,
            AssumeRolePolicyDocument="assumeRolePolicy",
            Description="description",
            Path="path",
            Tags=TAGS,
        )
    ),
    "aws:iam/rolePolicy:RolePolicy": api(
        call("iam", "PutRolePolicy", RoleName="role", PolicyName=NAME, PolicyDocument="policy")
    ),
    "aws:secretsmanager/secret:Secret": api(
        call("secretsmanager", "CreateSecret", Name=NAME, Description="description", Tags=TAGS),
        # At `pulumi destroy`: a window of 0 days deletes at once, any other is 7-30 days.
        call(
            "secretsmanager",
            "DeleteSecret",
            SecretId=ARN,
            RecoveryWindowInDays=In("recoveryWindowInDays", lambda days: days or MISSING),
            ForceDeleteWithoutRecovery=In(
                "recoveryWindowInDays", lambda days: True if days == 0 else MISSING
            ),
        ),
    ),
    "aws:secretsmanager/secretVersion:SecretVersion": api(
        call(
            "secretsmanager",
            "PutSecretValue",
            SecretId="secretId",
            SecretString="secretString",
            VersionStages="versionStages",
        )
    ),
    "aws:ec2/vpc:Vpc": api(
        call("ec2", "CreateVpc", CidrBlock="cidrBlock", TagSpecifications=ec2_tags("vpc")),
        # EC2 modifies one VPC attribute per call.
        call(
            "ec2",
            "ModifyVpcAttribute",
            when="EnableDnsSupport",
            VpcId=ID,
            EnableDnsSupport=ec2_attribute("enableDnsSupport"),
        ),
        call(
            "ec2",
            "ModifyVpcAttribute",
            when="EnableDnsHostnames",
            VpcId=ID,
            EnableDnsHostnames=ec2_attribute("enableDnsHostnames"),
        ),
    ),
    "aws:ec2/subnet:Subnet": api(
        call(
            "ec2",
            "CreateSubnet",
            VpcId="vpcId",
            CidrBlock="cidrBlock",
            AvailabilityZone="availabilityZone",
            TagSpecifications=ec2_tags("subnet"),
        ),
        call(
            "ec2",
            "ModifySubnetAttribute",
            when="MapPublicIpOnLaunch",
            SubnetId=ID,
            MapPublicIpOnLaunch=ec2_attribute("mapPublicIpOnLaunch"),
        ),
    ),
    "aws:ec2/internetGateway:InternetGateway": api(
        call("ec2", "CreateInternetGateway", TagSpecifications=ec2_tags("internet-gateway")),
        call("ec2", "AttachInternetGateway", InternetGatewayId=ID, VpcId="vpcId"),
    ),
    "aws:ec2/routeTable:RouteTable": api(
        call("ec2", "CreateRouteTable", VpcId="vpcId", TagSpecifications=ec2_tags("route-table"))
    ),
    "aws:ec2/route:Route": api(
        call(
            "ec2",
            "CreateRoute",
            RouteTableId="routeTableId",
            DestinationCidrBlock="destinationCidrBlock",
            GatewayId="gatewayId",
            NatGatewayId="natGatewayId",
        )
    ),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": api(
        call("ec2", "AssociateRouteTable", RouteTableId="routeTableId", SubnetId="subnetId")
    ),
    "aws:ec2/eip:Eip": api(
        call("ec2", "AllocateAddress", Domain="domain", TagSpecifications=ec2_tags("elastic-ip"))
    ),
    "aws:ec2/natGateway:NatGateway": api(
        call(
            "ec2",
            "CreateNatGateway",
            AllocationId="allocationId",
            SubnetId="subnetId",
            TagSpecifications=ec2_tags("natgateway"),
        )
    ),
    "aws:ec2/flowLog:FlowLog": api(
        call(
            "ec2",
            "CreateFlowLogs",
            ResourceIds=In("vpcId", lambda vpc: [vpc]),
            ResourceType=const("VPC"),
            TrafficType="trafficType",
            LogDestinationType="logDestinationType",
            LogDestination="logDestination",
            DeliverLogsPermissionArn="iamRoleArn",
            TagSpecifications=ec2_tags("vpc-flow-log"),
        )
    ),
    "aws:ec2/securityGroup:SecurityGroup": api(
        call(
            "ec2",
            "CreateSecurityGroup",
            GroupName=NAME,
            Description="description",
            VpcId="vpcId",
            TagSpecifications=ec2_tags("security-group"),
        ),
        provider_only={"revokeRulesOnDelete": "the provider revokes the rules before deleting"},
    ),
    # The provider adopts the VPC's default group (found by vpcId), revokes its rules and tags
    # it: only the tags reach AWS from the inputs.
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": api(
        call("ec2", "CreateTags", Resources=ListOf(ID), Tags=In("tags", tag_list())),
        provider_only={"vpcId": "finds the VPC's default group (DescribeSecurityGroups filter)"},
    ),
    # A dead-letter queue (EventBridge targets) and the policy that lets EventBridge send to it.
    "aws:sqs/queue:Queue": api(
        call(
            "sqs",
            "CreateQueue",
            QueueName=NAME,
            Attributes=Attributes(
                {
                    "MessageRetentionPeriod": In("messageRetentionSeconds"),
                    "VisibilityTimeout": In("visibilityTimeoutSeconds"),
                    "DelaySeconds": In("delaySeconds"),
                    "MaximumMessageSize": In("maxMessageSize"),
                    "ReceiveMessageWaitTimeSeconds": In("receiveWaitTimeSeconds"),
                    "SqsManagedSseEnabled": In("sqsManagedSseEnabled"),
                    "KmsMasterKeyId": In("kmsMasterKeyId"),
                    "KmsDataKeyReusePeriodSeconds": In("kmsDataKeyReusePeriodSeconds"),
                    "FifoQueue": In("fifoQueue"),
                    "ContentBasedDeduplication": In("contentBasedDeduplication"),
                    "RedrivePolicy": In("redrivePolicy"),
                    "RedriveAllowPolicy": In("redriveAllowPolicy"),
                    "Policy": In("policy"),
                },
                as_map=True,
            ),
            tags="tags",
        )
    ),
    "aws:sqs/queuePolicy:QueuePolicy": api(
        call(
            "sqs",
            "SetQueueAttributes",
            QueueUrl="queueUrl",
            Attributes=In("policy", lambda policy: {"Policy": policy}),
        )
    ),
    # Alarms: the operator alarms and the step policies' high-resolution scale-out alarms.
    "aws:cloudwatch/metricAlarm:MetricAlarm": api(
        call(
            "cloudwatch",
            "PutMetricAlarm",
            AlarmName=NAME,
            AlarmDescription="alarmDescription",
            # The provider sends its defaults: actions on, missing data treated as missing.
            ActionsEnabled=In("actionsEnabled", default=True),
            AlarmActions="alarmActions",
            OKActions="okActions",
            InsufficientDataActions="insufficientDataActions",
            ComparisonOperator="comparisonOperator",
            Threshold="threshold",
            ThresholdMetricId="thresholdMetricId",
            EvaluationPeriods="evaluationPeriods",
            DatapointsToAlarm="datapointsToAlarm",
            TreatMissingData=In("treatMissingData", default="missing"),
            EvaluateLowSampleCountPercentile="evaluateLowSampleCountPercentiles",
            # One metric...
            Namespace="namespace",
            MetricName="metricName",
            Dimensions=In("dimensions", cloudwatch_dimensions),
            Period="period",
            Statistic="statistic",
            ExtendedStatistic="extendedStatistic",
            Unit="unit",
            # ...or metric math, each metric with its own period.
            Metrics=In("metricQueries", metric_queries),
            Tags=TAGS,
        )
    ),
    "aws:cloudwatch/dashboard:Dashboard": api(
        call(
            "cloudwatch",
            "PutDashboard",
            DashboardName="dashboardName",
            DashboardBody="dashboardBody",
        ),
        documents={"dashboardBody": json_only},
    ),
    # The alert topic, its key, its policy and the e-mail subscription.
    "aws:kms/key:Key": api(
        call(
            "kms",
            "CreateKey",
            Description="description",
            Policy="policy",
            # The provider always sends these three, with its defaults.
            KeyUsage=In("keyUsage", default="ENCRYPT_DECRYPT"),
            CustomerMasterKeySpec=In("customerMasterKeySpec", default="SYMMETRIC_DEFAULT"),
            BypassPolicyLockoutSafetyCheck=In("bypassPolicyLockoutSafetyCheck", default=False),
            MultiRegion="multiRegion",
            CustomKeyStoreId="customKeyStoreId",
            XksKeyId="xksKeyId",
            Tags=In("tags", tag_list("TagKey", "TagValue")),
        ),
        call(
            "kms",
            "EnableKeyRotation",
            when="KeyId",
            KeyId=key_id_when("enableKeyRotation", True),
            RotationPeriodInDays="rotationPeriodInDays",
        ),
        call("kms", "DisableKey", when="KeyId", KeyId=key_id_when("isEnabled", False)),
        # At `pulumi destroy`: the key is deleted after the window, restorable until then.
        call(
            "kms",
            "ScheduleKeyDeletion",
            KeyId=ID,
            PendingWindowInDays="deletionWindowInDays",
        ),
    ),
    "aws:sns/topic:Topic": api(
        call(
            "sns",
            "CreateTopic",
            Name=NAME,
            Attributes=Attributes({"FifoTopic": In("fifoTopic")}, as_map=True),
            Tags=TAGS,
        ),
        topic_attribute("KmsMasterKeyId", "kmsMasterKeyId"),
        topic_attribute("Policy", "policy"),
        topic_attribute("DisplayName", "displayName"),
        topic_attribute("DeliveryPolicy", "deliveryPolicy"),
        topic_attribute("SignatureVersion", "signatureVersion"),
        topic_attribute("TracingConfig", "tracingConfig"),
        topic_attribute("MaximumMessageSize", "maximumMessageSize"),
        topic_attribute("ContentBasedDeduplication", "contentBasedDeduplication"),
        topic_attribute("ArchivePolicy", "archivePolicy"),
        topic_attribute("FifoThroughputScope", "fifoThroughputScope"),
    ),
    "aws:sns/topicPolicy:TopicPolicy": api(
        call(
            "sns",
            "SetTopicAttributes",
            TopicArn="arn",
            AttributeName=const("Policy"),
            AttributeValue="policy",
        )
    ),
    "aws:sns/topicSubscription:TopicSubscription": api(
        call(
            "sns",
            "Subscribe",
            TopicArn="topic",
            Protocol="protocol",
            Endpoint="endpoint",
            Attributes=Attributes(
                {
                    "DeliveryPolicy": In("deliveryPolicy"),
                    "FilterPolicy": In("filterPolicy"),
                    "FilterPolicyScope": In("filterPolicyScope"),
                    "RawMessageDelivery": In("rawMessageDelivery"),
                    "RedrivePolicy": In("redrivePolicy"),
                    "ReplayPolicy": In("replayPolicy"),
                    "SubscriptionRoleArn": In("subscriptionRoleArn"),
                },
                as_map=True,
            ),
            # The provider asks for the ARN at once, even before the address confirms.
            ReturnSubscriptionArn=const(True),
        ),
        provider_only={
            "confirmationTimeoutInMinutes": "how long the provider waits for a confirmation",
            "endpointAutoConfirms": "whether the provider waits for a confirmation at all",
        },
    ),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": security_group_rule("Ingress"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": security_group_rule("Egress"),
}

#: Registered types that make no AWS API call, and why.
NOT_AWS: dict[str, str] = {
    "random:index/randomPassword:RandomPassword": (
        "generated by Pulumi; AWS sees its result as the replication group's AuthToken, or in "
        "the web's API keys secret"
    ),
    "random:index/randomId:RandomId": (
        "generated by Pulumi; AWS sees its hex in the replication group's final snapshot name"
    ),
    "docker-build:index:Image": "built by BuildKit, pushed over the registry protocol",
}
