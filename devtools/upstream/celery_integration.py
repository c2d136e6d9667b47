"""pytest plugin: Celery's integration suite (``t/integration``) on the project's Redis runtime.

Celery's suite makes its apps with ``celery.contrib.pytest`` (``TestApp``): a session app for
its worker and one app per test, each built from the ``celery_parameters`` fixture (keyword
arguments of ``Celery``) and the suite's ``celery_config`` (its ``TEST_BROKER`` and
``TEST_BACKEND``). The suite's conftest defines ``celery_config`` but not
``celery_parameters``, so this plugin, loaded by a conftest at the root of the unpacked suite
(conftest fixtures override ``celery.contrib.pytest``'s), gives every app of the suite what
``celery_ecs.equip`` gives the project's app (``app.celery_app``), taken from that app so the two
cannot drift:

- the constructor's classes: the task class (``RequeueOnBrokerOutage``), the loader that maps
  ``redis://`` result backends to ``celery_ecs.results.ResultBackend``, the message factory;
- the runtime's settings (``RUNTIME_SETTINGS``): the transport, the consumer, late
  acknowledgement, the transport options. Given to the constructor, they rank above the
  suite's configuration, so no test's ``celery`` marker can turn the runtime off;
- for each worker the suite starts in-process (Celery's ``start_worker``, prefork), at
  ``worker_init``: the keys of its own and the lease (``celery_ecs.runtime.keys_of_this_worker``,
  which the ``celery worker`` command runs at ``celeryd_init``, a signal an embedded worker does
  not send) and the project app's bootsteps (liveness, sweeps, prefetch bound, restores).

So that a run in which the runtime was silently not plugged in cannot pass, the first test
that uses the suite's worker checks that worker (``check_worker``: its consumer, channel,
result backend, task class, bootsteps and lease are the runtime's), and the session fails
at its end unless that check ran and Redis has run the runtime's scripts (``FETCH``, the
result backend's store). The checks are written to ``$UPSTREAM_PROOF`` (JSON) for the nox
session, which fails without them.

Exclusions (``devtools.upstream.suites``) are deselected here, by the suite's node ids; one
that matches no collected test fails the session, so the list cannot go stale silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from celery import Celery, signals
from celery.contrib.testing.worker import test_worker_started

from app import celery_app as project
from celery_ecs.consumer import Consumer
from celery_ecs.liveness import lease_of
from celery_ecs.results import STORE_UNLESS_SUCCEEDED, ResultBackend
from celery_ecs.runtime import RequeueOnBrokerOutage, TaskClassCheck, keys_of_this_worker
from celery_ecs.transport import FETCH, Channel, Transport
from devtools.upstream.suites import CELERY_INTEGRATION, deselect

#: The project app's settings that make the runtime, given to every app of the suite.
RUNTIME_SETTINGS = (
    "broker_transport",
    "worker_consumer",
    "broker_transport_options",
    "result_backend_transport_options",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_cancel_long_running_tasks_on_connection_loss",
    "broker_connection_retry",
    "broker_connection_retry_on_startup",
    "broker_connection_max_retries",
)

#: What was checked, written to ``$UPSTREAM_PROOF`` at the end of the session.
PROOF: dict[str, Any] = {"worker": None, "scripts": None}


def runtime_parameters() -> dict[str, Any]:
    """``Celery(...)`` keyword arguments that give an app the project's runtime."""
    own = project.app
    return {
        "task_cls": own.task_cls,
        "loader": own.loader_cls,
        "amqp": own.amqp_cls,
        **{key: own.conf[key] for key in RUNTIME_SETTINGS},
    }


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    return runtime_parameters()


def runtime_steps() -> dict[str, set[Any]]:
    """The project app's bootsteps, but ``TaskClassCheck``: the suite's own tasks declare bases
    of their own (``celery.Task``), which the check would refuse to run."""
    return {
        blueprint: {step for step in steps if step is not TaskClassCheck}
        for blueprint, steps in project.app.steps.items()
    }


def has_runtime(app: Celery) -> bool:
    return bool(app.conf.broker_transport == project.app.conf.broker_transport)


@signals.worker_init.connect
def equip_worker(sender: Any, **_: Any) -> None:
    """A worker of an app with the runtime gets what a ``celery worker`` of the project's app
    gets: keys and a lease of its own, and the project app's bootsteps."""
    app = sender.app
    if not has_runtime(app):  # a stock app some test makes on its own
        return
    keys_of_this_worker(sender=sender.hostname, instance=sender, conf=app.conf)
    for blueprint, steps in runtime_steps().items():
        app.steps[blueprint].update(steps)


