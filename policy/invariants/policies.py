"""The pack's table: every policy, its name, what it holds the program to, and its check.

``policy/__main__.py`` puts ``POLICIES`` into one mandatory pack."""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from .broker_hardening import (
    validate_broker,
    validate_broker_never_evicts,
    validate_broker_only_from_vpc,
)
from .container_hardening import validate_container_hardening, validate_no_secrets_in_environment
from .controls import validate_ecr_repository, validate_load_balancer, validate_log_retention
from .iam import validate_iam_actions, validate_iam_star_resources
from .services import (
    validate_beat_singleton,
    validate_service_task_counts,
    validate_worker_keeps_a_task,
)
from .stop_timeouts import validate_stop_timeouts

POLICIES: tuple[ResourceValidationPolicy | StackValidationPolicy, ...] = (
    ResourceValidationPolicy(
        name="beat-singleton",
        description="The beat service runs exactly one task, and never two during a deploy "
        "(desiredCount 1, deploymentMaximumPercent 100, deploymentMinimumHealthyPercent 0).",
        validate=validate_beat_singleton,
    ),
    ResourceValidationPolicy(
        name="worker-keeps-a-task",
        description="Every worker service keeps at least one task (desiredCount >= 1).",
        validate=validate_worker_keeps_a_task,
    ),
    StackValidationPolicy(
        name="service-task-counts",
        description="Scaling keeps the task counts: a worker's scaling target has "
        "minCapacity >= 1 and nothing scales beat; a service that runs beat or a worker is held "
        "to its counts even without the Service tag.",
        validate=validate_service_task_counts,
    ),
    ResourceValidationPolicy(
        name="stop-timeout-within-budget",
        description="Every container's stopTimeout is within Fargate's 120 s and covers what "
        "its budget needs (from its own time-limit environment).",
        validate=validate_stop_timeouts,
    ),
    ResourceValidationPolicy(
        name="containers-hardened",
        description="Every container has a read-only root filesystem, a non-root user, no "
        "privileged mode and a log driver.",
        validate=validate_container_hardening,
    ),
    ResourceValidationPolicy(
        name="no-secrets-in-environment",
        description="No container environment variable holds a secret (they go in secrets).",
        validate=validate_no_secrets_in_environment,
    ),
    ResourceValidationPolicy(
        name="broker-hardened",
        description="The broker has TLS (required), an AUTH token, at-rest encryption, cluster "
        "mode disabled, minor upgrades and its own parameter group.",
        validate=validate_broker,
    ),
    StackValidationPolicy(
        name="broker-never-evicts",
        description="The broker's parameter group is this stack's and sets maxmemory-policy "
        "noeviction.",
        validate=validate_broker_never_evicts,
    ),
    StackValidationPolicy(
        name="broker-only-from-vpc",
        description="The broker's security groups admit only security groups or addresses "
        "inside the stack's VPC.",
        validate=validate_broker_only_from_vpc,
    ),
    ResourceValidationPolicy(
        name="log-retention-set",
        description="Every log group has a retention period.",
        validate=validate_log_retention,
    ),
    ResourceValidationPolicy(
        name="ecr-scan-and-immutable-tags",
        description="ECR repositories scan on push and have immutable tags.",
        validate=validate_ecr_repository,
    ),
    ResourceValidationPolicy(
        name="iam-no-wildcard-actions",
        description="No IAM policy document (identity, trust, resource or KMS key policy) "
        "allows a wildcard action or NotAction.",
        validate=validate_iam_actions,
    ),
    ResourceValidationPolicy(
        name="iam-star-resource-only-where-unscoped",
        description='Identity policies allow "Resource": "*" only for actions without '
        "resource-level permissions, held by the condition key the action offers "
        "(PutMetricData: cloudwatch:namespace).",
        validate=validate_iam_star_resources,
    ),
    ResourceValidationPolicy(
        name="load-balancer-drops-invalid-headers",
        description="Application load balancers drop invalid header fields and mitigate desync "
        "(defensive or strictest).",
        validate=validate_load_balancer,
    ),
)
