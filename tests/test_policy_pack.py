"""The policy pack (``policy/``): each policy on a passing and a failing resource, the whole pack
over every resource the program registers (both schedulers, dev and production: no violation),
a deliberate break of each invariant in the program (caught, and nothing else), the restated
budget rules against the program's, and the pack as the engine runs it (its gRPC server).

Policies receive props the way the engine sends them (``devtools.plan.policy_check.engine_props``:
a protobuf Struct and back, so numbers are floats, wrapped in pulumi-policy's unknown-checking
proxies).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2
from hypothesis import given
from hypothesis import strategies as st
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from celery_ecs import settings
from devtools.plan.policy_check import Violation, check, engine_props, running_pack, struct
from devtools.render import ProgramRun, stack_file_config
from infra import budget
from infra.containers import ENQUEUE_DEFAULT_COMMAND, WEB_COMMAND, worker_command
from infra.eventbridge import ENQUEUE_STOP_TIMEOUT
from infra.worker_service import NAMESPACE_CONDITION_KEY, PUT_METRIC_DATA_ACTION
from policy.invariants import aws_types, iam, restated
from policy.invariants.container_hardening import secret_reason
from policy.invariants.policies import POLICIES
from policy.invariants.readers import container_role
from policy.invariants.stop_timeouts import stop_timeout_need
from tests.support import ROOT, shared_run

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
#: Production with a warm and a cold pool, HTTPS, access logs and alarms e-mailed (the stack's
#: own encrypted topic: a KMS key, a topic policy); everything else production's defaults (NAT
#: per AZ, flow logs, a broker replica, 365-day logs, deletion protection).
PRODUCTION: dict[str, object] = {
    "production": True,
    "workers": [
        {"name": "default", "queues": ["default"], "taskTimeout": 30, "minCount": 2},
        {"name": "long", "queues": ["long"], "taskTimeout": 3600, "maxStopTimeout": 60},
    ],
    "web": {"certificateArn": CERTIFICATE, "accessLogsBucket": "alb-logs-bucket"},
    "alerts": {"email": "ops@example.com"},
}
#: Dev is Pulumi.dev.yaml (a warm and a cold pool, no NAT, plain HTTP, no alert e-mail).
STACKS = ("dev-beat", "dev-eventbridge", "production-beat", "production-eventbridge")


def stack_config(stack: str) -> dict[str, object]:
    kind, scheduler = stack.split("-")
    base = stack_file_config("dev") if kind == "dev" else PRODUCTION
    return {**base, "scheduler": scheduler}


def rendered(stack: str) -> ProgramRun:
    return shared_run(stack_config(stack))


POLICY = {policy.name: policy for policy in POLICIES}
OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def urn(resource_type: str, name: str) -> str:
    return f"urn:pulumi:test::celery-ecs::{resource_type}::{name}"


def validate(
    policy_name: str, resource_type: str, props: Mapping[str, Any], name: str = "subject"
) -> list[str]:
    """The messages a resource policy reports for one resource, given as the engine would."""
    policy = POLICY[policy_name]
    assert isinstance(policy, ResourceValidationPolicy)
    messages: list[str] = []
    args = ResourceValidationArgs(
        resource_type, engine_props(props), urn(resource_type, name), name, OPTIONS, None
    )
    policy.validate(args, lambda message, _urn=None: messages.append(message))
    return messages


def validate_stack(
    policy_name: str, resources: list[tuple[str, str, Mapping[str, Any]]]
) -> list[tuple[str, str]]:
    """(resource name, message) of what a stack policy reports over (type, name, outputs)."""
    policy = POLICY[policy_name]
    assert isinstance(policy, StackValidationPolicy)
    found: list[tuple[str, str]] = []
    stack = StackValidationArgs(
        [
            PolicyResource(
                typ, engine_props(props), urn(typ, name), name, OPTIONS, None, None, [], {}
            )
            for typ, name, props in resources
        ]
    )

    def report(message: str, where: str | None = None) -> None:
        found.append(((where or "").rsplit("::", 1)[-1], message))

    policy.validate(stack, report)
    return found


# --- the restated rules are the program's -----------------------------------------------------


def test_restated_constants_are_the_programs() -> None:
    assert restated.FARGATE_STOP_TIMEOUT_CAP == budget.FARGATE_STOP_TIMEOUT_CAP
    assert restated.EXIT_MARGIN == budget.EXIT_MARGIN
    assert restated.TIME_LIMIT == settings.TIME_LIMIT
    assert restated.SOFT_SHUTDOWN_TIMEOUT == settings.SOFT_SHUTDOWN_TIMEOUT
    assert restated.TASK_PROTECTION == settings.TASK_PROTECTION
    assert restated.REMAP_SIGTERM == settings.REMAP_SIGTERM
    assert restated.WEB_REQUEST_TIMEOUT == settings.WEB_REQUEST_TIMEOUT
    default_request = settings.ENV_VARS[settings.WEB_REQUEST_TIMEOUT][0]
    assert str(restated.DEFAULT_WEB_REQUEST_TIMEOUT) == default_request
    # Beat and the enqueue task get the margin alone.
    assert budget.BEAT_STOP_TIMEOUT == ENQUEUE_STOP_TIMEOUT == restated.EXIT_MARGIN


@given(
    task_timeout=st.integers(1, budget.MAX_TASK_TIMEOUT),
    max_stop_timeout=st.integers(budget.EXIT_MARGIN + 1, budget.FARGATE_STOP_TIMEOUT_CAP),
    prefetch=st.integers(1, 4),
    max_countdown=st.integers(0, 86_400),
)
def test_the_policys_stop_rule_gives_the_budgets_stop_timeout(
    task_timeout: int, max_stop_timeout: int, prefetch: int, max_countdown: int
) -> None:
    pool = budget.worker_budget(
        task_timeout,
        max_stop_timeout=max_stop_timeout,
        prefetch_multiplier=prefetch,
        max_countdown=max_countdown,
    )
    need = stop_timeout_need("worker", pool.environment())
    assert need.seconds == pool.stop_timeout
    assert need.seconds <= restated.FARGATE_STOP_TIMEOUT_CAP


@given(request_timeout=st.integers(1, budget.FARGATE_STOP_TIMEOUT_CAP - budget.EXIT_MARGIN))
def test_the_policys_web_rule_gives_the_budgets_stop_timeout(request_timeout: int) -> None:
    web = budget.web_budget(request_timeout)
    assert stop_timeout_need("web", web.environment()).seconds == web.stop_timeout


@pytest.mark.parametrize(
    ("command", "role"),
    [
        (worker_command("default", ["default", "long"], 4), "worker"),
        (("celery", "-A", "beat", "worker"), "worker"),  # an app named beat runs a worker
        (("celery", "--app=x", "beat", "-s", "/tmp/schedule"), "beat"),
        (("python", "-m", "celery", "--app", "app.celery_app", "beat"), "beat"),
        (("/opt/venv/bin/celery", "--app", "app.celery_app", "worker"), "worker"),
        (("celery", "--app", "app.celery_app", "inspect", "ping"), "other"),
        (WEB_COMMAND, "web"),
        (ENQUEUE_DEFAULT_COMMAND, "other"),
        ((), "other"),
    ],
)
def test_a_containers_role_comes_from_its_command(command: tuple[str, ...], role: str) -> None:
    assert container_role(command) == role


# --- each policy: a passing and a failing resource ----------------------------------------------


SERVICE = aws_types.ECS_SERVICE
BEAT = {
    "tags": {"Service": "beat"},
    "desiredCount": 1,
    "deploymentMaximumPercent": 100,
    "deploymentMinimumHealthyPercent": 0,
}


def test_beat_singleton_passes_the_programs_beat() -> None:
    assert validate("beat-singleton", SERVICE, BEAT) == []
    # Other services may overlap during a deploy.
    web = {**BEAT, "tags": {"Service": "web"}, "deploymentMaximumPercent": 200}
    assert validate("beat-singleton", SERVICE, web) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"deploymentMaximumPercent": 200},
            "beat service 'subject' has deploymentMaximumPercent "
            "200; set it to 100 so ECS stops the old beat before it starts the new one",
        ),
        ({"deploymentMaximumPercent": None}, "deploymentMaximumPercent absent (ECS's default 200)"),
        ({"desiredCount": 2}, "desiredCount 2; set it to 1"),
        ({"desiredCount": 0}, "desiredCount 0; set it to 1"),
        (
            {"deploymentMinimumHealthyPercent": 100},
            "deploymentMinimumHealthyPercent 100; set it to 0",
        ),
    ],
)
def test_beat_singleton_fails_a_beat_that_could_run_twice_or_never(
    change: dict[str, Any], expected: str
) -> None:
    props = {key: value for key, value in {**BEAT, **change}.items() if value is not None}
    (message,) = validate("beat-singleton", SERVICE, props)
    assert expected in message


def test_worker_keeps_a_task() -> None:
    worker = {"tags": {"Service": "worker-default"}, "desiredCount": 1}
    assert validate("worker-keeps-a-task", SERVICE, worker) == []
    (message,) = validate("worker-keeps-a-task", SERVICE, {**worker, "desiredCount": 0})
    assert message == (
        "worker service 'subject' has desiredCount 0; set it to at least 1 (the pool's minCount) "
        "so its queues never sit without a consumer"
    )
    # The web's count is the web's business.
    assert (
        validate(
            "worker-keeps-a-task",
            SERVICE,
            {**worker, "tags": {"Service": "web"}, "desiredCount": 0},
        )
        == []
    )


CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/c"


def task_definition(
    name: str, command: tuple[str, ...], **container: Any
) -> tuple[str, str, dict[str, Any]]:
    arn = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{name}:1"
    definition = {"name": "main", "command": list(command), **container}
    props = {"arn": arn, "containerDefinitions": json.dumps([definition])}
    return aws_types.ECS_TASK_DEFINITION, name, props


def service(name: str, task: str, tag: str, **props: Any) -> tuple[str, str, dict[str, Any]]:
    return (
        SERVICE,
        name,
        {
            "name": f"{name}-abc1234",
            "cluster": CLUSTER,
            "tags": {"Service": tag},
            "taskDefinition": f"arn:aws:ecs:us-east-1:123456789012:task-definition/{task}:1",
            **props,
        },
    )


def target(name: str, service_name: str, minimum: int) -> tuple[str, str, dict[str, Any]]:
    return (
        aws_types.APPAUTOSCALING_TARGET,
        name,
        {
            "serviceNamespace": "ecs",
            "resourceId": f"service/c/{service_name}-abc1234",
            "minCapacity": minimum,
            "maxCapacity": 4,
        },
    )


def counts_stack(
    *,
    worker_min: int = 1,
    beat_target: bool = False,
    beat_tag: str = "beat",
    beat_maximum: int = 100,
) -> list[tuple[str, str, Mapping[str, Any]]]:
    resources: list[tuple[str, str, Mapping[str, Any]]] = [
        task_definition("worker-task", worker_command("default", ["default"], 2)),
        task_definition("beat-task", ("celery", "--app", "app.celery_app", "beat")),
        service("worker-service", "worker-task", "worker-default", desiredCount=1),
        service(
            "beat-service",
            "beat-task",
            beat_tag,
            desiredCount=1,
            deploymentMaximumPercent=beat_maximum,
            deploymentMinimumHealthyPercent=0,
        ),
        target("worker-scaling", "worker-service", worker_min),
    ]
    if beat_target:
        resources.append(target("beat-scaling", "beat-service", 1))
    return resources


def test_service_task_counts_passes_a_scaled_worker_and_an_unscaled_beat() -> None:
    assert validate_stack("service-task-counts", counts_stack()) == []


@pytest.mark.parametrize(
    ("stack", "resource", "expected"),
    [
        (
            counts_stack(worker_min=0),
            "worker-scaling",
            "scaling target 'worker-scaling' of worker "
            "service 'worker-service' has minCapacity 0; set it to at least 1",
        ),
        (
            counts_stack(beat_target=True),
            "beat-scaling",
            "scaling target 'beat-scaling' scales the beat service 'beat-service'; remove it",
        ),
        # Runs beat (its task definition says so) without the tag beat-singleton keys on.
        (
            counts_stack(beat_tag="scheduler", beat_maximum=200),
            "beat-service",
            "beat service 'beat-service' has deploymentMaximumPercent 200; set it to 100",
        ),
    ],
)
def test_service_task_counts_fails_scaling_that_breaks_the_counts(
    stack: list[tuple[str, str, Mapping[str, Any]]], resource: str, expected: str
) -> None:
    ((where, message),) = validate_stack("service-task-counts", stack)
    assert where == resource
    assert expected in message


TASK_DEFINITION = aws_types.ECS_TASK_DEFINITION
WARM = {
    settings.TIME_LIMIT: "66",
    settings.SOFT_SHUTDOWN_TIMEOUT: "0",
    settings.TASK_PROTECTION: "false",
}
COLD = {
    settings.TIME_LIMIT: "1980",
    settings.SOFT_SHUTDOWN_TIMEOUT: "110",
    settings.TASK_PROTECTION: "true",
    settings.REMAP_SIGTERM: "SIGQUIT",
}


def containers(*definitions: dict[str, Any]) -> dict[str, Any]:
    """Task definition inputs with these containers (``env`` becomes ``environment``)."""
    rendered_definitions = []
    for definition in definitions:
        environment = definition.pop("env", {})
        definition["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
        rendered_definitions.append(definition)
    return {
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": json.dumps(rendered_definitions),
    }


def worker(stop: int | None, env: dict[str, str], name: str = "worker") -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": name,
        "env": dict(env),
        "command": list(worker_command("p", ["default"], 2)),
    }
    if stop is not None:
        definition["stopTimeout"] = stop
    return definition


def test_stop_timeouts_within_the_budget_pass() -> None:
    props = containers(
        worker(76, WARM, "warm"),
        worker(120, COLD, "cold"),
        {
            "name": "web",
            "command": list(WEB_COMMAND),
            "stopTimeout": 40,
            "env": {settings.WEB_REQUEST_TIMEOUT: "30"},
        },
        {"name": "beat", "command": ["celery", "--app", "a", "beat"], "stopTimeout": 10},
        {"name": "enqueue", "command": list(ENQUEUE_DEFAULT_COMMAND), "stopTimeout": 10},
    )
    assert validate("stop-timeout-within-budget", TASK_DEFINITION, props) == []


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (
            worker(75, WARM),
            "container 'worker' of task definition 'subject' has stopTimeout 75 "
            "but needs at least 76 (warm shutdown: a running task may take up to "
            "CELERY_TASK_TIME_LIMIT=66 s, then 10 s to exit); set stopTimeout to 76",
        ),
        (worker(None, WARM), "sets no stopTimeout (Fargate then waits 30 s); set it to 76"),
        (
            worker(121, {**WARM, settings.TIME_LIMIT: "100"}),
            "has stopTimeout 121, above Fargate's cap of 120 s; set it to 110",
        ),
        (
            worker(120, {**WARM, settings.TIME_LIMIT: "115"}),
            "needs a stopTimeout of 125 s "
            "(warm shutdown: a running task may take up to CELERY_TASK_TIME_LIMIT=115 s, then 10 s "
            "to exit), more than Fargate's 120 s",
        ),
        (
            worker(119, COLD),
            "has stopTimeout 119 but needs at least 120 (cold shutdown: "
            "CELERY_SOFT_SHUTDOWN_TIMEOUT=110 s of grace",
        ),
        (
            worker(120, {**COLD, settings.TASK_PROTECTION: "false"}),
            "stops in cold shutdown "
            "(REMAP_SIGTERM=SIGQUIT) without CELERY_TASK_PROTECTION=true; set it",
        ),
        (
            worker(60, {}),
            "is a Celery worker: its environment has no whole-second CELERY_TASK_TIME_LIMIT",
        ),
        (
            {
                "name": "web",
                "command": list(WEB_COMMAND),
                "stopTimeout": 39,
                "env": {settings.WEB_REQUEST_TIMEOUT: "30"},
            },
            "has stopTimeout 39 but needs at least "
            "40 (a request in flight at SIGTERM may take WEB_REQUEST_TIMEOUT=30 s",
        ),
        # Without the variable the app's default (30 s) applies.
        ({"name": "web", "command": list(WEB_COMMAND), "stopTimeout": 30}, "needs at least 40"),
        (
            {"name": "beat", "command": ["celery", "beat"], "stopTimeout": 5},
            "has stopTimeout 5 but needs at least 10 (10 s to finish and exit)",
        ),
    ],
)
def test_stop_timeouts_outside_the_budget_fail(definition: dict[str, Any], expected: str) -> None:
    (message,) = validate("stop-timeout-within-budget", TASK_DEFINITION, containers(definition))
    assert expected in message


HARDENED = {
    "name": "web",
    "user": "10001:10001",
    "readonlyRootFilesystem": True,
    "logConfiguration": {"logDriver": "awslogs"},
}


def test_hardened_containers_pass() -> None:
    assert validate("containers-hardened", TASK_DEFINITION, containers(dict(HARDENED))) == []


def test_a_task_sharing_the_hosts_process_namespace_fails() -> None:
    props = {**containers(dict(HARDENED)), "pidMode": "host"}
    assert validate("containers-hardened", TASK_DEFINITION, props) == [
        "task definition 'subject' shares the host's process namespace (pidMode host); remove "
        "pidMode (ECS.3)"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"readonlyRootFilesystem": False},
            "has a writable root filesystem; set readonlyRootFilesystem to true",
        ),
        ({"readonlyRootFilesystem": None}, "has a writable root filesystem"),
        ({"user": None}, "sets no user, so it runs as the image's user"),
        ({"user": "0:0"}, "runs as user '0:0'; set user to a non-root uid:gid"),
        ({"user": "root"}, "runs as user 'root'"),
        ({"privileged": True}, "is privileged; remove privileged (ECS.4)"),
        ({"logConfiguration": None}, "has no logConfiguration"),
    ],
)
def test_unhardened_containers_fail(change: dict[str, Any], expected: str) -> None:
    definition = {k: v for k, v in {**HARDENED, **change}.items() if v is not None}
    (message,) = validate("containers-hardened", TASK_DEFINITION, containers(definition))
    assert message.startswith("container 'web' of task definition 'subject' ")
    assert expected in message


def test_environments_without_secrets_pass() -> None:
    # Every variable the app reads, plus names that only mention keys or secrets by reference.
    environment = {name: default for name, (default, _) in settings.ENV_VARS.items()}
    environment |= {
        "CELERY_RESULT_KEY_PREFIX": "celery-task-meta-",
        "BROKER_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x",
        settings.BROKER_URL: "rediss://master.example:6379/0",
    }
    props = containers({"name": "web", "env": environment})
    assert validate("no-secrets-in-environment", TASK_DEFINITION, props) == []


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("DB_PASSWORD", "hunter2", "its name contains PASSWORD"),
        ("API_TOKEN", "t0k3n", "its name contains TOKEN"),
        ("AWS_SECRET_ACCESS_KEY", "abc", "its name contains KEY"),
        ("stripe_key", "sk_live", "its name contains KEY"),
        ("SERVICE_CREDENTIALS", "{}", "its name contains CREDENTIALS"),
        (
            "CELERY_BROKER_URL",
            "rediss://:MockToken0%21@master.example:6379/0",
            "its value is a URL with a password in it",
        ),
        ("UPSTREAM", "https://user:pw@example.com/", "its value is a URL with a password in it"),
        ("ID", "AKIAABCDEFGHIJKLMNOP", "its value is an AWS access key id"),
        ("CERT", "-----BEGIN RSA PRIVATE KEY-----\nabc", "its value is a private key"),
    ],
)
def test_secret_looking_environment_fails_without_echoing_it(
    name: str, value: str, reason: str
) -> None:
    assert secret_reason(name, value) == reason
    props = containers({"name": "web", "env": {name: value}})
    (message,) = validate("no-secrets-in-environment", TASK_DEFINITION, props)
    assert f"has {name} in its environment, which looks like a secret ({reason})" in message
    assert "move it to the container's secrets" in message
    assert value not in message


REPLICATION_GROUP = aws_types.ELASTICACHE_REPLICATION_GROUP
BROKER = {
    "engine": "valkey",
    "transitEncryptionEnabled": True,
    "transitEncryptionMode": "required",
    "atRestEncryptionEnabled": True,
    "authToken": "x" * 64,
    "clusterMode": "disabled",
    "numCacheClusters": 2,
    "autoMinorVersionUpgrade": True,
    "parameterGroupName": "broker-abc1234",
    "subnetGroupName": "broker-abc1234",
}


def test_hardened_broker_passes() -> None:
    assert validate("broker-hardened", REPLICATION_GROUP, BROKER) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"transitEncryptionEnabled": False}, "has no in-transit encryption"),
        (
            {"transitEncryptionMode": "preferred"},
            "transitEncryptionMode 'preferred', which still accepts plain-text clients",
        ),
        ({"atRestEncryptionEnabled": None}, "is not encrypted at rest"),
        ({"authToken": None}, "has no AUTH token; set authToken"),
        ({"clusterMode": "enabled"}, "runs in cluster mode"),
        ({"numNodeGroups": 2}, "runs in cluster mode"),
        ({"autoMinorVersionUpgrade": False}, "turns off minor version upgrades"),
        ({"parameterGroupName": "default.valkey8"}, "uses the parameter group 'default.valkey8'"),
        ({"engine": "memcached"}, "runs 'memcached'; Celery needs redis or valkey"),
        ({"subnetGroupName": None}, "uses the subnet group None; give it its own subnet group"),
        ({"subnetGroupName": "default"}, "uses the subnet group 'default'"),
    ],
)
def test_unhardened_broker_fails(change: dict[str, Any], expected: str) -> None:
    props = {k: v for k, v in {**BROKER, **change}.items() if v is not None}
    (message,) = validate("broker-hardened", REPLICATION_GROUP, props)
    assert message.startswith("broker replication group 'subject' ")
    assert expected in message


def broker_stack(
    policy: str, *, group: str = "broker-abc1234", value: str = "noeviction"
) -> list[tuple[str, str]]:
    return validate_stack(
        policy,
        [
            (REPLICATION_GROUP, "broker", {"parameterGroupName": group}),
            (
                aws_types.ELASTICACHE_PARAMETER_GROUP,
                "broker",
                {
                    "name": "broker-abc1234",
                    "family": "valkey8",
                    "parameters": [{"name": "maxmemory-policy", "value": value}],
                },
            ),
        ],
    )


def test_broker_never_evicts() -> None:
    assert broker_stack("broker-never-evicts") == []
    ((where, message),) = broker_stack("broker-never-evicts", value="volatile-lru")
    assert where == "broker"
    assert message.startswith(
        "parameter group 'broker' of broker replication group 'broker' "
        "has maxmemory-policy 'volatile-lru'; set it to 'noeviction'"
    )
    ((where, message),) = broker_stack("broker-never-evicts", group="shared-params")
    assert "uses the parameter group 'shared-params', which this stack does not define" in message


VPC_ID, BROKER_SG, TASK_SG = "vpc-1", "sg-broker", "sg-tasks"


def ec2(kind: str, resource_id: str, with_id: bool) -> dict[str, str]:
    """An EC2 resource's identity in its outputs: its ARN, and its id unless ``with_id`` is
    false (the policies then read the id from the ARN)."""
    arn = {"arn": f"arn:aws:ec2:us-east-1:123456789012:{kind}/{resource_id}"}
    return {**arn, "id": resource_id} if with_id else arn


def network(
    *rules: tuple[str, str, Mapping[str, Any]],
    vpc: bool = True,
    inline: list[dict[str, Any]] | None = None,
    ids: bool = True,
) -> list[tuple[str, str, Mapping[str, Any]]]:
    broker_group = {**ec2("security-group", BROKER_SG, ids), "vpcId": VPC_ID}
    resources: list[tuple[str, str, Mapping[str, Any]]] = [
        (REPLICATION_GROUP, "broker", {"securityGroupIds": [BROKER_SG]}),
        (
            aws_types.EC2_SECURITY_GROUP,
            "network-broker",
            {**broker_group, **({"ingress": inline} if inline else {})},
        ),
        (
            aws_types.EC2_SECURITY_GROUP,
            "network-tasks",
            {**ec2("security-group", TASK_SG, ids), "vpcId": VPC_ID},
        ),
        *rules,
    ]
    if vpc:
        resources.append(
            (
                aws_types.EC2_VPC,
                "network-vpc",
                {**ec2("vpc", VPC_ID, ids), "cidrBlock": "10.0.0.0/16"},
            )
        )
    return resources


def ingress(name: str, **source: Any) -> tuple[str, str, Mapping[str, Any]]:
    return (
        aws_types.VPC_SECURITY_GROUP_INGRESS_RULE,
        name,
        {
            "securityGroupId": BROKER_SG,
            "ipProtocol": "tcp",
            "fromPort": 6379,
            "toPort": 6379,
            **source,
        },
    )


def test_broker_reachable_from_the_tasks_and_the_vpc_passes() -> None:
    stack = network(
        ingress("from-tasks", referencedSecurityGroupId=TASK_SG),
        ingress("from-subnet", cidrIpv4="10.0.128.0/20"),
        (
            aws_types.EC2_SECURITY_GROUP_RULE,
            "legacy",
            {"securityGroupId": BROKER_SG, "type": "ingress", "sourceSecurityGroupId": TASK_SG},
        ),
        # Egress and other groups' rules are not the broker's way in.
        (
            aws_types.VPC_SECURITY_GROUP_INGRESS_RULE,
            "alb-http-in",
            {"securityGroupId": TASK_SG, "cidrIpv4": "0.0.0.0/0"},
        ),
        inline=[{"securityGroups": [TASK_SG], "self": True}],
    )
    assert validate_stack("broker-only-from-vpc", stack) == []


@pytest.mark.parametrize(
    ("stack", "resource", "expected"),
    [
        (
            network(ingress("open", cidrIpv4="0.0.0.0/0")),
            "open",
            "'open' lets 0.0.0.0/0 (outside the VPC's 10.0.0.0/16) reach broker replication group "
            "'broker' (security group 'network-broker'); admit only the tasks' security groups",
        ),
        # Found by the ARN when the outputs carry no id.
        (
            network(ingress("open", cidrIpv4="0.0.0.0/0"), ids=False),
            "open",
            "'open' lets 0.0.0.0/0 (outside the VPC's 10.0.0.0/16) reach",
        ),
        (network(ingress("ipv6", cidrIpv6="::/0")), "ipv6", "lets ipv6 ::/0 reach"),
        (network(ingress("list", prefixListId="pl-123")), "list", "lets prefix-list pl-123 reach"),
        (network(ingress("peer", cidrIpv4="10.1.0.0/16")), "peer", "10.1.0.0/16 (outside"),
        (
            network(ingress("no-vpc", cidrIpv4="10.0.0.0/24"), vpc=False),
            "no-vpc",
            "10.0.0.0/24 (the VPC is not in this stack, so its range is unknown)",
        ),
        (
            network(inline=[{"cidrBlocks": ["203.0.113.0/24"]}]),
            "network-broker",
            "lets 203.0.113.0/24 (outside",
        ),
        (
            network(
                (
                    aws_types.EC2_SECURITY_GROUP_RULE,
                    "rule",
                    {"securityGroupId": BROKER_SG, "type": "ingress", "cidrBlocks": ["0.0.0.0/0"]},
                )
            ),
            "rule",
            "lets 0.0.0.0/0",
        ),
        (
            network()[:1],
            "broker",
            "uses security group 'sg-broker', which this stack does not define",
        ),
    ],
)
def test_broker_reachable_from_outside_the_vpc_fails(
    stack: list[tuple[str, str, Mapping[str, Any]]], resource: str, expected: str
) -> None:
    ((where, message),) = validate_stack("broker-only-from-vpc", stack)
    assert where == resource
    assert expected in message


def test_log_retention() -> None:
    log_group = aws_types.CLOUDWATCH_LOG_GROUP
    assert validate("log-retention-set", log_group, {"retentionInDays": 30}) == []
    for props in ({}, {"retentionInDays": 0}):
        (message,) = validate("log-retention-set", log_group, props)
        assert message.startswith("log group 'subject' keeps its logs forever")
        assert "set retentionInDays" in message


def test_ecr_scans_on_push_with_immutable_tags() -> None:
    repository = aws_types.ECR_REPOSITORY
    good = {"imageTagMutability": "IMMUTABLE", "imageScanningConfiguration": {"scanOnPush": True}}
    assert validate("ecr-scan-and-immutable-tags", repository, good) == []
    mutable = validate(
        "ecr-scan-and-immutable-tags", repository, {**good, "imageTagMutability": "MUTABLE"}
    )
    assert mutable == [
        "ECR repository 'subject' has imageTagMutability 'MUTABLE'; set it to "
        "'IMMUTABLE' so a pushed tag always means the same image (ECR.2)"
    ]
    unscanned, default_tags = validate("ecr-scan-and-immutable-tags", repository, {})
    assert "does not scan images on push" in unscanned
    assert "imageTagMutability absent (ECR's default MUTABLE)" in default_tags


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


EXACT = {"Effect": "Allow", "Action": ["ecs:RunTask"], "Resource": "*"}
TLS_ONLY = {
    "Effect": "Deny",
    "Principal": "*",
    "Action": "sqs:*",
    "Resource": "arn:q",
    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
}


#: The alert topic's key policy and topic policy, as infra/notifications.py writes them.
KEY_OWNER = {
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
    "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:PutKeyPolicy"],
    # In a key policy "*" is the key itself.
    "Resource": "*",
}
TOPIC_PUBLISH = {
    "Effect": "Allow",
    "Principal": {"Service": "cloudwatch.amazonaws.com"},
    "Action": "sns:Publish",
    "Resource": "arn:aws:sns:us-east-1:123456789012:alerts",
}
TOPIC_TLS_ONLY = {**TLS_ONLY, "Action": "sns:Publish", "Resource": TOPIC_PUBLISH["Resource"]}


def test_exact_iam_actions_pass() -> None:
    # A resource wildcard is not an action wildcard; a Deny with a wildcard only takes away.
    assert (
        validate(
            "iam-no-wildcard-actions", aws_types.IAM_ROLE_POLICY, {"policy": document(EXACT)}
        )
        == []
    )
    for resource_type, props in (
        (aws_types.SQS_QUEUE_POLICY, {"policy": document(TLS_ONLY)}),
        (aws_types.KMS_KEY, {"policy": document(KEY_OWNER), "enableKeyRotation": True}),
        (aws_types.SNS_TOPIC_POLICY, {"policy": document(TOPIC_PUBLISH, TOPIC_TLS_ONLY)}),
    ):
        assert validate("iam-no-wildcard-actions", resource_type, props) == [], resource_type


@pytest.mark.parametrize(
    ("resource_type", "props", "grant"),
    [
        (
            aws_types.IAM_ROLE_POLICY,
            {"policy": document({**EXACT, "Action": "*"})},
            "Action '*'",
        ),
        (
            aws_types.IAM_POLICY,
            {"policy": document({**EXACT, "Action": ["s3:*"]})},
            "Action 's3:*'",
        ),
        (
            aws_types.IAM_POLICY,
            {"policy": document({**EXACT, "Action": "s3:Get*"})},
            "Action 's3:Get*'",
        ),
        (
            aws_types.IAM_ROLE_POLICY,
            {"policy": document({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})},
            'NotAction ["iam:*"]',
        ),
        (
            aws_types.IAM_ROLE,
            {"assumeRolePolicy": document({**EXACT, "Action": "sts:*"})},
            "Action 'sts:*'",
        ),
        (
            aws_types.IAM_ROLE,
            {
                "inlinePolicies": [
                    {"name": "inline", "policy": document({**EXACT, "Action": "ecs:*"})}
                ]
            },
            "Action 'ecs:*'",
        ),
        (
            aws_types.SQS_QUEUE_POLICY,
            {"policy": document(TLS_ONLY, {**EXACT, "Action": "sqs:*"})},
            "Action 'sqs:*'",
        ),
        (
            aws_types.KMS_KEY,
            {"policy": document({**KEY_OWNER, "Action": "kms:*"})},
            "Action 'kms:*'",
        ),
        (
            aws_types.KMS_KEY_POLICY,
            {"policy": document({**KEY_OWNER, "Action": ["kms:Decrypt", "kms:Generate*"]})},
            "Action 'kms:Generate*'",
        ),
        (
            aws_types.SNS_TOPIC_POLICY,
            {"policy": document({**TOPIC_PUBLISH, "Action": "sns:*"}, TOPIC_TLS_ONLY)},
            "Action 'sns:*'",
        ),
        (
            aws_types.SNS_TOPIC,
            {"policy": document({**TOPIC_PUBLISH, "NotAction": "sns:Subscribe"})},
            'NotAction ["sns:Subscribe"]',
        ),
    ],
)
def test_wildcard_iam_actions_fail(resource_type: str, props: dict[str, Any], grant: str) -> None:
    (message,) = validate("iam-no-wildcard-actions", resource_type, props)
    assert message.startswith("'subject' (")
    assert f"allows {grant}; name the exact actions the role needs" in message


PUT_METRICS = {
    "Effect": "Allow",
    "Action": ["cloudwatch:PutMetricData"],
    "Resource": "*",
    "Condition": {"StringEquals": {"cloudwatch:namespace": "CeleryEcs/celery-ecs-dev"}},
}
REGISTRY_LOGIN = {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"}


def test_star_resources_only_for_actions_without_resource_permissions() -> None:
    policy = "iam-star-resource-only-where-unscoped"
    role_policy = aws_types.IAM_ROLE_POLICY
    scoped = {**EXACT, "Resource": ["arn:aws:ecs:us-east-1:123456789012:task/c/*"]}
    ok = document(PUT_METRICS, REGISTRY_LOGIN, scoped, {**TLS_ONLY, "Resource": "*"})
    assert validate(policy, role_policy, {"policy": ok}) == []
    # A key policy's "*" is its key; a trust policy has no Resource: neither is checked.
    assert validate(policy, aws_types.KMS_KEY, {"policy": document(KEY_OWNER)}) == []

    unconditioned = {key: value for key, value in PUT_METRICS.items() if key != "Condition"}
    wildcard_namespace = {
        **PUT_METRICS, "Condition": {"StringLike": {"cloudwatch:namespace": "CeleryEcs/*"}}
    }  # fmt: skip
    other_key = {**PUT_METRICS, "Condition": {"StringEquals": {"aws:RequestedRegion": "x"}}}
    for statement in (unconditioned, wildcard_namespace, other_key):
        (message,) = validate(policy, role_policy, {"policy": document(statement)})
        assert message == (
            "'subject' (policy) allows 'cloudwatch:PutMetricData' on every resource without a "
            "condition on 'cloudwatch:namespace' (IAM least privilege)"
        )
    (message,) = validate(
        policy,
        aws_types.IAM_ROLE,
        {"inlinePolicies": [{"name": "inline", "policy": document(EXACT)}]},
    )
    assert message == (
        "'subject' (inline policy 'inline') allows 'ecs:RunTask' on every resource; name the "
        "resources it needs (IAM least privilege)"
    )


def test_the_star_actions_are_the_programs_and_awss() -> None:
    """The restated table against the program's condition key and parliament's copy of the
    Service Authorization Reference: no resource type, and exactly the key it offers."""
    import parliament  # loads its 10 MB of IAM definitions: only here

    assert iam.STAR_RESOURCE_ACTIONS[PUT_METRIC_DATA_ACTION.lower()] == (
        NAMESPACE_CONDITION_KEY
    )
    privileges = {
        f"{service['prefix']}:{privilege['privilege']}".lower(): privilege["resource_types"]
        for service in parliament.iam_definition
        for privilege in service["privileges"]
    }
    for action, key in iam.STAR_RESOURCE_ACTIONS.items():
        (entry,) = privileges[action]
        assert entry["resource_type"] == "", action
        own = [k for k in entry["condition_keys"] if k.startswith(action.split(":")[0] + ":")]
        assert own == ([] if key is None else [key]), action


def test_load_balancer_drops_invalid_headers() -> None:
    balancer = aws_types.LB_LOAD_BALANCER
    good = {
        "loadBalancerType": "application",
        "dropInvalidHeaderFields": True,
        "desyncMitigationMode": "defensive",
    }
    assert validate("load-balancer-drops-invalid-headers", balancer, good) == []
    (message,) = validate(
        "load-balancer-drops-invalid-headers", balancer, {**good, "dropInvalidHeaderFields": False}
    )
    assert message == (
        "load balancer 'subject' forwards invalid HTTP headers; set "
        "dropInvalidHeaderFields to true (ELB.4)"
    )
    (message,) = validate(
        "load-balancer-drops-invalid-headers",
        aws_types.ALB_LOAD_BALANCER,
        {"dropInvalidHeaderFields": True, "desyncMitigationMode": "monitor"},
    )
    assert "desyncMitigationMode 'monitor'; set it to 'defensive' or 'strictest'" in message
    # Network load balancers do not parse HTTP.
    assert (
        validate("load-balancer-drops-invalid-headers", balancer, {"loadBalancerType": "network"})
        == []
    )


def test_every_policy_has_its_own_tests() -> None:
    tested = {
        "beat-singleton",
        "worker-keeps-a-task",
        "service-task-counts",
        "stop-timeout-within-budget",
        "containers-hardened",
        "no-secrets-in-environment",
        "broker-hardened",
        "broker-never-evicts",
        "broker-only-from-vpc",
        "log-retention-set",
        "ecr-scan-and-immutable-tags",
        "iam-no-wildcard-actions",
        "iam-star-resource-only-where-unscoped",
        "load-balancer-drops-invalid-headers",
    }
    assert set(POLICY) == tested
    assert {case.policy for case in BREAKS} == tested


# --- the whole pack over the program ------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_the_program_violates_no_policy(stack: str) -> None:
    run = rendered(stack)
    assert check(run) == []
    # Not vacuously: the resources the policies are about are there.
    services = {s.inputs["tags"]["Service"] for s in run.of_type(SERVICE)}
    assert ("beat" in services) is stack.endswith("-beat")
    assert any(name.startswith("worker-") for name in services)
    for typ in (
        TASK_DEFINITION,
        REPLICATION_GROUP,
        aws_types.ELASTICACHE_PARAMETER_GROUP,
        aws_types.APPAUTOSCALING_TARGET,
        aws_types.CLOUDWATCH_LOG_GROUP,
        aws_types.ECR_REPOSITORY,
        aws_types.LB_LOAD_BALANCER,
        aws_types.IAM_ROLE_POLICY,
    ):
        assert run.of_type(typ), typ
    # Production e-mails its alarms: the pack has seen the topic's key and policies.
    alerting = (aws_types.KMS_KEY, aws_types.SNS_TOPIC_POLICY)
    assert all(bool(run.of_type(typ)) is stack.startswith("production") for typ in alerting)


@pytest.mark.parametrize("scheduler", ["beat", "eventbridge"])
@pytest.mark.parametrize(
    "stack_file", sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
)
def test_every_shipped_stack_file_violates_no_policy(stack_file: str, scheduler: str) -> None:
    run = shared_run({**stack_file_config(stack_file), "scheduler": scheduler})
    assert check(run) == []
    assert run.of_type(SERVICE) and run.of_type(TASK_DEFINITION)


@pytest.mark.parametrize("scheduler", ["beat", "eventbridge"])
def test_dev_and_production_differ_where_the_baseline_says(scheduler: str) -> None:
    """The docs' security baseline: what dev leaves off and production turns on."""
    dev, production = rendered(f"dev-{scheduler}"), rendered(f"production-{scheduler}")
    for run, is_production in ((dev, False), (production, True)):
        # ECS.2: public IPs on tasks only without NAT (dev's default).
        public = {s.inputs["networkConfiguration"]["assignPublicIp"] for s in run.of_type(SERVICE)}
        assert public == {not is_production}
        # ECS.12: Container Insights in production; dev reads the workers' own metrics.
        (cluster,) = run.of_type(aws_types.ECS_CLUSTER)
        insights = "enabled" if is_production else "disabled"
        assert cluster.inputs["settings"] == [{"name": "containerInsights", "value": insights}]
        # ElastiCache.1 and .3: backups in both, failover with production's replica.
        group = run.one(REPLICATION_GROUP).inputs
        assert group["snapshotRetentionLimit"] >= 1
        assert group["automaticFailoverEnabled"] is group["multiAzEnabled"] is is_production
        # ELB.1, .5, .6, .17: HTTPS, access logs, deletion protection (production as configured).
        balancer = run.one(aws_types.LB_LOAD_BALANCER).inputs
        assert balancer["enableDeletionProtection"] is is_production
        assert ("accessLogs" in balancer) is is_production
        listeners = {x.inputs["port"]: x.inputs for x in run.of_type(aws_types.LB_LISTENER)}
        assert set(listeners) == ({80, 443} if is_production else {80})
        if is_production:
            assert listeners[443]["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
            assert listeners[80]["defaultActions"][0]["type"] == "redirect"
        # EC2.6: flow logs of rejected traffic in production.
        assert len(run.of_type(aws_types.EC2_FLOW_LOG)) == int(is_production)
        # CloudWatch.16: 30 days in dev, 365 in production, on every log group.
        log_groups = run.of_type(aws_types.CLOUDWATCH_LOG_GROUP)
        retention = {g.inputs["retentionInDays"] for g in log_groups}
        assert retention == {365 if is_production else 30}
        # SQS.1: the one queue (the EventBridge dead letters) is encrypted.
        queues = run.of_type(aws_types.SQS_QUEUE)
        assert len(queues) == (scheduler == "eventbridge")
        assert all(q.inputs["sqsManagedSseEnabled"] is True for q in queues)
        # ECS.3, ECS.17: no host PID or network mode; ECS.16: no task sets at all.
        for task in run.of_type(TASK_DEFINITION):
            assert "pidMode" not in task.inputs and task.inputs["networkMode"] == "awsvpc"
        assert not run.of_type(aws_types.ECS_TASK_SET)
        # SNS.1, KMS.4: production's alert topic is encrypted with its own key, rotated yearly;
        # dev e-mails nobody, so it has neither.
        topics = run.of_type(aws_types.SNS_TOPIC)
        keys = run.of_type(aws_types.KMS_KEY)
        assert len(topics) == len(keys) == int(is_production)
        for topic, key in zip(topics, keys, strict=True):
            assert topic.inputs["kmsMasterKeyId"] == key.state["arn"]
        assert all(k.inputs["enableKeyRotation"] is True for k in keys)
        # CloudWatch.15: every alarm acts. Scaling alarms drive their policy; the operator's
        # alarms notify the topic, which only production has.
        for alarm in run.of_type(aws_types.CLOUDWATCH_METRIC_ALARM):
            actions = alarm.inputs.get("alarmActions") or []
            drives_scaling = any(":scalingPolicy:" in a for a in actions)
            assert bool(actions) is (is_production or drives_scaling), alarm.name


# --- a deliberate break of each invariant is caught, and nothing else ---------------------------

#: An edit of one resource's props, as the mocks recorded them: the engine's (camelCase) names,
#: JSON documents as text.
Edit = Callable[[dict[str, Any]], None]


def setting(**values: Any) -> Edit:
    """Set props; ``None`` removes one (the engine sends no null prop)."""

    def edit(props: dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                props.pop(key, None)
            else:
                props[key] = value

    return edit


def in_json(key: str, change: Callable[[Any], None]) -> Edit:
    """Edit the JSON document held as text in ``props[key]``."""

    def edit(props: dict[str, Any]) -> None:
        value = json.loads(props[key])
        change(value)
        props[key] = json.dumps(value)

    return edit


def first_container(**values: Any) -> Edit:
    return in_json("containerDefinitions", lambda containers: containers[0].update(values))


def add_environment(name: str, value: str) -> Edit:
    def change(containers: list[dict[str, Any]]) -> None:
        containers[0]["environment"].append({"name": name, "value": value})

    return in_json("containerDefinitions", change)


def first_statement(**values: Any) -> Edit:
    return in_json("policy", lambda document: document["Statement"][0].update(values))


class Break:
    """One invariant broken in the rendered program, and the one violation the pack must
    report (in ``stack``, one of ``STACKS``).

    The edit is made to the rendered resource (its inputs, and the outputs the mocks answered
    with), not through a transformation of a new run: the pack reads only what the run
    recorded, and the program renders once per stack instead of once per break."""

    def __init__(
        self,
        policy: str,
        resource_type: str,
        name: str,
        edit: Edit,
        expected: str,
        stack: str = "dev-beat",
    ) -> None:
        self.policy, self.resource_type, self.resource = policy, resource_type, name
        self.edit, self.expected, self.stack = edit, expected, stack

    def __repr__(self) -> str:
        return f"{self.policy}:{self.resource}"

    def broken_run(self) -> ProgramRun:
        """The stack's run (a copy of its own) with this break made."""
        run = rendered(self.stack)
        target = run.named(self.resource_type, self.resource)
        self.edit(target.inputs)
        self.edit(target.state)
        return run


BREAKS = [
    Break(
        "beat-singleton",
        SERVICE,
        "beat-service",
        setting(deploymentMaximumPercent=200),
        "beat service 'beat-service' has deploymentMaximumPercent 200; set it to 100 so ECS "
        "stops the old beat before it starts the new one",
    ),
    Break(
        "worker-keeps-a-task",
        SERVICE,
        "worker-default-service",
        setting(desiredCount=0),
        "worker service 'worker-default-service' has desiredCount 0; set it to at least 1",
    ),
    Break(
        "service-task-counts",
        aws_types.APPAUTOSCALING_TARGET,
        "worker-long-scaling",
        setting(minCapacity=0),
        "scaling target 'worker-long-scaling' of worker service "
        "'worker-long-service' has minCapacity 0; set it to at least 1",
    ),
    Break(
        "service-task-counts",
        SERVICE,
        "beat-service",
        setting(tags={"Service": "scheduler"}, deploymentMaximumPercent=200),
        "beat service 'beat-service' has deploymentMaximumPercent 200",
    ),
    Break(
        "stop-timeout-within-budget",
        TASK_DEFINITION,
        "worker-default-task",
        first_container(stopTimeout=60),
        "container 'worker' of task definition "
        "'worker-default-task' has stopTimeout 60 but needs at least 76",
    ),
    Break(
        "stop-timeout-within-budget",
        TASK_DEFINITION,
        "worker-long-task",
        first_container(stopTimeout=121),
        "has stopTimeout 121, above Fargate's cap of 120 s",
    ),
    Break(
        "containers-hardened",
        TASK_DEFINITION,
        "web-task",
        first_container(readonlyRootFilesystem=False),
        "container 'web' of task definition 'web-task' has a writable root filesystem",
    ),
    Break(
        "containers-hardened",
        TASK_DEFINITION,
        "beat-task",
        first_container(user="root"),
        "container 'beat' of task definition 'beat-task' runs as user 'root'",
    ),
    Break(
        "no-secrets-in-environment",
        TASK_DEFINITION,
        "web-task",
        add_environment("PAYMENTS_API_KEY", "sk_live_abc"),
        "container 'web' of task definition 'web-task' has PAYMENTS_API_KEY in its environment",
    ),
    Break(
        "broker-hardened",
        REPLICATION_GROUP,
        "broker",
        setting(transitEncryptionEnabled=False),
        "broker replication group 'broker' has no in-transit encryption",
    ),
    Break(
        "broker-hardened",
        REPLICATION_GROUP,
        "broker",
        setting(clusterMode="enabled"),
        "runs in cluster mode",
    ),
    Break(
        "broker-never-evicts",
        aws_types.ELASTICACHE_PARAMETER_GROUP,
        "broker",
        setting(parameters=[{"name": "maxmemory-policy", "value": "allkeys-lru"}]),
        "has maxmemory-policy 'allkeys-lru'; set it to 'noeviction'",
    ),
    Break(
        "broker-only-from-vpc",
        aws_types.VPC_SECURITY_GROUP_INGRESS_RULE,
        "network-broker-from-web",
        setting(cidrIpv4="0.0.0.0/0", referencedSecurityGroupId=None),
        "'network-broker-from-web' lets 0.0.0.0/0 (outside the VPC's 10.0.0.0/16) reach "
        "broker replication group 'broker'",
    ),
    Break(
        "log-retention-set",
        aws_types.CLOUDWATCH_LOG_GROUP,
        "cluster-web",
        setting(retentionInDays=None),
        "log group 'cluster-web' keeps its logs forever",
    ),
    Break(
        "ecr-scan-and-immutable-tags",
        aws_types.ECR_REPOSITORY,
        "celery-ecs-test",
        setting(imageTagMutability="MUTABLE"),
        "has imageTagMutability 'MUTABLE'",
    ),
    Break(
        "iam-no-wildcard-actions",
        aws_types.IAM_ROLE_POLICY,
        "worker-long-task",
        first_statement(Action=["ecs:*"]),
        "'worker-long-task' (policy) allows Action 'ecs:*'",
    ),
    Break(
        "iam-no-wildcard-actions",
        aws_types.KMS_KEY,
        "notifications-key",
        first_statement(Action="kms:*"),
        "'notifications-key' (policy) allows Action 'kms:*'",
        stack="production-beat",
    ),
    Break(
        "iam-no-wildcard-actions",
        aws_types.SNS_TOPIC_POLICY,
        "notifications-topic",
        first_statement(Action=["sns:*"]),
        "'notifications-topic' (policy) allows Action 'sns:*'",
        stack="production-eventbridge",
    ),
    Break(
        "iam-star-resource-only-where-unscoped",
        aws_types.IAM_ROLE_POLICY,
        "worker-long-task",
        in_json(
            "policy",
            lambda document: [
                statement.pop("Condition", None)
                for statement in document["Statement"]
                if statement["Action"] == ["cloudwatch:PutMetricData"]
            ],
        ),
        "'worker-long-task' (policy) allows 'cloudwatch:PutMetricData' on every resource "
        "without a condition on 'cloudwatch:namespace'",
    ),
    Break(
        "load-balancer-drops-invalid-headers",
        aws_types.LB_LOAD_BALANCER,
        "web-alb",
        setting(dropInvalidHeaderFields=False),
        "load balancer 'web-alb' forwards invalid HTTP headers",
    ),
]


@pytest.mark.parametrize("broken", BREAKS, ids=repr)
def test_a_broken_invariant_is_caught_and_nothing_else(broken: Break) -> None:
    violations = check(broken.broken_run())
    assert [(v.policy, v.resource) for v in violations] == [(broken.policy, broken.resource)]
    assert broken.expected in violations[0].message


# --- the pack as the engine runs it -------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """policy/__main__.py started the way Pulumi's Python language host starts a policy pack
    (``python -u -m pulumi.policy <engine> <pack directory>``): it prints its gRPC port."""
    with running_pack(Path(sys.executable), ROOT / "policy") as stub:
        yield stub


def test_the_pack_declares_every_policy_mandatory(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "celery-ecs-invariants"
    assert [policy.name for policy in info.policies] == [policy.name for policy in POLICIES]
    assert {policy.enforcementLevel for policy in info.policies} == {analyzer_pb2.MANDATORY}
    stack_policies = {p.name for p in POLICIES if isinstance(p, StackValidationPolicy)}
    assert {p.name for p in info.policies if p.policy_type == analyzer_pb2.POLICY_TYPE_STACK} == (
        stack_policies
    )


def test_the_pack_blocks_a_two_beat_deploy_over_grpc(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    beat = rendered("dev-beat").named(SERVICE, "beat-service")
    request = analyzer_pb2.AnalyzeRequest(
        type=beat.type,
        name=beat.name,
        urn=beat.urn,
        properties=struct({**beat.inputs, "deploymentMaximumPercent": 200}),
    )
    (diagnostic,) = analyzer.Analyze(request, timeout=30).diagnostics
    assert diagnostic.policyName == "beat-singleton"
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
    assert diagnostic.urn == beat.urn
    assert "deploymentMaximumPercent 200; set it to 100" in diagnostic.message
    assert not analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(
            type=beat.type, name=beat.name, urn=beat.urn, properties=struct(beat.inputs)
        ),
        timeout=30,
    ).diagnostics


def test_a_value_unknown_during_preview_defers_the_check_to_up(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    # A new image's digest is unknown during a preview, so is the container definition.
    request = analyzer_pb2.AnalyzeRequest(
        type=TASK_DEFINITION,
        name="web-task",
        urn=urn(TASK_DEFINITION, "web-task"),
        properties=struct(
            {"containerDefinitions": UNKNOWN_STRING_VALUE, "requiresCompatibilities": ["FARGATE"]}
        ),
    )
    diagnostics = analyzer.Analyze(request, timeout=30).diagnostics
    assert {d.enforcementLevel for d in diagnostics} == {analyzer_pb2.ADVISORY}
    assert all("during preview" in d.message for d in diagnostics)


def test_the_pack_checks_the_stack_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    run = next(b for b in BREAKS if b.policy == "broker-only-from-vpc").broken_run()
    resources = [
        analyzer_pb2.AnalyzerResource(
            type=r.type,
            name=r.name,
            urn=r.urn,
            parent=r.parent,
            properties=struct({**r.state, "id": r.id}),
        )
        for r in run.resources
        if r.custom
    ]
    response = analyzer.AnalyzeStack(
        analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=30
    )
    (diagnostic,) = response.diagnostics
    assert diagnostic.policyName == "broker-only-from-vpc"
    rule = run.named(aws_types.VPC_SECURITY_GROUP_INGRESS_RULE, "network-broker-from-web")
    assert diagnostic.urn == rule.urn


# --- the docs tell the truth about the pack ----------------------------------------------------


def reference_page(name: str) -> str:
    return (ROOT / "docs" / "reference" / f"{name}.md").read_text()


def test_the_docs_list_every_policy() -> None:
    section = reference_page("policy-pack")
    listed = re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M)
    assert listed == [policy.name for policy in POLICIES]


def test_the_security_baseline_cites_only_tests_and_policies_that_exist() -> None:
    section = reference_page("security-baseline")
    rows = [line for line in section.splitlines() if re.match(r"^\| [A-Za-z]+\.\d+", line)]
    assert len(rows) >= 30
    tests = {
        name
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M)
    }
    for row in rows:
        proof = row.rstrip(" |").rsplit("|", 1)[-1]
        cited = re.findall(r"`([\w-]+)`", proof)
        assert cited or "accepted" in proof, row
        for name in cited:
            assert name in tests or name in POLICY, (name, row)


def test_violations_name_the_resource() -> None:
    # What check() reports carries the resource's URN and name, as the engine shows them.
    run = BREAKS[0].broken_run()
    (violation,) = check(run)
    assert violation == Violation(
        policy="beat-singleton",
        resource="beat-service",
        message=violation.message,
        urn=run.named(SERVICE, "beat-service").urn,
    )
