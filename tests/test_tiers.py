"""Every test is in exactly one tier, and a unit test cannot do what only the others may.

The tiers and the guard are in ``tests/tiers.py``; ``tests/conftest.py`` applies them.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

import pytest

from tests.tiers import GUARD, TIERS, TierViolation, tiers_of


def test_every_collected_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    assert request.node in items
    wrong = {item.nodeid: tiers_of(item) for item in items if len(tiers_of(item)) != 1}
    assert wrong == {}, "each test needs exactly one of " + ", ".join(TIERS)


def test_the_tiers_are_registered_markers(pytestconfig: pytest.Config) -> None:
    # --strict-markers (pyproject.toml) then refuses a misspelt tier.
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered


def test_this_test_is_a_unit_test(request: pytest.FixtureRequest) -> None:
    assert tiers_of(request.node) == ["unit"]


@pytest.mark.parametrize(
    "argv",
    [
        ["redis-server", "--version"],
        [sys.executable, "-m", "celery_ecs.health", "worker"],
        [sys.executable, "-m", "celery", "--version"],
        [sys.executable, "-c", "import app.celery_app"],
    ],
    ids=["redis-server", "an app module", "celery", "the app in -c"],
)
def test_a_unit_test_cannot_start_redis_or_the_app(argv: list[str], unit_guard: list[str]) -> None:
    with pytest.raises(TierViolation, match="mark it redis or twin"):
        subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert len(unit_guard) == 1
    unit_guard.clear()  # refused as expected: not a failure of this test


def test_a_unit_test_may_run_a_tool(unit_guard: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", "print('a tool')"], capture_output=True,
                          text=True, timeout=30, check=True)  # fmt: skip
    assert done.stdout == "a tool\n"
    assert unit_guard == []


def test_a_unit_test_cannot_leave_the_machine(unit_guard: list[str]) -> None:
    # 192.0.2.1: TEST-NET-1, reserved for documentation (RFC 5737).
    with socket.socket() as sock, pytest.raises(TierViolation, match="connected to"):
        sock.settimeout(0.5)
        sock.connect(("192.0.2.1", 9))
    assert len(unit_guard) == 1
    unit_guard.clear()


def test_a_unit_test_may_use_loopback(unit_guard: list[str]) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert unit_guard == []


def test_a_swallowed_refusal_still_fails_the_test() -> None:
    """Code under test that catches every exception cannot hide a refused call."""
    with (
        pytest.raises(pytest.fail.Exception, match="connected to"),
        GUARD.watching("a test"),
        contextlib.suppress(BaseException),  # careless code under test: swallows every error
    ):
        socket.create_connection(("192.0.2.1", 9), timeout=0.5)
