"""The AWS resource types the policies look at, by their Pulumi type names."""

from __future__ import annotations

SERVICE = "aws:ecs/service:Service"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SCALING_TARGET = "aws:appautoscaling/target:Target"
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
PARAMETER_GROUP = "aws:elasticache/parameterGroup:ParameterGroup"
VPC = "aws:ec2/vpc:Vpc"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
LOAD_BALANCERS = frozenset(
    {"aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"}
)
