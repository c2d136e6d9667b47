"""The shared Fargate service component: what it checks before it registers anything, and that
web, worker pools and beat each consist of one."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from devtools.render import RecordingMocks
from infra import worker_service as worker
from infra.fargate_service import (
    COMPONENT_TYPE,
    ContainerInputs,
    FargateService,
    FargateServiceArgs,
    TaskPlacement,
)
from policy.invariants import aws_types
from tests.support import run_program, shared_run

ROLE = aws_types.IAM_ROLE
ROLE_POLICY = aws_types.IAM_ROLE_POLICY
TASK_DEFINITION = aws_types.ECS_TASK_DEFINITION
SERVICE = aws_types.ECS_SERVICE


def valid_args(**changes: Any) -> FargateServiceArgs:
    """Arguments ``normalize`` accepts, with ``changes``. ``normalize`` reads of the cluster only
    its log groups and capacity provider names, so a stand-in with those will do."""
    cluster = SimpleNamespace(
        log_groups={"web": object(), "beat": object()},
        capacity_provider_names=("FARGATE", "FARGATE_SPOT"),
    )
    args = FargateServiceArgs(
        cluster=cluster,  # type: ignore[arg-type]
        service="web",
        family="celery-ecs-dev-web",
        cpu=256,
        memory=512,
        container=ContainerInputs(
            name="web",
            image="image@sha256:0",
            command=["serve"],
            environment={},
            stop_timeout=30,
            port=8000,
        ),
        placement=TaskPlacement(["subnet-1"], "sg-1", assign_public_ip=False),
        desired_count=1,
        deployment_timeout=900,
    )
    return dataclasses.replace(args, **changes)


def container(**changes: Any) -> ContainerInputs:
    return dataclasses.replace(valid_args().container, **changes)


def test_valid_arguments_pass_with_their_sequences_as_tuples() -> None:
    args = valid_args(
        task_role_statements=[{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "x"}],
        capacity_provider_strategy=[{"capacity_provider": "FARGATE", "weight": 1}],
        target_group_arns=["arn:tg"],
    )
    normalized = FargateService.normalize(args)
    assert normalized.task_role_statements == tuple(args.task_role_statements)
    assert normalized.capacity_provider_strategy == tuple(args.capacity_provider_strategy)
    assert normalized.target_group_arns == ("arn:tg",)
    # Beat's one-at-a-time deployment, and the default overlap.
    FargateService.normalize(valid_args(minimum_healthy_percent=0, maximum_percent=100))
    FargateService.normalize(
        valid_args(desired_count=2, minimum_healthy_percent=50, maximum_percent=150)
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cpu": 300}, r"cpu: 300 is not allowed; allowed: 256, 512, 1024, .* \(Fargate units\)"),
        (
            {"memory": 4096},
            r"memory: 4096 is not allowed; allowed: with cpu 256: 512, 1024, "
            r"2048 \(MiB\)",
        ),
        (
            {"service": "worker-x"},
            r"service: 'worker-x' is not allowed; allowed: a service the "
            r"cluster has a log group for: web, beat",
        ),
        ({"family": "web family"}, r"family: 'web family' .*allowed: 1\.\.255 letters"),
        ({"family": "f" * 256}, r"family: 'f+' is not allowed"),
        ({"container": container(stop_timeout=0)}, r"container\.stop_timeout: 0 .*1\.\.120"),
        ({"container": container(stop_timeout=121)}, r"container\.stop_timeout: 121 "),
        ({"placement": TaskPlacement([], "sg-1", False)}, r"placement\.subnet_ids: \[\] "),
        ({"desired_count": -1}, r"desired_count: -1 .*allowed: an integer >= 0"),
        ({"deployment_timeout": 0}, r"deployment_timeout: 0 .*allowed: an integer > 0"),
        (
            {"task_role_statements": [{"Action": ["s3:GetObject"]}, {"Action": "s3:*"}]},
            r"task_role_statements\[1\]\.Action: 's3:\*' .*named actions only",
        ),
        ({"minimum_healthy_percent": 101}, r"minimum_healthy_percent: 101 .*allowed: 0\.\.100"),
        ({"maximum_percent": 99}, r"maximum_percent: 99 .*allowed: 100\.\.200"),
        ({"maximum_percent": 201}, r"maximum_percent: 201 "),
        # Neither lets ECS replace the one task: it may neither stop it first nor add another.
        (
            {"maximum_percent": 100},
            r"minimum_healthy_percent/maximum_percent: '100/100' .*"
            r"replace one of 1 tasks",
        ),
        (
            {"minimum_healthy_percent": 50, "maximum_percent": 150},
            r"minimum_healthy_percent/maximum_percent: '50/150' ",
        ),
        (
            {"capacity_provider_strategy": [{"capacity_provider": "EC2", "weight": 1}]},
            r"capacity_provider_strategy\[0\]\.capacity_provider: 'EC2' .*allowed: a capacity "
            r"provider of the cluster: FARGATE, FARGATE_SPOT",
        ),
        (
            {"target_group_arns": ["arn:tg"], "container": container(port=None)},
            r"target_group_arns: .*allowed: only with container\.port",
        ),
        ({"health_check_grace_period": -1}, r"health_check_grace_period: -1 "),
    ],
)
def test_a_wrong_argument_is_refused_by_name_with_what_is_allowed(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        FargateService.normalize(valid_args(**changes))


def test_a_strategy_needs_a_cluster_with_capacity_providers() -> None:
    args = valid_args(capacity_provider_strategy=[{"capacity_provider": "FARGATE"}])
    args.cluster.capacity_provider_names = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"allowed: a capacity provider of the cluster: none$"):
        FargateService.normalize(args)


def test_wrong_arguments_register_nothing_of_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The program's own worker pools, with a strategy naming a provider the cluster lacks.
    monkeypatch.setattr(worker, "REGULAR_STRATEGY", ({"capacity_provider": "EC2", "weight": 1},))
    mocks = RecordingMocks()
    with pytest.raises(ValueError, match=r"capacity_provider_strategy\[0\]\.capacity_provider"):
        run_program({}, mocks=mocks)
    registered = {(r.type, r.name) for r in mocks.registrations}
    assert ("celery-ecs:infra:Worker", "worker-default") in registered
    assert not {(COMPONENT_TYPE, "worker-default"), (ROLE, "worker-default-task")} & registered


@pytest.mark.parametrize(
    ("outer", "name", "children"),
    [
        ("celery-ecs:infra:Web", "web", {ROLE, ROLE_POLICY, TASK_DEFINITION, SERVICE}),
        # The default pool publishes queue metrics: its role has a policy.
        (
            "celery-ecs:infra:Worker",
            "worker-default",
            {ROLE, ROLE_POLICY, TASK_DEFINITION, SERVICE},
        ),
        ("celery-ecs:infra:Beat", "beat", {ROLE, TASK_DEFINITION, SERVICE}),
    ],
)
def test_web_workers_and_beat_each_run_as_one_fargate_service(
    outer: str, name: str, children: set[str]
) -> None:
    run = shared_run()
    (component,) = [r for r in run.resources if r.type == COMPONENT_TYPE and r.name == name]
    (parent,) = [r for r in run.resources if r.urn == component.parent]
    assert (parent.type, parent.name) == (outer, name)
    owned = {r.type for r in run.resources if r.parent == component.urn}
    assert owned == children
    # What the pool, web or beat has beyond it stays theirs (the ALB, the API keys secret).
    assert not {r.type for r in run.resources if r.parent == parent.urn} & children
