"""The result backend (``celery_ecs.results``) against a real Redis: one atomic write per state; and
how processes find it from a plain ``redis://`` / ``rediss://`` URL."""

from __future__ import annotations

import gc
import json
import pickle
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
from celery import Celery, chord, group, states
from celery._state import _set_task_join_will_block, task_join_will_block
from celery.app.task import Context
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult, GroupResult
from packaging.version import Version

from app.celery_app import app
from celery_ecs.results import STORE_UNLESS_SUCCEEDED_SHA, ResultBackend, ResultBackendLoader
from celery_ecs.settings import Settings
from infra.containers import CELERY_APP
from testkit.processes import python_argv
from tests.support import ROOT, AppProcess, start_worker, wait_for

TASK_ID = "9c9b7f56-9f43-4f0e-8c2b-4c33c1a2c3a1"


@pytest.fixture
def backend(redis_url: str) -> ResultBackend:
    return ResultBackend(app=app, url=redis_url)


def stored(client: redis.Redis) -> dict[str, object]:
    return json.loads(client.get(f"celery-task-meta-{TASK_ID}"))


def test_the_app_stores_results_through_it() -> None:
    assert isinstance(app.backend, ResultBackend)
    # A plain URL, as Celery's own tests and other tools read it.
    assert app.conf.result_backend.startswith("redis://")
    # The app as Celery pickles it (for a process that does not fork) keeps its loader.
    assert isinstance(pickle.loads(pickle.dumps(app)).backend, ResultBackend)


@pytest.mark.parametrize(
    "url",
    ["redis://broker.example:6379/0", "rediss://:t0k@broker.example:6379/0?ssl_cert_reqs=required"],
)
def test_a_plain_redis_url_of_either_scheme_gets_the_apps_backend(url: str) -> None:
    config = Settings.from_env({"CELERY_BROKER_URL": url}).celery_config()
    assert config["result_backend"] == url
    scheme = url.split("://")[0]

    ours = Celery("results-check", loader=ResultBackendLoader, set_as_current=False)
    ours.conf.update(config)
    assert type(ours.backend) is ResultBackend
    assert ours.backend.url == url  # the URL itself, TLS options included, reaches the backend
    assert (scheme == "rediss") is bool(ours.backend.connparams.get("ssl_cert_reqs"))

    # Celery's own loader reads the same configuration as its stock Redis backend.
    stock = Celery("results-check", set_as_current=False)
    stock.conf.update(config)
    assert type(stock.backend) is RedisBackend


def celery_cli(env: dict[str, str], *args: str) -> str:
    argv = python_argv(["celery", "--app", CELERY_APP, *args])
    return subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_the_celery_commands_see_a_plain_url_and_the_worker_the_apps_backend(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    """``celery call`` sends, the worker stores the result, ``celery result`` reads it back,
    and ``celery inspect report`` shows the worker's loader and its plain result URL."""
    processes.append(start_worker(app_env, tmp_path))
    task_id = celery_cli(
        app_env, "call", "app.tasks.apply_credit",
        "--kwargs", json.dumps({"idempotency_key": "cli-1", "account": "acct", "amount": 3}),
    ).strip()  # fmt: skip

    def result() -> str:
        return celery_cli(app_env, "result", task_id)

    assert "'applied': True" in wait_for(result, 30, what="the stored result")
    (report,) = json.loads(celery_cli(app_env, "inspect", "report", "--json")).values()
    assert "loader   -> celery_ecs.results.ResultBackendLoader" in report["ok"]
    assert f"results:{app_env['CELERY_BROKER_URL']}" in report["ok"]


def test_a_state_is_stored_with_its_expiry_and_published(
    backend: ResultBackend, redis_client: redis.Redis
) -> None:
    listener = redis_client.pubsub()
    listener.subscribe(f"celery-task-meta-{TASK_ID}")
    listener.get_message(timeout=5)  # the subscription's confirmation

    backend.store_result(TASK_ID, {"applied": True}, states.SUCCESS)

    meta = stored(redis_client)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"applied": True}
    assert 0 < redis_client.ttl(f"celery-task-meta-{TASK_ID}") <= app.conf.result_expires
    message = listener.get_message(timeout=5)
    assert message is not None and json.loads(message["data"])["status"] == states.SUCCESS
    assert backend.get_task_meta(TASK_ID)["status"] == states.SUCCESS


