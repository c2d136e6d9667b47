"""How each Pulumi resource type the program registers reaches AWS: the table.

``MAPPINGS``: a Pulumi type -> the API calls its provider makes, each request member with where
its value comes from, written in the language of ``devtools.plan.apimap`` (``call``, ``api``,
``In``, ``struct``, ``NAME``, ``ARN``...). ``NOT_AWS``: the registered types that make no AWS
call, and why. ``devtools.plan.aws_rules`` builds each request from this table and checks it
against botocore's models; a type in neither table is a finding.
"""

from __future__ import annotations

from devtools.plan import awsmodel
from devtools.plan.apimap import (
    ARN,
    ID,
    MISSING,
    NAME,
    Api,
    Attributes,
    Call,
    In,
    Known,
    ListOf,
    api,
    awsvpc,
    call,
    cloudwatch_dimensions,
    const,
    ecs_parameters,
    json_only,
    json_text,
    lifecycle_policy_problems,
    metric_queries,
    pascal,
    step_scaling,
    struct,
    tag_list,
)
from policy.invariants import aws_types

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
    aws_types.ECS_CLUSTER: api(
        call("ecs", "CreateCluster", clusterName=NAME, settings="settings", tags=ECS_TAGS)
    ),
    aws_types.ECS_CLUSTER_CAPACITY_PROVIDERS: api(
        call(
            "ecs",
            "PutClusterCapacityProviders",
            cluster="clusterName",
            capacityProviders="capacityProviders",
            # The provider sends an empty default strategy when none is given.
            defaultCapacityProviderStrategy=In("defaultCapacityProviderStrategies", default=[]),
        )
    ),
    aws_types.ECS_TASK_DEFINITION: api(
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
    aws_types.ECS_SERVICE: api(
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
    aws_types.LB_LOAD_BALANCER: api(
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
    aws_types.LB_TARGET_GROUP: api(
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
    aws_types.LB_LISTENER: api(
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
    aws_types.ELASTICACHE_REPLICATION_GROUP: api(
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
    aws_types.ELASTICACHE_PARAMETER_GROUP: api(
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
    aws_types.ELASTICACHE_SUBNET_GROUP: api(
        call(
            "elasticache",
            "CreateCacheSubnetGroup",
            CacheSubnetGroupName=NAME,
            CacheSubnetGroupDescription="description",
            SubnetIds="subnetIds",
            Tags=TAGS,
        )
    ),
    aws_types.APPAUTOSCALING_TARGET: api(
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
    aws_types.APPAUTOSCALING_POLICY: api(
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
    aws_types.CLOUDWATCH_EVENT_RULE: api(
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
    aws_types.CLOUDWATCH_EVENT_TARGET: api(
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
    aws_types.CLOUDWATCH_LOG_GROUP: api(
        call("logs", "CreateLogGroup", logGroupName=NAME, kmsKeyId="kmsKeyId", tags="tags"),
        call(
            "logs",
            "PutRetentionPolicy",
            when="retentionInDays",
            logGroupName=NAME,
            retentionInDays="retentionInDays",
        ),
    ),
    aws_types.ECR_REPOSITORY: api(
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
    aws_types.ECR_LIFECYCLE_POLICY: api(
        call(
            "ecr",
            "PutLifecyclePolicy",
            repositoryName="repository",
            lifecyclePolicyText="policy",
        ),
        documents={"policy": lifecycle_policy_problems},
    ),
    aws_types.IAM_ROLE: api(
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
    aws_types.IAM_ROLE_POLICY: api(
        call("iam", "PutRolePolicy", RoleName="role", PolicyName=NAME, PolicyDocument="policy")
    ),
    aws_types.SECRETSMANAGER_SECRET: api(
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
    aws_types.SECRETSMANAGER_SECRET_VERSION: api(
        call(
            "secretsmanager",
            "PutSecretValue",
            SecretId="secretId",
            SecretString="secretString",
            VersionStages="versionStages",
        )
    ),
    aws_types.EC2_VPC: api(
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
    aws_types.EC2_SUBNET: api(
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
    aws_types.EC2_INTERNET_GATEWAY: api(
        call("ec2", "CreateInternetGateway", TagSpecifications=ec2_tags("internet-gateway")),
        call("ec2", "AttachInternetGateway", InternetGatewayId=ID, VpcId="vpcId"),
    ),
    aws_types.EC2_ROUTE_TABLE: api(
        call("ec2", "CreateRouteTable", VpcId="vpcId", TagSpecifications=ec2_tags("route-table"))
    ),
    aws_types.EC2_ROUTE: api(
        call(
            "ec2",
            "CreateRoute",
            RouteTableId="routeTableId",
            DestinationCidrBlock="destinationCidrBlock",
            GatewayId="gatewayId",
            NatGatewayId="natGatewayId",
        )
    ),
    aws_types.EC2_ROUTE_TABLE_ASSOCIATION: api(
        call("ec2", "AssociateRouteTable", RouteTableId="routeTableId", SubnetId="subnetId")
    ),
    aws_types.EC2_EIP: api(
        call("ec2", "AllocateAddress", Domain="domain", TagSpecifications=ec2_tags("elastic-ip"))
    ),
    aws_types.EC2_NAT_GATEWAY: api(
        call(
            "ec2",
            "CreateNatGateway",
            AllocationId="allocationId",
            SubnetId="subnetId",
            TagSpecifications=ec2_tags("natgateway"),
        )
    ),
    aws_types.EC2_FLOW_LOG: api(
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
    aws_types.EC2_SECURITY_GROUP: api(
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
    aws_types.EC2_DEFAULT_SECURITY_GROUP: api(
        call("ec2", "CreateTags", Resources=ListOf(ID), Tags=In("tags", tag_list())),
        provider_only={"vpcId": "finds the VPC's default group (DescribeSecurityGroups filter)"},
    ),
    # A dead-letter queue (EventBridge targets) and the policy that lets EventBridge send to it.
    aws_types.SQS_QUEUE: api(
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
    aws_types.SQS_QUEUE_POLICY: api(
        call(
            "sqs",
            "SetQueueAttributes",
            QueueUrl="queueUrl",
            Attributes=In("policy", lambda policy: {"Policy": policy}),
        )
    ),
    # Alarms: the operator alarms and the step policies' high-resolution scale-out alarms.
    aws_types.CLOUDWATCH_METRIC_ALARM: api(
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
    aws_types.CLOUDWATCH_DASHBOARD: api(
        call(
            "cloudwatch",
            "PutDashboard",
            DashboardName="dashboardName",
            DashboardBody="dashboardBody",
        ),
        documents={"dashboardBody": json_only},
    ),
    # The alert topic, its key, its policy and the e-mail subscription.
    aws_types.KMS_KEY: api(
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
    aws_types.SNS_TOPIC: api(
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
    aws_types.SNS_TOPIC_POLICY: api(
        call(
            "sns",
            "SetTopicAttributes",
            TopicArn="arn",
            AttributeName=const("Policy"),
            AttributeValue="policy",
        )
    ),
    aws_types.SNS_TOPIC_SUBSCRIPTION: api(
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
    aws_types.VPC_SECURITY_GROUP_INGRESS_RULE: security_group_rule("Ingress"),
    aws_types.VPC_SECURITY_GROUP_EGRESS_RULE: security_group_rule("Egress"),
}

#: Registered types that make no AWS API call, and why.
NOT_AWS: dict[str, str] = {
    aws_types.RANDOM_PASSWORD: (
        "generated by Pulumi; AWS sees its result as the replication group's AuthToken, or in "
        "the web's API keys secret"
    ),
    aws_types.RANDOM_ID: (
        "generated by Pulumi; AWS sees its hex in the replication group's final snapshot name"
    ),
    aws_types.DOCKER_BUILD_IMAGE: "built by BuildKit, pushed over the registry protocol",
}
