"""Shared fixtures, and the tiers every test belongs to. Tests that need Redis start a real
redis-server and FAIL if they cannot.

Every test is in one of three tiers, each a registered marker (``pytest -m unit``, ``make
test-unit``): ``unit``, ``redis`` and ``twin``, described in ``tests/tiers.py``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from tests.tiers import GUARD, TIERS, tier_from_fixtures, tiers_of

# What only the fixtures use is imported in them: pytest-xdist's controller process loads this
# file too and runs no test, and tests.support alone (the Pulumi program, Redis's and Flask's
# clients) took it half a CPU-second before any test process started. The test processes import
# all of it anyway, collecting the test modules.
if TYPE_CHECKING:
    import redis
    from flask.testing import FlaskClient

    from devtools.twin.container import Container
    from testkit.redis_server import RedisServer
    from tests.support import AppProcess, ClientFactory

# Property tests: the suite must pass every time on a loaded machine, so the default profile
# checks the same examples on every run with no per-example deadline. HYPOTHESIS_PROFILE=explore
# searches afresh each run, with ten times the examples.
settings.register_profile(
    "suite", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "explore", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


# The tiers (tests/tiers.py): registered, given to every test, and the unit tier guarded.
def pytest_configure(config: pytest.Config) -> None:
    for tier, needs in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {needs}")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects on the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not tiers_of(item):
            item.add_marker(tier_from_fixtures(getattr(item, "fixturenames", ())))


def pytest_collection_finish(session: pytest.Session) -> None:
    # What is alive once the suite is imported and collected stays alive for the whole run: out
    # of the collector's generations (gc.freeze), so the collections every test triggers scan
    # only what the tests allocate. And a youngest generation of 10,000 objects instead of
    # 700: a rendering of the program under mocks allocates hundreds of thousands, in cycles
    # (futures and their callbacks), and was collecting every few hundred. Measured on the dev
    # stack: 0.36 s a rendering, 0.25 s frozen, 0.22 s with both; make test-unit's CPU time
    # 76 s, then 58 s (peak memory of a test process about 350 MB).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


@pytest.fixture(autouse=True)
def unit_guard(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """While a unit test runs, refuse what only the other tiers may do (``UnitGuard``).
    Yields the refusals so far."""
    if request.node.get_closest_marker("unit") is None:
        yield []
        return
    with GUARD.watching(request.node.nodeid) as violations:
        yield violations


# The app refuses to import without a broker URL. In-process imports of the app (entry-point
# and settings tests) get a harmless one; every process a test starts gets the real one.
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    from testkit.redis_server import start_redis

    server = start_redis()  # raises, so the test errors instead of skipping
    yield server
    # A Celery AsyncResult the tests dropped unsubscribes when it is collected: while the server
    # still answers, not at exit, where it would retry against a stopped one.
    gc.collect()
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A broker URL on an empty database."""
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    import redis

    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def app_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for the app's processes, with limits short enough for tests."""
    from tests.support import app_environment

    return app_environment(
        redis_url,
        tmp_path,
        CELERY_TASK_SOFT_TIME_LIMIT="20",
        CELERY_TASK_TIME_LIMIT="22",
        # Above CELERY_HELD_PER_SLOT (4) x 22 + 30 = 118, as the app requires.
        CELERY_VISIBILITY_TIMEOUT="120",
        CELERY_MAX_COUNTDOWN="30",
        # The tests read Celery's per-task lines (off in the product, see APP_LOG_TASKS).
        APP_LOG_TASKS="true",
    )


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers a test runs on the ECS twin; whatever still runs at the end is killed."""
    started: list[Container] = []
    yield started
    for container in started:
        container.kill()


@pytest.fixture
def processes() -> Iterator[list[AppProcess]]:
    """Processes a test starts; whatever is still running at the end is stopped."""
    started: list[AppProcess] = []
    yield started
    for process in started:
        process.kill_all()


@pytest.fixture
def make_client(app_env: dict[str, str]) -> Iterator[ClientFactory]:
    """Test clients of web apps built from the test environment plus ``overrides``."""
    from celery.result import allow_join_result

    from app.web import create_app  # imports the Celery app: only in the tests that use it
    from tests.support import AUTHORIZATION

    def make(**overrides: str) -> FlaskClient:
        client = create_app({**app_env, **overrides}).test_client()
        # Every request carries the test key unless it sets its own Authorization header.
        client.environ_base["HTTP_AUTHORIZATION"] = AUTHORIZATION["Authorization"]
        return client

    # create_app marks this process as one that never waits on task results (see app.web);
    # restore Celery's default for the rest of the session afterwards.
    with allow_join_result():
        yield make


@pytest.fixture
def client(make_client: ClientFactory) -> FlaskClient:
    return make_client()
