"""The timeout budget: one input per service decides every stop- and time-related number.

Pure logic, no Pulumi: the worker pool's ``taskTimeout`` (the longest task it runs) and the
platform's stop cap give the Celery time limits, the shutdown mode, the container
``stopTimeout`` and the Redis visibility timeout; the web's request timeout gives the load
balancer's deregistration delay and the web's stop timeout. The README has the same rules as a
table; ``tests/test_budget.py`` checks their invariants over the whole input range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from celery_ecs import settings as env_names
from celery_ecs.settings import DEFAULT_HELD_PER_SLOT, PROTECTION_IDLE_GRACE_SECONDS

#: Fargate's ceiling for a container's ``stopTimeout`` (seconds between SIGTERM and SIGKILL).
FARGATE_STOP_TIMEOUT_CAP = 120
#: Seconds a worker needs after its last task to cancel, restore unacked messages and exit.
EXIT_MARGIN = 10
#: Seconds the visibility timeout keeps above the longest legitimate unacked time, at least
#: (covers clock skew between containers and the gap between delivery and task start).
MIN_VISIBILITY_MARGIN = 10
#: Longest supported ``taskTimeout``. A crashed run of a longer task would only come back after
#: more than a day (the visibility timeout): split such work into smaller tasks.
MAX_TASK_TIMEOUT = 86_400
#: Seconds beat gets to release its Redis lock and exit; a short stop keeps the schedule gap
#: of a beat deployment (old beat stopped before the new one starts) short.
BEAT_STOP_TIMEOUT = 10
#: Seconds a new Fargate task may take to be placed, pull the image, start and pass its health
#: checks (start period 60 s, then up to 3 checks 30 s apart), with room for a slow pull and a
#: retry of a failed placement.
TASK_START_ALLOWANCE = 600
#: Seconds the web's load balancer health checks are ignored after a task starts.
WEB_HEALTH_CHECK_GRACE = 60
#: Seconds between a Fargate Spot interruption notice and the end of the task: ECS sends the
#: notice as SIGTERM, then the container's ``stopTimeout`` runs as for any stop, and the capacity
#: is reclaimed two minutes after the notice.
SPOT_INTERRUPTION_NOTICE = 120
#: Longest ``taskTimeout`` whose pool prefetches ``SHORT_TASK_PREFETCH`` messages per slot unless
#: it says otherwise (the stack's default pool's); longer pools prefetch one.
SHORT_TASK_TIMEOUT = 300
#: Messages a short-task pool reserves per slot: the next one is in the worker when a slot frees,
#: so a short task does not wait a broker round trip for it (bench.worker_budget, throughput).
SHORT_TASK_PREFETCH = 2

ShutdownMode = Literal["warm", "cold"]


class BudgetError(ValueError):
    """An input no shutdown mode can honour."""


def _require_whole_seconds(**values: object) -> None:
    # The values end up in container definitions and environment variables that only take
    # whole numbers; a float or a bool would render as "1.5" or "True" and fail at start.
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise BudgetError(f"{key}={value!r}: must be a whole number")


def default_prefetch_multiplier(task_timeout: int, held_per_slot: int) -> int:
    """Messages a pool reserves per slot unless it says: ``SHORT_TASK_PREFETCH`` for a pool of
    short tasks (``taskTimeout`` <= ``SHORT_TASK_TIMEOUT``), else 1; never above
    ``held_per_slot``.

    A second message per slot saves a broker round trip per task, which counts when tasks are as
    short as a round trip. Its cost: a message reserved behind a running task waits for a slot of
    that worker (at most the hard time limit) while another worker may be idle. For a pool whose
    tasks may run for more than five minutes that wait is the worse trade.
    """
    wanted = SHORT_TASK_PREFETCH if task_timeout <= SHORT_TASK_TIMEOUT else 1
    return max(1, min(wanted, held_per_slot))  # below 1 heldPerSlot is refused, not this


def cleanup_grace(soft_time_limit: int) -> int:
    """Seconds between the soft limit (the task is asked to stop) and the hard kill."""
    return min(60, max(1, math.ceil(soft_time_limit * 0.1)))


@dataclass(frozen=True)
class WorkerBudget:
    """Every derived value for one worker pool. All durations are whole seconds."""

    task_timeout: int
    max_stop_timeout: int
    prefetch_multiplier: int
    max_countdown: int
    held_per_slot: int
    soft_time_limit: int
    time_limit: int
    shutdown: ShutdownMode
    soft_shutdown_timeout: int
    stop_timeout: int
    visibility_timeout: int
    task_protection: bool

    @property
    def deployment_timeout(self) -> int:
        """Seconds ``pulumi up`` waits for a deployment of the pool to reach steady state.

        The new tasks start and turn healthy, then each old one stops within its
        ``stopTimeout``. A protected (cold-shutdown) worker is not stopped while it holds a task:
        it first finishes the one it runs (at most the hard time limit) and stays protected for
        its idle grace. A pool that never goes idle holds a deployment longer: ``up`` then
        fails on this timeout and the deployment goes on in ECS.
        """
        hold = self.time_limit + PROTECTION_IDLE_GRACE_SECONDS if self.task_protection else 0
        return TASK_START_ALLOWANCE + hold + self.stop_timeout

    @property
    def longest_unacked(self) -> int:
        """Longest a message can legitimately stay delivered but unacknowledged in a live worker:
        ``max_countdown + held_per_slot x time_limit`` (the visibility timeout must exceed it).

        With ``c`` pool slots a worker holds at most ``N = held_per_slot x c`` messages
        (Celery's ``worker_eta_task_limit``, ``celery_ecs.settings.Settings.eta_task_limit``):
        running, handed to the pool and waiting for a process, or waiting for their countdown/ETA.
        Take a message delivered at ``t0``. Its ETA is at most ``max_countdown`` after its
        publication, so before ``t0 + max_countdown``; then Celery hands it to the pool. The
        prefork pool's default ("fair") scheduling gives a task only to an idle process and
        keeps the others in first-in first-out order, so ahead of it are only messages handed
        over before it, all held at that moment: at most ``N - 1``. Each runs at most
        ``time_limit`` (the hard limit kills it) on one of ``c`` slots, so the message starts
        within ``floor((N - 1) / c) x time_limit`` and is acknowledged within
        ``ceil(N / c) x time_limit = held_per_slot x time_limit`` after its ETA. The bound does
        not depend on ``c``, so the app can check it at import (``celery_ecs.settings``) without
        knowing its concurrency. With no countdown/ETA message held, ``N`` is the prefetch
        (``prefetch_multiplier x c``) and the bound ``prefetch_multiplier x time_limit +
        max_countdown`` of a pool without ETA messages. It assumes the worker command's prefork
        pool at a fixed concurrency and tasks without a ``rate_limit`` (a rate-limited task
        waits in the worker for a token after its ETA, outside the bound).

        Liveness (``celery_ecs.recovery``) takes back a dead worker's messages; a live worker's are
        taken back only past the visibility timeout, which this bound keeps from happening.
        """
        return self.held_per_slot * self.time_limit + self.max_countdown

    @property
    def finishes_within_spot_notice(self) -> bool:
        """Whether a Fargate Spot interruption lets every running task finish.

        The notice is a SIGTERM; SIGKILL follows at ``stopTimeout`` (never above 120 s, so
        before the capacity is reclaimed). Warm shutdown lets running tasks finish, and the hard
        limit ends the longest one EXIT_MARGIN before SIGKILL: nothing is lost or run twice.
        A cold pool loses nothing either (its unfinished tasks are requeued at once), but its
        long tasks start over at every interruption, and scale-in protection does not hold off
        Spot: such a task may never finish.
        """
        return self.shutdown == "warm" and self.stop_timeout <= SPOT_INTERRUPTION_NOTICE

    def environment(self) -> dict[str, str]:
        """The container environment that carries these values into the app."""
        values = {
            env_names.SOFT_TIME_LIMIT: self.soft_time_limit,
            env_names.TIME_LIMIT: self.time_limit,
            env_names.VISIBILITY_TIMEOUT: self.visibility_timeout,
            env_names.PREFETCH_MULTIPLIER: self.prefetch_multiplier,
            env_names.MAX_COUNTDOWN: self.max_countdown,
            env_names.HELD_PER_SLOT: self.held_per_slot,
            env_names.SOFT_SHUTDOWN_TIMEOUT: self.soft_shutdown_timeout,
            env_names.SOFT_SHUTDOWN_ON_IDLE: "false",
            env_names.TASK_PROTECTION: "true" if self.task_protection else "false",
        }
        if self.shutdown == "cold":
            values[env_names.REMAP_SIGTERM] = "SIGQUIT"
        return {name: str(value) for name, value in values.items()}


def worker_budget(
    task_timeout: int,
    *,
    max_stop_timeout: int = FARGATE_STOP_TIMEOUT_CAP,
    prefetch_multiplier: int | None = None,
    max_countdown: int = 300,
    held_per_slot: int = DEFAULT_HELD_PER_SLOT,
) -> WorkerBudget:
    """Derive a pool's budget.

    - ``task_timeout``: seconds, the longest task the pool runs (1..86400).
    - ``max_stop_timeout``: seconds ECS may wait after SIGTERM (EXIT_MARGIN+1..120, Fargate's cap).
    - ``prefetch_multiplier``: messages reserved per pool slot (>= 1); None:
      ``default_prefetch_multiplier``.
    - ``max_countdown``: longest countdown/ETA, in seconds, a task of the pool may be sent with.
    - ``held_per_slot``: most messages a worker holds per pool slot, countdown/ETA ones
      included (>= ``prefetch_multiplier``; see ``WorkerBudget.longest_unacked``).
    """
    if prefetch_multiplier is None:
        _require_whole_seconds(taskTimeout=task_timeout, heldPerSlot=held_per_slot)
        prefetch_multiplier = default_prefetch_multiplier(task_timeout, held_per_slot)
    _require_whole_seconds(
        taskTimeout=task_timeout, maxStopTimeout=max_stop_timeout,
        prefetchMultiplier=prefetch_multiplier, maxCountdown=max_countdown,
        heldPerSlot=held_per_slot,
    )
    if not 1 <= task_timeout <= MAX_TASK_TIMEOUT:
        raise BudgetError(
            f"taskTimeout={task_timeout}: must be 1..{MAX_TASK_TIMEOUT} seconds; longer work must "
            "be split, or a crashed run would only be redelivered after more than a day"
        )
    if not EXIT_MARGIN < max_stop_timeout <= FARGATE_STOP_TIMEOUT_CAP:
        raise BudgetError(
            f"maxStopTimeout={max_stop_timeout}: must be {EXIT_MARGIN + 1}.."
            f"{FARGATE_STOP_TIMEOUT_CAP} seconds (Fargate waits at most 120 s between SIGTERM "
            "and SIGKILL)"
        )
    if prefetch_multiplier < 1:
        raise BudgetError(f"prefetchMultiplier={prefetch_multiplier}: must be >= 1")
    if max_countdown < 0:
        raise BudgetError(f"maxCountdown={max_countdown}: must be >= 0")
    if held_per_slot < prefetch_multiplier:
        raise BudgetError(
            f"heldPerSlot={held_per_slot}: must be >= prefetchMultiplier={prefetch_multiplier} "
            "(Celery caps the prefetch count itself at the limit)"
        )

    soft = task_timeout
    hard = soft + cleanup_grace(soft)
    if hard + EXIT_MARGIN <= max_stop_timeout:
        # Warm shutdown: SIGTERM lets every running task finish; the hard limit bounds how long
        # that takes, so ECS waits exactly that plus the exit margin.
        shutdown: ShutdownMode = "warm"
        soft_shutdown = 0
        stop_timeout = hard + EXIT_MARGIN
    else:
        # The longest task cannot finish before SIGKILL. SIGTERM becomes a cold shutdown: a
        # grace period lets short tasks finish, then the rest are cancelled unacked and kombu
        # puts them back on the queue at once (not after the visibility timeout). Scale-in
        # protection keeps ECS from choosing busy workers in the first place.
        shutdown = "cold"
        soft_shutdown = max_stop_timeout - EXIT_MARGIN
        stop_timeout = max_stop_timeout
    unacked = held_per_slot * hard + max_countdown  # WorkerBudget.longest_unacked
    visibility = unacked + max(MIN_VISIBILITY_MARGIN, math.ceil(unacked * 0.25))
    return WorkerBudget(
        task_timeout=task_timeout,
        max_stop_timeout=max_stop_timeout,
        prefetch_multiplier=prefetch_multiplier,
        max_countdown=max_countdown,
        held_per_slot=held_per_slot,
        soft_time_limit=soft,
        time_limit=hard,
        shutdown=shutdown,
        soft_shutdown_timeout=soft_shutdown,
        stop_timeout=stop_timeout,
        visibility_timeout=visibility,
        task_protection=shutdown == "cold",
    )


def longest_warm_task_timeout(max_stop_timeout: int = FARGATE_STOP_TIMEOUT_CAP) -> int | None:
    """The longest ``taskTimeout`` whose pool still shuts down warm under ``max_stop_timeout``
    (its longest task, hard limit included, ends before SIGKILL): 100 s for the 120 s cap.
    None when even a 1-second task would not (a cap below 12 s)."""
    _require_whole_seconds(maxStopTimeout=max_stop_timeout)
    fits = [
        timeout
        for timeout in range(1, max_stop_timeout)
        if timeout + cleanup_grace(timeout) + EXIT_MARGIN <= max_stop_timeout
    ]
    return fits[-1] if fits else None


@dataclass(frozen=True)
class WebBudget:
    """Derived values for the web service. All durations are whole seconds."""

    request_timeout: int
    deregistration_delay: int
    stop_timeout: int
    idle_timeout: int

    @property
    def deployment_timeout(self) -> int:
        """Seconds ``pulumi up`` waits for a web deployment: new tasks start and pass the load
        balancer's checks after its grace period; old ones drain, then stop."""
        return (
            TASK_START_ALLOWANCE
            + WEB_HEALTH_CHECK_GRACE
            + self.deregistration_delay
            + self.stop_timeout
        )

    def environment(self) -> dict[str, str]:
        return {env_names.WEB_REQUEST_TIMEOUT: str(self.request_timeout)}


def beat_deployment_timeout() -> int:
    """Seconds ``pulumi up`` waits for a beat deployment: the old beat stops, then the new one
    starts (never both at once)."""
    return BEAT_STOP_TIMEOUT + TASK_START_ALLOWANCE


def web_budget(request_timeout: int) -> WebBudget:
    """Derive the web's budget from ``request_timeout`` (seconds, 1..110).

    The load balancer stops sending new requests to a draining task and waits up to the
    deregistration delay for those in flight; ECS sends SIGTERM only after that, and the server
    then has the request timeout again to finish anything that slipped through.
    """
    _require_whole_seconds(requestTimeout=request_timeout)
    limit = FARGATE_STOP_TIMEOUT_CAP - EXIT_MARGIN
    if not 1 <= request_timeout <= limit:
        raise BudgetError(
            f"web.requestTimeout={request_timeout}: must be 1..{limit} seconds so a request in "
            "flight at SIGTERM can finish before Fargate's 120 s SIGKILL"
        )
    return WebBudget(
        request_timeout=request_timeout,
        deregistration_delay=request_timeout + 5,
        stop_timeout=request_timeout + EXIT_MARGIN,
        # The load balancer must not cut a request the app is still allowed to serve.
        idle_timeout=max(60, request_timeout + 5),
    )
