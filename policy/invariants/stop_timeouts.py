"""Stop timeouts: every container's ``stopTimeout`` within Fargate's cap, covering its budget."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pulumi_policy import ReportViolation, ResourceValidationArgs

from . import aws_types
from .readers import (
    as_list,
    container_command,
    container_environment,
    container_role,
    containers_or_report,
    number_text,
    whole_number,
)
from .restated import (
    DEFAULT_WEB_REQUEST_TIMEOUT,
    EXIT_MARGIN,
    FARGATE_DEFAULT_STOP_TIMEOUT,
    FARGATE_STOP_TIMEOUT_CAP,
    REMAP_SIGTERM,
    SOFT_SHUTDOWN_TIMEOUT,
    TASK_PROTECTION,
    TIME_LIMIT,
    WEB_REQUEST_TIMEOUT,
)


@dataclass(frozen=True)
class StopNeed:
    """The least ``stopTimeout`` a container needs, and why."""

    seconds: int
    reason: str


def stop_timeout_need(role: str, environment: Mapping[str, str]) -> StopNeed:
    """The budget's rule (infra/budget.py), from what the container's environment says.

    - A worker in warm shutdown (no ``REMAP_SIGTERM=SIGQUIT``) lets every running task finish:
      at most the hard time limit, then the exit margin.
    - A worker in cold shutdown waits its soft-shutdown grace, then cancels (the tasks are
      requeued at once) and exits within the margin; task protection keeps busy workers from
      being chosen for scale-in, so the budget need not cover a whole task.
    - The web finishes requests in flight at SIGTERM: at most the request timeout, then the
      margin.
    - Anything else (beat releasing its lock, the enqueue command) gets the margin.

    Raises ``ValueError`` when a worker's environment carries no usable limit.
    """
    if role == "worker":
        hard = whole_number(environment.get(TIME_LIMIT))
        if hard is None or hard < 1:
            raise ValueError(
                f"its environment has no whole-second {TIME_LIMIT}, so nothing bounds how long "
                "a warm shutdown takes; set the pool's taskTimeout (the budget renders it)"
            )
        if environment.get(REMAP_SIGTERM) == "SIGQUIT":
            grace = whole_number(environment.get(SOFT_SHUTDOWN_TIMEOUT, "0"))
            if grace is None or grace < 0:
                raise ValueError(f"{SOFT_SHUTDOWN_TIMEOUT} is not a whole number of seconds")
            return StopNeed(
                grace + EXIT_MARGIN,
                f"cold shutdown: {SOFT_SHUTDOWN_TIMEOUT}={grace} s of grace, then "
                f"{EXIT_MARGIN} s to cancel, requeue and exit",
            )
        return StopNeed(
            hard + EXIT_MARGIN,
            f"warm shutdown: a running task may take up to {TIME_LIMIT}={hard} s, then "
            f"{EXIT_MARGIN} s to exit",
        )
    if role == "web":
        raw = environment.get(WEB_REQUEST_TIMEOUT, str(DEFAULT_WEB_REQUEST_TIMEOUT))
        request = whole_number(raw)
        if request is None or request < 1:
            raise ValueError(f"{WEB_REQUEST_TIMEOUT}={raw!r} is not a whole number of seconds")
        return StopNeed(
            request + EXIT_MARGIN,
            f"a request in flight at SIGTERM may take {WEB_REQUEST_TIMEOUT}={request} s, then "
            f"{EXIT_MARGIN} s to exit",
        )
    return StopNeed(EXIT_MARGIN, f"{EXIT_MARGIN} s to finish and exit")


def validate_stop_timeouts(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.ECS_TASK_DEFINITION:
        return
    fargate = "FARGATE" in [str(c) for c in as_list(args.props.get("requiresCompatibilities"))]
    for container in containers_or_report(args, report):
        where = f"container '{container.get('name')}' of task definition '{args.name}'"
        role = container_role(container_command(container))
        environment = container_environment(container)
        try:
            need = stop_timeout_need(role, environment)
        except ValueError as error:
            report(f"{where} is a Celery {role}: {error}", args.urn)
            continue
        cold = role == "worker" and environment.get(REMAP_SIGTERM) == "SIGQUIT"
        if cold and environment.get(TASK_PROTECTION, "").lower() != "true":
            report(
                f"{where} stops in cold shutdown (REMAP_SIGTERM=SIGQUIT) without "
                f"{TASK_PROTECTION}=true; set it, or scale-in and deployments stop busy "
                "workers and cancel their tasks",
                args.urn,
            )
        if fargate and need.seconds > FARGATE_STOP_TIMEOUT_CAP:
            report(
                f"{where} needs a stopTimeout of {need.seconds} s ({need.reason}), more than "
                f"Fargate's {FARGATE_STOP_TIMEOUT_CAP} s; lower the pool's taskTimeout, or let "
                "the budget choose cold shutdown with task protection (infra/budget.py)",
                args.urn,
            )
            continue
        stop = container.get("stopTimeout")
        seconds = whole_number(stop)
        if stop is None:
            report(
                f"{where} sets no stopTimeout (Fargate then waits "
                f"{FARGATE_DEFAULT_STOP_TIMEOUT} s); set it to {need.seconds} ({need.reason})",
                args.urn,
            )
        elif seconds is None:
            report(f"{where} has stopTimeout {number_text(stop)}; give whole seconds", args.urn)
        elif fargate and seconds > FARGATE_STOP_TIMEOUT_CAP:
            report(
                f"{where} has stopTimeout {seconds}, above Fargate's cap of "
                f"{FARGATE_STOP_TIMEOUT_CAP} s; set it to {need.seconds} ({need.reason})",
                args.urn,
            )
        elif seconds < need.seconds:
            report(
                f"{where} has stopTimeout {seconds} but needs at least {need.seconds} "
                f"({need.reason}); set stopTimeout to {need.seconds}, as infra/budget.py derives "
                "it, or SIGKILL cuts the shutdown short",
                args.urn,
            )
