"""Every Pulumi type name the project spells, defined once: resources and provider functions.

A Pulumi resource type (a "type token") is ``<package>:<module>:<Type>``, such as
``aws:ecs/service:Service``; pulumi-aws's provider functions have tokens of the same form, such
as ``aws:index/getRegion:getRegion`` (Pulumi docs, "Resources", the ``type`` of a resource's
URN; pulumi-aws's schema names each resource and function by its token). The Pulumi program
never spells them (it uses pulumi-aws's classes); the tools that read a rendered program do: the
mocks (``devtools.render``), the offline plan (``devtools.plan``), the ECS twin, the benches, the
tests, and the policy pack, which sees each resource by its type.

This module lives in the policy pack because the pack runs in its own virtualenv with only
``policy/`` on ``sys.path`` (``policy/__main__.py``): the one module every reader can import is
one inside it. It imports nothing, so ``policy.invariants`` (whose ``__init__`` imports nothing
either) costs a reader no dependency.

The names follow the tokens: ``<MODULE>_<TYPE>`` in capitals (``ECS_SERVICE``,
``EC2_SECURITY_GROUP_RULE``); functions of the ``index`` module are ``AWS_<FUNCTION>``; other
providers' types are named after their provider (``RANDOM_PASSWORD``, ``DOCKER_BUILD_IMAGE``).
"""

from __future__ import annotations

# --- alb -----------------------------------------------------------------------------------------
ALB_LOAD_BALANCER = "aws:alb/loadBalancer:LoadBalancer"

# --- appautoscaling ------------------------------------------------------------------------------
APPAUTOSCALING_POLICY = "aws:appautoscaling/policy:Policy"
APPAUTOSCALING_TARGET = "aws:appautoscaling/target:Target"

# --- cloudwatch ----------------------------------------------------------------------------------
CLOUDWATCH_DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
CLOUDWATCH_EVENT_RULE = "aws:cloudwatch/eventRule:EventRule"
CLOUDWATCH_EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
CLOUDWATCH_LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
CLOUDWATCH_METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"

# --- ec2 -----------------------------------------------------------------------------------------
EC2_DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
EC2_EIP = "aws:ec2/eip:Eip"
EC2_FLOW_LOG = "aws:ec2/flowLog:FlowLog"
EC2_INTERNET_GATEWAY = "aws:ec2/internetGateway:InternetGateway"
EC2_NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
EC2_ROUTE = "aws:ec2/route:Route"
EC2_ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
EC2_ROUTE_TABLE_ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
EC2_SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
EC2_SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
EC2_SUBNET = "aws:ec2/subnet:Subnet"
EC2_VPC = "aws:ec2/vpc:Vpc"

# --- ecr -----------------------------------------------------------------------------------------
ECR_LIFECYCLE_POLICY = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
ECR_REPOSITORY_POLICY = "aws:ecr/repositoryPolicy:RepositoryPolicy"

# --- ecs -----------------------------------------------------------------------------------------
ECS_CLUSTER = "aws:ecs/cluster:Cluster"
ECS_CLUSTER_CAPACITY_PROVIDERS = "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders"
ECS_SERVICE = "aws:ecs/service:Service"
ECS_TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ECS_TASK_SET = "aws:ecs/taskSet:TaskSet"

# --- elasticache ---------------------------------------------------------------------------------
ELASTICACHE_PARAMETER_GROUP = "aws:elasticache/parameterGroup:ParameterGroup"
ELASTICACHE_REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
ELASTICACHE_SUBNET_GROUP = "aws:elasticache/subnetGroup:SubnetGroup"

# --- iam -----------------------------------------------------------------------------------------
IAM_GROUP_POLICY = "aws:iam/groupPolicy:GroupPolicy"
IAM_POLICY = "aws:iam/policy:Policy"
IAM_ROLE = "aws:iam/role:Role"
IAM_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
IAM_USER_POLICY = "aws:iam/userPolicy:UserPolicy"

# --- kms -----------------------------------------------------------------------------------------
KMS_KEY = "aws:kms/key:Key"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"

# --- lb ------------------------------------------------------------------------------------------
LB_LISTENER = "aws:lb/listener:Listener"
LB_LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
LB_TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"

# --- s3 ------------------------------------------------------------------------------------------
S3_BUCKET = "aws:s3/bucket:Bucket"
S3_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"

# --- secretsmanager ------------------------------------------------------------------------------
SECRETSMANAGER_SECRET = "aws:secretsmanager/secret:Secret"
SECRETSMANAGER_SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
SECRETSMANAGER_SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"

# --- sns -----------------------------------------------------------------------------------------
SNS_TOPIC = "aws:sns/topic:Topic"
SNS_TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
SNS_TOPIC_SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"

# --- sqs -----------------------------------------------------------------------------------------
SQS_QUEUE = "aws:sqs/queue:Queue"
SQS_QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"

# --- vpc -----------------------------------------------------------------------------------------
VPC_SECURITY_GROUP_EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
VPC_SECURITY_GROUP_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"

# --- docker-build --------------------------------------------------------------------------------
DOCKER_BUILD_IMAGE = "docker-build:index:Image"

# --- random --------------------------------------------------------------------------------------
RANDOM_ID = "random:index/randomId:RandomId"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"

# --- provider functions (invokes), as the mocks answer them ---------------------------------------
AWS_GET_AVAILABILITY_ZONES = "aws:index/getAvailabilityZones:getAvailabilityZones"
AWS_GET_CALLER_IDENTITY = "aws:index/getCallerIdentity:getCallerIdentity"
AWS_GET_PARTITION = "aws:index/getPartition:getPartition"
AWS_GET_REGION = "aws:index/getRegion:getRegion"
ECR_GET_AUTHORIZATION_TOKEN = "aws:ecr/getAuthorizationToken:getAuthorizationToken"

#: The two tokens of an Application Load Balancer: ``aws:alb`` is pulumi-aws's alias of ``aws:lb``.
LOAD_BALANCERS = frozenset({LB_LOAD_BALANCER, ALB_LOAD_BALANCER})