@test_worker_started.connect
def remember_worker(sender: Celery, worker: Any, **_: Any) -> None:
    STARTED.append(worker)


#: Workers started by Celery's ``start_worker``, in order.
STARTED: list[Any] = []


def check_worker(worker: Any) -> dict[str, Any]:
    """What shows that ``worker`` runs the project's runtime; AssertionError if it does not."""
    app = worker.app
    consumer = worker.consumer
    assert isinstance(consumer, Consumer), (
        f"consumer {type(consumer)!r} is not celery_ecs.consumer's"
    )
    connection, task_consumer = consumer.connection, consumer.task_consumer
    assert connection is not None and task_consumer is not None, "the consumer is not consuming"
    channel = connection.default_channel
    assert isinstance(connection.transport, Transport), f"transport {connection.transport!r}"
    assert isinstance(channel, Channel), f"channel {type(channel)!r} is not celery_ecs.transport's"
    task_channel = task_consumer.channel
    assert isinstance(task_channel, Channel), f"task channel {type(task_channel)!r}"
    assert isinstance(app.backend, ResultBackend), f"result backend {type(app.backend)!r}"
    assert app.conf.result_backend.startswith("redis://"), app.conf.result_backend
    assert issubclass(app.Task, RequeueOnBrokerOutage), f"task class {app.Task!r}"
    assert app.conf.task_acks_late is True
    steps = {*worker.blueprint.steps, *consumer.blueprint.steps}
    wanted = {step.name for part in runtime_steps().values() for step in part}
    assert wanted <= steps, f"bootsteps missing: {sorted(wanted - steps)}"
    lease = lease_of(worker)
    with channel.conn_or_acquire() as client:
        assert client.exists(lease.keys.lease), f"no lease {lease.keys.lease} in Redis"
    return {
        "hostname": worker.hostname,
        "consumer": f"{type(consumer).__module__}.{type(consumer).__qualname__}",
        "channel": f"{type(channel).__module__}.{type(channel).__qualname__}",
        "result_backend": f"{type(app.backend).__module__}.{type(app.backend).__qualname__}",
        "task_class": f"{RequeueOnBrokerOutage.__module__}.{RequeueOnBrokerOutage.__qualname__}",
        "bootsteps": sorted(wanted),
        "lease": lease.keys.lease,
    }


@pytest.fixture(autouse=True)
def runtime_under_test(request: pytest.FixtureRequest) -> None:
    """Checks the suite's session worker once, in the first test that uses it."""
    if PROOF["worker"] is None and "celery_session_worker" in request.fixturenames:
        worker = request.getfixturevalue("celery_session_worker")
        PROOF["worker"] = check_worker(worker)


def scripts_run(broker_url: str) -> dict[str, bool]:
    """Whether Redis has run (and so cached) the runtime's scripts."""
    scripts = {"FETCH": FETCH, "STORE_UNLESS_SUCCEEDED": STORE_UNLESS_SUCCEEDED}
    # A script's name in Redis's cache is the SHA-1 of its source (redis.io, EVALSHA).
    shas = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in scripts.items()}
    # redis-py types a reply for its synchronous and asyncio clients alike.
    found = cast("list[bool]", redis.Redis.from_url(broker_url).script_exists(*shas.values()))
    return dict(zip(shas, map(bool, found), strict=True))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    deselect(CELERY_INTEGRATION, config, items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    broker_url = os.environ["TEST_BROKER"]
    failures: list[str] = []
    if PROOF["worker"] is None:
        failures.append("no test used the suite's worker: the runtime was not checked")
    PROOF["scripts"] = scripts = scripts_run(broker_url)
    failures += [f"Redis never ran the runtime's {name} script" for name, ran in scripts.items()
                 if not ran]  # fmt: skip
    PROOF["failures"] = failures
    proof = os.environ.get("UPSTREAM_PROOF")
    if proof:
        Path(proof).write_text(json.dumps(PROOF, indent=2))
    if failures and session.testscollected:
        for failure in failures:
            session.config.get_terminal_writer().line(f"UPSTREAM RUNTIME CHECK: {failure}",
                                                      red=True)  # fmt: skip
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
