"""The suite's three tiers, and the guard that keeps the ``unit`` tier what it says.

- ``unit``: pure code and the Pulumi program under mocks. No root, no Redis, no network, no
  process of the app, nothing written into the checkout (``make test-unit`` runs them as an
  unprivileged user). Tools (hadolint, lint-imports, check-jsonschema, ``devtools.plan``) may
  run; servers a test starts in its own process on loopback may answer.
- ``redis``: real redis-server, real Celery, gunicorn and app processes, moto's server, the
  entry points in their runners' virtualenvs. No root.
- ``twin``: containers on the ECS twin (namespaces, mounts, a bridge): root, Linux.

``tests/conftest.py`` gives each test its tier: its own or its module's mark, else the fixtures
it uses (``TIER_FIXTURES``), else ``unit``. While a ``unit`` test runs, ``UnitGuard`` refuses,
through a Python audit hook (PEP 578; the events ``subprocess.Popen`` and ``socket.connect``,
"Audit events table" in the Python documentation), what only the other tiers may do: start
redis-server or a process of the app, or connect anywhere but loopback. A refused call raises
``TierViolation`` there, and the test fails even if the code under test swallowed it.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shlex
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

#: The tiers, from the least to the most a test needs (marker name, what it needs).
TIERS: dict[str, str] = {
    "unit": "pure code and Pulumi mocks: no root, no Redis, no network, no app process",
    "redis": "real redis-server, Celery and app processes, AWS stand-ins on loopback; no root",
    "twin": "containers on the ECS twin: root, Linux namespaces, a bridge",
}
#: A test with no tier mark that uses one of these fixtures (directly or through another
#: fixture) is in that tier; the first that matches wins.
TIER_FIXTURES: dict[str, frozenset[str]] = {
    "twin": frozenset({"containers"}),
    # The shared server and processes (tests/conftest.py); servers of a test module's own:
    # test_transport's and test_broker_restart's redis-server, moto's server (test_metrics,
    # test_web_auth).
    "redis": frozenset(
        {"redis_server", "processes", "own_redis", "restartable_redis", "moto_server",
         "secrets_manager"}
    ),
}
#: Programs a unit test may not start, by name.
SERVER_PROGRAMS = frozenset({"redis-server", "celery", "gunicorn"})
#: Top-level modules a unit test may not run with ``python -m`` or ``-c``.
APP_MODULES = ("app", "celery_ecs", "celery", "gunicorn")


class TierViolation(AssertionError):
    """A unit test did what only the ``redis`` or ``twin`` tier may."""


def tiers_of(item: pytest.Item) -> list[str]:
    """The tier marks a test carries (its own, its class's, its module's)."""
    return [mark.name for mark in item.iter_markers() if mark.name in TIERS]


def tier_from_fixtures(fixtures: Sequence[str]) -> str:
    used = set(fixtures)
    return next((tier for tier, names in TIER_FIXTURES.items() if used & names), "unit")


def _runs_the_app(argv: Sequence[str]) -> bool:
    """Whether ``argv`` starts redis-server, Celery, gunicorn or a module of the app."""
    if not argv:
        return False
    if os.path.basename(argv[0]) in SERVER_PROGRAMS:
        return True
    for flag, value in itertools.pairwise(argv):
        if flag == "-m" and value.split(".")[0] in APP_MODULES:
            return True
        if flag == "-c" and any(
            f"import {module}" in value or f"from {module}" in value for module in APP_MODULES
        ):
            return True
    return False


def _is_loopback(host: object) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


class UnitGuard:
    """The audit hook, installed once per test process; it acts only while ``watching``."""

    def __init__(self) -> None:
        #: The unit test running now, or None.
        self.test: str | None = None
        #: What it was refused.
        self.violations: list[str] = []
        sys.addaudithook(self._audit)

    @contextmanager
    def watching(self, test: str) -> Iterator[list[str]]:
        """Refuse what a unit test may not do while in this block; at its end, fail the test
        if anything was refused, even if the code under test caught the refusal. Yields the
        list of refusals (a test of the guard clears what it expected)."""
        outer = self.test, self.violations
        self.test, self.violations = test, []
        try:
            yield self.violations
        finally:
            violations = self.violations
            self.test, self.violations = outer
        if violations:
            pytest.fail("\n".join(violations), pytrace=False)

    def _refuse(self, what: str) -> None:
        message = f"a unit test {what}: mark it redis or twin (tests/tiers.py)"
        self.violations.append(message)
        raise TierViolation(message)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.test is None:
            return
        if event == "subprocess.Popen":
            command = args[1]
            argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
            if _runs_the_app(argv):
                self._refuse(f"started {shlex.join(argv)[:200]!r}")
        elif event == "socket.connect":
            sock, address = args
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
                self._refuse(f"connected to {address!r}")


#: The guard of this test process (``tests/conftest.py`` watches every unit test with it).
GUARD = UnitGuard()
