"""The upstream suites' machinery (devtools.upstream): what plugs the runtime into Celery's and
kombu's own tests, and the checks that make a run without it fail. The suites themselves run in
the nox sessions ``upstream(...)`` (noxfile.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

import noxfile
from celery_ecs import RequeueOnBrokerOutage
from celery_ecs.results import ResultBackend
from celery_ecs.transport import Transport
from devtools.upstream import celery_integration, kombu_redis, suites
from devtools.upstream.suites import EXCLUDED, Exclusion, Suite

ROOT = Path(__file__).parent.parent


def test_the_docs_list_exactly_the_excluded_tests() -> None:
    assert suites.EXCLUSIONS_BLOCK.content() == suites.exclusion_table(), (
        "docs/reference/upstream-exclusions.md's table differs from "
        "devtools.upstream.suites.EXCLUDED: run make docs"
    )


def test_every_exclusion_has_a_reason_and_a_supported_release() -> None:
    supported = {
        "celery": {celery for celery, _ in noxfile.PAIRS.values()},
        "kombu": {kombu for _, kombu in noxfile.PAIRS.values()},
    }
    for item in EXCLUDED:
        assert item.reason.strip(), item
        assert set(item.releases) <= supported[item.suite.package], item
        assert any(item.test.startswith(path) for path in item.suite.tests), item


def item(nodeid: str, parameter: str | None = None) -> Any:
    callspec = None if parameter is None else SimpleNamespace(id=parameter)
    return SimpleNamespace(nodeid=nodeid, callspec=callspec)


class Deselected:
    """A pytest config of a run of the suite's whole test paths."""

    def __init__(self) -> None:
        self.args = list(SUITE.tests)
        self.items: list[Any] = []
        self.hook = SimpleNamespace(pytest_deselected=lambda items: self.items.extend(items))


SUITE = Suite("s", "celery", ("t",), ("t/a.py",), plugins=(), timeout=1)


def with_exclusions(monkeypatch: pytest.MonkeyPatch, *exclusions: Exclusion) -> None:
    monkeypatch.setattr(suites, "EXCLUDED", exclusions)
    monkeypatch.setattr(suites, "installed_release", lambda package: "1.0")


def test_exclusions_are_deselected_by_test_class_and_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_exclusions(
        monkeypatch,
        Exclusion(SUITE, "t/a.py::test_K::test_one", "r", ("1.0",)),
        Exclusion(SUITE, "t/a.py::test_L", "r", ("1.0",)),
        Exclusion(SUITE, "t/a.py", "r", ("1.0",), parameter="p1"),
        Exclusion(SUITE, "t/a.py::test_M", "r", ("0.9",)),  # another release: runs
    )
    items = [item("t/a.py::test_K::test_one"), item("t/a.py::test_K::test_one_more"),
             item("t/a.py::test_L::test_x"), item("t/a.py::test_N::test_y[p0]", "p0"),
             item("t/a.py::test_N::test_y[p1]", "p1"), item("t/a.py::test_M::test_z")]  # fmt: skip
    config = Deselected()
    suites.deselect(SUITE, config, items)  # type: ignore[arg-type]
    kept = ["t/a.py::test_K::test_one_more", "t/a.py::test_N::test_y[p0]", "t/a.py::test_M::test_z"]
    assert [i.nodeid for i in items] == kept
    assert len(config.items) == 3


def test_an_exclusion_that_matches_no_test_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with_exclusions(monkeypatch, Exclusion(SUITE, "t/a.py::test_gone", "r", ("1.0",)))
    with pytest.raises(pytest.UsageError, match="test_gone"):
        suites.deselect(SUITE, Deselected(), [item("t/a.py::test_here")])  # type: ignore[arg-type]
    # Not when only some of the suite's tests run (pytest arguments after nox's --).
    some = Deselected()
    some.args = ["t/a.py::test_here"]
    suites.deselect(SUITE, some, [item("t/a.py::test_here")])  # type: ignore[arg-type]


@pytest.fixture
def broker(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A broker URL for the apps made here (Celery prefers ``CELERY_BROKER_URL`` to the URL
    an app is given, and the suite's conftest sets a placeholder)."""
    monkeypatch.setenv("CELERY_BROKER_URL", redis_url)
    return redis_url


def test_the_parameters_give_an_app_the_runtime(broker: str) -> None:
    app = Celery(broker=broker, backend=broker, **celery_integration.runtime_parameters())
    assert isinstance(app.backend, ResultBackend)
    assert app.conf.result_backend == broker  # a plain URL, as Celery's suite tests it
    assert app.connection_for_write().transport_cls == "celery_ecs.transport:Transport"
    assert issubclass(app.Task, RequeueOnBrokerOutage)
    assert app.conf.task_acks_late is True


@pytest.fixture
def embedded_worker(broker: str) -> Iterator[Any]:
    """A worker of an app given the runtime's parameters, started as Celery's suite starts its
    own (``start_worker``, prefork)."""
    app = Celery(broker=broker, backend=broker, **celery_integration.runtime_parameters())
    with start_worker(app, pool="prefork", concurrency=1, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=30) as worker:  # fmt: skip
        yield worker


def test_a_worker_of_the_suite_runs_the_runtime(embedded_worker: Any) -> None:
    proof = celery_integration.check_worker(embedded_worker)
    assert proof["consumer"] == "celery_ecs.consumer.Consumer"
    assert proof["channel"] == "celery_ecs.transport.Channel"
    assert "celery_ecs.liveness.LivenessStep" in proof["bootsteps"]


def test_a_stock_worker_fails_the_check(broker: str) -> None:
    app = Celery(broker=broker, backend=broker)
    with (
        start_worker(app, pool="prefork", concurrency=1, perform_ping_check=False,
                     loglevel="WARNING") as worker,
        pytest.raises(AssertionError, match="consumer"),
    ):  # fmt: skip
        celery_integration.check_worker(worker)


def test_the_runtime_scripts_are_found_only_once_run(broker: str) -> None:
    # The server is shared by the tests of this process: another may have run the scripts.
    redis.Redis.from_url(broker).script_flush()
    assert celery_integration.scripts_run(broker) == {
        "FETCH": False, "STORE_UNLESS_SUCCEEDED": False}  # fmt: skip
    app = Celery(broker=broker, backend=broker, **celery_integration.runtime_parameters())
    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, Transport)
        connection.default_channel.basic_get("nothing")  # runs FETCH
    app.backend.store_result("t", 1, "SUCCESS")
    assert celery_integration.scripts_run(broker) == {
        "FETCH": True, "STORE_UNLESS_SUCCEEDED": True}  # fmt: skip


def test_kombus_tests_not_on_the_runtime_fail_the_check() -> None:
    # This process runs kombu's own classes: the check must refuse them.
    with pytest.raises(AssertionError, match=r"kombu\.transport\.redis\.Channel"):
        kombu_redis.check_replacement()


def test_a_test_file_newer_than_a_release_runs_only_from_that_release() -> None:
    backend = "t/integration/test_redis_backend.py"
    assert backend not in suites.CELERY_INTEGRATION.paths("5.6.3")
    assert backend in suites.CELERY_INTEGRATION.paths("5.7.0")
    assert "t/integration/test_canvas.py" in suites.CELERY_INTEGRATION.paths("5.6.3")