def test_a_failure_is_kept_for_result_failure_expires_as_celerys_own(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """celery 5.7's ``result_failure_expires``: a FAILURE kept for it, any other state for
    ``result_expires``; this backend writes without Celery's ``_set_with_state``, which applies
    it there. Celery 5.6 has no such setting: there every state is kept for ``result_expires``."""
    conf = Celery("failure-expires", set_as_current=False)
    conf.conf.update(result_expires=3600, result_failure_expires=60)
    ours = ResultBackend(app=conf, url=redis_url)
    stock = RedisBackend(app=conf, url=redis_url)
    for state, result in ((states.FAILURE, ValueError("no")), (states.SUCCESS, 1)):
        for backend, task_id in ((stock, f"stock-{state}"), (ours, f"ours-{state}")):
            backend.store_result(task_id, result, state)
        ttl_ours = redis_client.ttl(f"celery-task-meta-ours-{state}")
        ttl_stock = redis_client.ttl(f"celery-task-meta-stock-{state}")
        assert abs(ttl_ours - ttl_stock) <= 1, (state, ttl_ours, ttl_stock)
    assert redis_client.ttl(f"celery-task-meta-ours-{states.SUCCESS}") > 60


def test_a_later_state_replaces_anything_but_success(
    backend: ResultBackend, redis_client: redis.Redis
) -> None:
    backend.store_result(TASK_ID, None, states.STARTED)
    backend.store_result(TASK_ID, {"applied": True}, states.SUCCESS)
    # The first state stored at once (SET NX); a later one replaces it, with its own expiry.
    assert stored(redis_client)["status"] == states.SUCCESS
    assert 0 < redis_client.ttl(f"celery-task-meta-{TASK_ID}") <= app.conf.result_expires
    redis_client.persist(f"celery-task-meta-{TASK_ID}")
    # A second run of a redelivered message (at least once) starts, or fails, after the first
    # succeeded: the success stands.
    backend.store_result(TASK_ID, None, states.STARTED)
    backend.store_result(TASK_ID, ValueError("late"), states.FAILURE)

    assert stored(redis_client)["status"] == states.SUCCESS
    assert stored(redis_client)["result"] == {"applied": True}
    # Left as it was, expiry included: nothing was written.
    assert redis_client.ttl(f"celery-task-meta-{TASK_ID}") == -1


# --- the meta of a state, as Celery's own builds it --------------------------------------------

def requests(results: Celery) -> dict[str, Context | None]:
    """Each shape of request a state is stored with (children made with ``results``)."""
    return {
        "no request": None,
        "empty": Context(),
        "plain": Context(id=TASK_ID, task="app.tasks.noop", args=[1], kwargs={"a": 2}, retries=1,
                         hostname="w@h", delivery_info={"routing_key": "default"}),
        "group": Context(id=TASK_ID, group="g-1", group_index=0),
        "parent": Context(id=TASK_ID, parent_id="p-1", root_id="r-1"),
        "children": Context(id=TASK_ID, children=[
            AsyncResult("c-1", app=results),
            GroupResult("g-2", [AsyncResult("c-2", app=results)], app=results)]),
        "all": Context(id=TASK_ID, group="g-1", parent_id="p-1",
                       children=[AsyncResult("c-1", app=results)], stamped_headers=["s"],
                       stamps={"s": "v"}, task="app.tasks.noop", args=[], kwargs={},
                       delivery_info={"routing_key": "long"}),
        "falsy ids": Context(id=TASK_ID, group="", parent_id=None),
    }  # fmt: skip
RESULTS = {states.SUCCESS: {"applied": True}, states.FAILURE: ValueError("no"),
           states.RETRY: KeyError("again")}  # fmt: skip
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?[+-]\d\d:\d\d")


def same_meta(ours: dict[str, Any], celerys: dict[str, Any]) -> None:
    """Equal; ``date_done`` (taken a moment apart) in the same form and zone, within 5 s."""
    assert ours.keys() == celerys.keys()
    assert {key: value for key, value in ours.items() if key != "date_done"} == {
        key: value for key, value in celerys.items() if key != "date_done"}  # fmt: skip
    if celerys["date_done"] is None:
        assert ours["date_done"] is None
        return
    assert ISO.fullmatch(ours["date_done"]) and ISO.fullmatch(celerys["date_done"])
    done, celerys_done = map(datetime.fromisoformat, (ours["date_done"], celerys["date_done"]))
    assert done.utcoffset() == celerys_done.utcoffset()
    assert abs((done - celerys_done).total_seconds()) < 5


@pytest.mark.parametrize("extended", [False, True], ids=["results", "extended results"])
@pytest.mark.parametrize(
    "zone", [{"timezone": "UTC"}, {"timezone": "America/New_York"},
             {"timezone": None, "enable_utc": True}, {"timezone": None, "enable_utc": False}],
    ids=["UTC", "New York", "no zone", "local"],
)  # fmt: skip
def test_the_meta_of_a_state_is_celerys_own(extended: bool, zone: dict[str, Any]) -> None:
    """Every state (and one of the app's own), every shape of request: what
    ``ResultBackend.result_meta`` builds is what Celery's ``_get_result_meta`` builds."""
    conf = Celery("meta", set_as_current=False)
    conf.conf.update(result_extended=extended, **zone)
    backend = ResultBackend(app=conf, url="redis://127.0.0.1:1/0")  # connects to nothing
    # Children whose results subscribe to nothing: an app without a result backend.
    shapes = requests(Celery("children", set_as_current=False))
    for state in [*sorted(states.ALL_STATES), "PROGRESS"]:
        for shape, request in shapes.items():
            result = backend.encode_result(RESULTS.get(state, {"step": 3}), state)
            traceback = "Traceback ..." if state in states.EXCEPTION_STATES else None
            ours = backend.result_meta(result, state, traceback, request)
            celerys = backend._get_result_meta(result=result, state=state, traceback=traceback,
                                               request=request)  # fmt: skip
            try:
                same_meta(ours, celerys)
            except AssertionError as error:
                raise AssertionError(f"{state}, {shape}: {ours} != {celerys}") from error


def test_an_app_whose_clock_is_its_own_gets_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.now`` replaced (a test's frozen clock, a subclass): the meta is Celery's own."""
    conf = Celery("clock", set_as_current=False)
    backend = ResultBackend(app=conf, url="redis://127.0.0.1:1/0")
    then = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    monkeypatch.setattr(conf, "now", lambda: then)
    assert backend.result_meta(1, states.SUCCESS, None, None)["date_done"] == then.isoformat()

    class Clock(Celery):
        def now(self) -> datetime:
            return then

    backend = ResultBackend(app=Clock("clock", set_as_current=False), url="redis://127.0.0.1:1/0")
    assert backend.result_meta(1, states.SUCCESS, None, None)["date_done"] == then.isoformat()


def test_a_redis_without_the_script_cached_runs_it_from_its_source(
    backend: ResultBackend, redis_client: redis.Redis
) -> None:
    """Redis restarted without its data, or ``SCRIPT FLUSH``: ``EVALSHA`` answers ``NOSCRIPT``,
    having run nothing; the script runs from its source, whole, and is cached again."""
    backend.store_result(TASK_ID, None, states.STARTED)
    redis_client.script_flush()
    backend.store_result(TASK_ID, {"applied": True}, states.SUCCESS)
    assert stored(redis_client)["status"] == states.SUCCESS
    assert redis_client.script_exists(STORE_UNLESS_SUCCEEDED_SHA) == [True]
    redis_client.script_flush()
    backend.store_result(TASK_ID, ValueError("late"), states.FAILURE)  # still atomic: not stored
    assert stored(redis_client)["result"] == {"applied": True}


def test_a_connection_the_server_closed_is_replaced(
    backend: ResultBackend, redis_client: redis.Redis
) -> None:
    """A restart or failover closes the backend's connection between two stores: the next
    store reconnects (the client's pool finds it closed), and is stored once."""
    backend.store_result(f"{TASK_ID}-1", 1, states.SUCCESS)
    killed = redis_client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    backend.store_result(TASK_ID, {"applied": True}, states.SUCCESS)
    assert stored(redis_client)["result"] == {"applied": True}


Failing = tuple[Callable[[int], ResultBackend], list[tuple[Any, ...]]]


@pytest.fixture
def failing_backend(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Failing]:
    """The backend, with the given number of its client's next commands failing as a lost
    connection does, retried without waiting (Celery's retry policy, from the transport
    options as a user sets it, at most 3 retries); and the commands sent."""
    conf = Celery("lost-connection", set_as_current=False)
    conf.conf.result_backend_transport_options = {"retry_policy": {
        "max_retries": 3, "interval_start": 0, "interval_step": 0, "interval_max": 0}}  # fmt: skip
    backend = ResultBackend(app=conf, url=redis_url)
    command = backend.client.execute_command
    calls: list[tuple[Any, ...]] = []

    def failing(times: int) -> ResultBackend:
        def execute_command(*args: Any, **options: Any) -> Any:
            calls.append(args)
            if len(calls) <= times:
                raise redis.ConnectionError("Connection reset by peer")
            return command(*args, **options)

        monkeypatch.setattr(backend.client, "execute_command", execute_command)
        return backend

    yield failing, calls
    conf.close()


def test_a_lost_connection_is_retried_as_celerys_own_backend_retries_it(
    failing_backend: Failing, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    failing, calls = failing_backend
    failing(2).store_result(TASK_ID, {"applied": True}, states.SUCCESS)
    assert stored(redis_client)["result"] == {"applied": True}
    assert len(calls) == 3 and calls[0] == calls[2]  # the same command, sent again
    retried = [r.getMessage() for r in caplog.records if r.name == "celery.backends.redis"]
    assert len(retried) == 2 and "Connection to Redis lost: Retry (0/3)" in retried[0]


def test_a_connection_lost_for_good_is_raised_not_swallowed(
    failing_backend: Failing, redis_client: redis.Redis
) -> None:
    failing, calls = failing_backend
    with pytest.raises(redis.ConnectionError):
        failing(10).store_result(TASK_ID, {"applied": True}, states.SUCCESS)
    assert len(calls) == 4  # the first try and 3 retries
    assert redis_client.get(f"celery-task-meta-{TASK_ID}") is None


@pytest.mark.parametrize("loader", [None, ResultBackendLoader], ids=["celery", "runtime"])
def test_a_chord_applied_by_a_publish_only_process_keeps_what_celerys_own_keeps_subscribed(
    redis_url: str, redis_client: redis.Redis, loader: type[ResultBackendLoader] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What two of Celery 5.7's own pub/sub tests trip over after its canvas tests
    (``devtools.upstream.suites``: excluded, stock Celery failing them the same way). A
    ``GroupResult`` subscribes to each member's channel in any process (``ResultSet``'s vine
    ``barrier`` calls ``AsyncResult.then``, which adds a pending result and ``consume_from``),
    also in one that never waits on results: a prefork pool process applying a chord or
    replacing a task with a group, or a ``publish_only`` one. Celery 5.7 keeps every waiter
    strongly (``AsyncBackendMixin._add_pending_result``, "Issue #4925"), so there the
    subscriptions stay for the process's life; 5.6 kept the group's weak one and dropped them
    with the results. The runtime's result backend keeps exactly what Celery's own keeps, on
    either. Should Celery change this, the test fails: run the two excluded tests again."""
    monkeypatch.setenv("CELERY_BROKER_URL", redis_url)  # Celery reads it first, before broker=
    owner = Celery("pubsub-check", loader=loader, backend=redis_url, set_as_current=False)
    assert type(owner.backend) is (ResultBackend if loader else RedisBackend)

    @owner.task(name="pubsub-check.part", shared=False)
    def part(number: int) -> int:
        return number

    @owner.task(name="pubsub-check.total", shared=False)
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    def subscribed() -> set[str]:
        return set(redis_client.pubsub_channels("celery-task-meta-*"))  # decoded: the fixture

    earlier = subscribed()  # other tests' of this process, if any
    blocks = task_join_will_block()
    _set_task_join_will_block(True)  # as in a pool process (celery.concurrency.prefork)
    try:
        applied = chord(group(part.s(1), part.s(2)), total.s()).apply_async()
        members = {f"celery-task-meta-{result.id}" for result in applied.parent.results}
        del applied
        gc.collect()
        kept = subscribed() - earlier  # though nothing here refers to the results any more
    finally:
        _set_task_join_will_block(blocks)
        owner.backend.result_consumer.stop()  # closes the connection: the server forgets them
        owner.close()
    assert kept == (members if Version(celery.__version__) >= Version("5.7") else set())
    wait_for(lambda: not subscribed() & members, 5, what="the subscriptions gone with it")
