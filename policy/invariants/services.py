"""Services: exactly one beat, never two during a deploy; every worker pool keeps a task; the
task counts scaling may set."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    StackValidationArgs,
)

from . import aws_types
from .readers import (
    StackIndex,
    container_command,
    container_definitions,
    container_role,
    number_text,
    service_tag,
    whole_number,
)
from .restated import BEAT_SERVICE, WORKER_SERVICE_PREFIX


def _beat_problems(props: Mapping[str, Any], name: str) -> Iterator[str]:
    where = f"beat service '{name}'"
    desired = props.get("desiredCount")
    if whole_number(desired) != 1:
        yield (
            f"{where} has desiredCount {number_text(desired)}; set it to 1: two beats send every "
            "periodic task twice, none sends nothing"
        )
    maximum = props.get("deploymentMaximumPercent")
    if whole_number(maximum) != 100:
        shown = "absent (ECS's default 200)" if maximum is None else number_text(maximum)
        yield (
            f"{where} has deploymentMaximumPercent {shown}; set it to 100 so ECS stops the old "
            "beat before it starts the new one, never running two during a deploy"
        )
    minimum = props.get("deploymentMinimumHealthyPercent")
    if whole_number(minimum) != 0:
        shown = "absent (ECS's default 100)" if minimum is None else number_text(minimum)
        yield (
            f"{where} has deploymentMinimumHealthyPercent {shown}; set it to 0, or with a "
            "maximum of 100 % ECS can never replace the running beat"
        )


def validate_beat_singleton(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.ECS_SERVICE or service_tag(args.props) != BEAT_SERVICE:
        return
    for problem in _beat_problems(args.props, args.name):
        report(problem, args.urn)


def _worker_problem(props: Mapping[str, Any], name: str) -> str | None:
    desired = props.get("desiredCount")
    count = whole_number(desired)
    if count is None or count < 1:
        return (
            f"worker service '{name}' has desiredCount {number_text(desired)}; set it to at least "
            "1 (the pool's minCount) so its queues never sit without a consumer"
        )
    return None


def validate_worker_keeps_a_task(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.ECS_SERVICE:
        return
    tag = service_tag(args.props)
    if tag is None or not tag.startswith(WORKER_SERVICE_PREFIX):
        return
    problem = _worker_problem(args.props, args.name)
    if problem is not None:
        report(problem, args.urn)


def _service_role(service: PolicyResource, index: StackIndex) -> str:
    """``beat``/``worker``/... from what the service's task definition runs; from its tag when
    the task definition is not in the stack."""
    task_definition = index.find(aws_types.ECS_TASK_DEFINITION, service.props.get("taskDefinition"))
    if task_definition is not None:
        try:
            containers = container_definitions(task_definition.props)
        except ValueError:
            containers = []  # validate_stop_timeouts reports the unreadable definition
        roles = {container_role(container_command(container)) for container in containers}
        for role in ("beat", "worker"):
            if role in roles:
                return role
        if roles:
            return "other"
    tag = service_tag(service.props) or ""
    if tag == BEAT_SERVICE:
        return "beat"
    return "worker" if tag.startswith(WORKER_SERVICE_PREFIX) else "other"


def _scaling_resource_id(service: PolicyResource) -> str | None:
    """``service/<cluster name>/<service name>``: how Application Auto Scaling names it."""
    name, cluster = service.props.get("name"), service.props.get("cluster")
    if not isinstance(name, str) or not isinstance(cluster, str):
        return None
    return f"service/{cluster.rsplit('/', 1)[-1]}/{name}"


def validate_service_task_counts(args: StackValidationArgs, report: ReportViolation) -> None:
    """Across resources: a worker's scaling target keeps a task, nothing scales beat, and a
    service that runs beat or a worker but lacks the tag the resource policies key on is held
    to the same counts here."""
    index = StackIndex(args.resources)
    targets: dict[str, list[PolicyResource]] = {}
    for target in index.of_type(aws_types.APPAUTOSCALING_TARGET):
        if target.props.get("serviceNamespace") not in (None, "ecs"):
            continue
        targets.setdefault(str(target.props.get("resourceId")), []).append(target)
    for service in index.of_type(aws_types.ECS_SERVICE):
        role = _service_role(service, index)
        tag = service_tag(service.props) or ""
        if role == "beat" and tag != BEAT_SERVICE:
            for problem in _beat_problems(service.props, service.name):
                report(problem, service.urn)
        if role == "worker" and not tag.startswith(WORKER_SERVICE_PREFIX):
            worker_problem = _worker_problem(service.props, service.name)
            if worker_problem is not None:
                report(worker_problem, service.urn)
        resource_id = _scaling_resource_id(service)
        for target in targets.get(resource_id or "", []):
            if role == "beat":
                report(
                    f"scaling target '{target.name}' scales the beat service '{service.name}'; "
                    "remove it: beat must run exactly one task",
                    target.urn,
                )
            elif role == "worker":
                minimum = target.props.get("minCapacity")
                count = whole_number(minimum)
                if count is None or count < 1:
                    report(
                        f"scaling target '{target.name}' of worker service '{service.name}' has "
                        f"minCapacity {number_text(minimum)}; set it to at least 1 so scale-in "
                        "never leaves the pool's queues without a consumer",
                        target.urn,
                    )
