"""ECS task scale-in protection while the worker has tasks in flight.

A pool whose tasks outlive Fargate's stop cap runs with a cold shutdown (``infra/budget.py``):
SIGTERM cancels the running tasks and kombu puts them back on the queue. That is safe but
wasteful, so such a worker asks ECS not to pick it for scale-in or deployment replacement while
it is busy: ``PUT $ECS_AGENT_URI/task-protection/v1/state``.

- On when the worker has a task running or reserved (prefetched, or waiting for its ETA).
- Renewed while busy: each PUT protects for ``expires_in_minutes`` (15) and is repeated when
  less than ``renew_before_minutes`` (5) remain. A short expiry bounds how long a hung or killed
  worker keeps its task protected.
- Off once the worker has been idle for ``idle_grace_seconds`` (30): a worker that runs short
  tasks back to back must not call the ECS API for every gap between two of them.
- A failed call (HTTP error, failure or error payload, timeout, refused connection) is logged
  and retried, after 1 s and then with a doubling delay up to 30 s; it never stops the worker.
- Outside ECS (no ``ECS_AGENT_URI``) it does nothing.

Protection does not cover a Fargate Spot interruption, a failed health check or a StopTask call;
the cold shutdown still handles those.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from celery_ecs.periodic import PeriodicThread
from celery_ecs.settings import PROTECTION_IDLE_GRACE_SECONDS

log = logging.getLogger(__name__)

#: Set by ECS in every container (Fargate platform 1.4+, recent EC2 agents).
AGENT_URI_ENV = "ECS_AGENT_URI"
STATE_PATH = "/task-protection/v1/state"
#: The agent's limits for ``ExpiresInMinutes``.
MAX_EXPIRES_IN_MINUTES = 2880

#: How often the worker checks whether it has tasks, in seconds.
POLL_INTERVAL_SECONDS = 1.0
#: Idle seconds before protection is turned off (read when the worker starts).
IDLE_GRACE_SECONDS = float(PROTECTION_IDLE_GRACE_SECONDS)


# The agent is a link-local address: an HTTP(S)_PROXY set for the app must not capture it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AgentError(Exception):
    """The agent did not confirm the requested protection state."""


def worker_has_tasks() -> bool:
    """True while this worker process holds a task: running, prefetched or waiting for its ETA.

    Both sets live in the worker's main process, also with the prefork pool. ``len`` of a set is
    safe to read from another thread; iterating it would not be.
    """
    return len(worker_state.active_requests) > 0 or len(worker_state.reserved_requests) > 0


class TaskProtection:
    """Keeps this ECS task's scale-in protection on while ``update(busy=True)`` is reported.

    Call ``update`` periodically (every second or two) with whether the worker has tasks. The
    object is not thread-safe: one poller calls it.

    - ``agent_uri``: ``$ECS_AGENT_URI``; ``None`` or empty turns everything into a no-op.
    - ``expires_in_minutes``: how long each PUT protects the task (1..2880).
    - ``renew_before_minutes``: renew when less than this is left (below the expiry).
    - ``idle_grace_seconds``: how long the worker must be idle before protection is removed.
    - ``request_timeout``: seconds to wait for the agent.
    - ``retry_delay`` / ``max_retry_delay``: after a failed call, wait ``retry_delay`` seconds,
      doubling per consecutive failure up to ``max_retry_delay``.
    - ``clock``: monotonic seconds; tests pass a fake.
    """

    def __init__(
        self,
        agent_uri: str | None,
        *,
        expires_in_minutes: int = 15,
        renew_before_minutes: float = 5,
        idle_grace_seconds: float = IDLE_GRACE_SECONDS,
        request_timeout: float = 5.0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= expires_in_minutes <= MAX_EXPIRES_IN_MINUTES:
            raise ValueError(f"expires_in_minutes={expires_in_minutes}: the agent accepts 1..2880")
        if not 0 < renew_before_minutes < expires_in_minutes:
            raise ValueError(
                f"renew_before_minutes={renew_before_minutes}: must be above 0 and below "
                f"expires_in_minutes={expires_in_minutes}"
            )
        self.url = f"{agent_uri.rstrip('/')}{STATE_PATH}" if agent_uri else None
        self.expires_in_minutes = expires_in_minutes
        self.renew_before = renew_before_minutes * 60.0
        self.idle_grace = idle_grace_seconds
        self.request_timeout = request_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._clock = clock
        # When the confirmed protection runs out (local clock, measured from before the request,
        # so never later than the agent's expiry); None when not confirmed on.
        self._protected_until: float | None = None
        # Until when protection might be on, confirmed or not (a timed-out enable may have
        # worked): while it might be, an idle worker keeps asking for it to be turned off.
        self._maybe_protected_until = float("-inf")
        self._idle_since: float | None = None
        self._failures = 0
        self._next_attempt = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def protected(self) -> bool:
        """Whether the agent confirmed protection that has not yet expired."""
        return self._protected_until is not None and self._clock() < self._protected_until

    def update(self, busy: bool) -> None:
        """Bring the protection in line with ``busy``; never raises for agent problems."""
        if self.url is None:
            return
        now = self._clock()
        if busy:
            self._idle_since = None
            idle_for = 0.0
        else:
            if self._idle_since is None:
                self._idle_since = now
            idle_for = now - self._idle_since
        if now < self._next_attempt:
            return  # backing off after a failed call

        if busy:
            left = 0.0 if self._protected_until is None else self._protected_until - now
            if left < self.renew_before:
                self._put(enable=True)
        elif now < self._maybe_protected_until and idle_for >= self.idle_grace:
            self._put(enable=False)

    def _put(self, *, enable: bool) -> None:
        started = self._clock()
        if enable:
            # The agent counts the expiry from when it handles the call, a little later.
            self._maybe_protected_until = started + self.expires_in_minutes * 60.0 + 60.0
        try:
            self._request(enable)
        except AgentError as error:
            self._failures += 1
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** (self._failures - 1))
            self._next_attempt = self._clock() + delay
            log.warning(
                "ECS task protection: could not turn it %s (attempt %d, retrying in %.0f s): %s",
                "on" if enable else "off", self._failures, delay, error,
            )  # fmt: skip
            return
        if self._failures:
            log.info("ECS task protection: agent answering again after %d failures", self._failures)
        self._failures = 0
        self._next_attempt = float("-inf")
        if enable:
            was_protected = self.protected
            self._protected_until = started + self.expires_in_minutes * 60.0
            log.info(
                "ECS task protection %s for %d minutes",
                "renewed" if was_protected else "on", self.expires_in_minutes,
            )  # fmt: skip
        else:
            self._protected_until = None
            self._maybe_protected_until = float("-inf")
            log.info("ECS task protection off (worker idle)")

    def _request(self, enable: bool) -> None:
        """PUT the state; raise AgentError unless the agent confirms it."""
        assert self.url is not None
        body: dict[str, object] = {"ProtectionEnabled": enable}
        if enable:
            body["ExpiresInMinutes"] = self.expires_in_minutes
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with _NO_PROXY.open(request, timeout=self.request_timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AgentError(f"HTTP {error.code}: {detail}") from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            # URLError (refused, DNS), TimeoutError, a dropped connection, a non-JSON body.
            raise AgentError(f"{type(error).__name__}: {error}") from None
        _check_confirms(payload, enable)


def _check_confirms(payload: object, enable: bool) -> None:
    """Raise AgentError unless ``payload`` confirms ``ProtectionEnabled == enable``.

    The agent answers ``{"protection": {...}}``, ``{"failure": {"Reason": ...}}`` (e.g.
    TASK_NOT_VALID for a task outside a service) or ``{"error": {"Code": ..., "Message":
    ...}}`` (e.g. AccessDeniedException without ``ecs:UpdateTaskProtection``, or throttling).
    """
    if not isinstance(payload, dict):
        raise AgentError(f"unexpected response: {payload!r}"[:500])
    for problem in ("failure", "error"):
        if problem in payload:
            raise AgentError(f"{problem}: {json.dumps(payload[problem])}"[:500])
    protection = payload.get("protection")
    if not isinstance(protection, dict) or protection.get("ProtectionEnabled") is not enable:
        raise AgentError(f"response does not confirm ProtectionEnabled={enable}: {payload!r}"[:500])


class TaskProtectionStep(bootsteps.StartStopStep):
    """Worker bootstep: holds scale-in protection while the worker has tasks (see module doc).

    Register with ``app.steps["worker"].add(TaskProtectionStep)``. It polls from a thread of
    the main process (``celery_ecs.periodic``), started after the pool so that the first pool
    children are forked before the thread exists.
    """

    requires = ("celery.worker.components:Pool",)
    label = "ECS task protection"

    def include_if(self, worker: Any) -> bool:
        if os.environ.get(AGENT_URI_ENV):
            return True
        log.info("ECS task protection: %s is not set (not on ECS); staying off", AGENT_URI_ENV)
        return False

    # celery-types has Step.create return None; StartStopStep keeps what it returns as its obj.
    def create(self, worker: Any) -> PeriodicThread:  # type: ignore[override]
        protection = TaskProtection(
            os.environ[AGENT_URI_ENV], idle_grace_seconds=IDLE_GRACE_SECONDS
        )
        # On stop, protection is left as it is: the worker is exiting, a call to the agent
        # would spend the seconds between SIGTERM and SIGKILL, and it expires on its own.
        return PeriodicThread(
            "ecs-task-protection",
            POLL_INTERVAL_SECONDS,
            lambda: protection.update(worker_has_tasks()),
            join_timeout=protection.request_timeout + POLL_INTERVAL_SECONDS,
        )
