"""Threads of the worker's main process never leave a forked pool child holding their locks.

The prefork pool forks from the worker's main process, where ``celery_ecs.periodic`` threads run the
unacked sweep, task protection and backlog metrics. A fork while one of them holds a lock (here:
a module's import lock, the lock a real child hung on in ``getaddrinfo`` -> ``encodings``)
leaves the child blocked forever. None of their calls imports anything (the worker's start did),
and none holds anything a fork waits for.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu.utils.json import dumps, loads

from celery_ecs.liveness import REGISTRY_KEY, WorkerKeys
from celery_ecs.periodic import PeriodicThread
from testkit.aws_standin import AwsStandIn, sdk_environment
from tests.support import AppProcess, send_task, start_worker, wait_for
from tests.test_metrics import NAMESPACE, cloudwatch_values
from tests.test_metrics import moto_server as moto_server  # a fixture
from tests.test_protection import FakeAgent
from tests.test_protection import agent as agent  # a fixture

#: How long a child may take to import a module that is already loaded: generous.
CHILD_DEADLINE = 30.0


@pytest.fixture
def slow_module(tmp_path: Path) -> Iterator[str]:
    """A module whose import takes a second: its import lock is held all that time."""
    name = f"slow_import_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text("import time\ntime.sleep(1.0)\n")
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


def wait_for_child(pid: int, deadline: float) -> int | None:
    """The child's exit status, or None if it is still running at the deadline (then killed)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def test_a_call_that_imports_is_reported(
    slow_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An import on a thread while the pool forks can leave the child holding its lock: calls
    # must import nothing, and one that does says so, naming the module.
    done = threading.Event()

    def call() -> None:
        importlib.import_module(slow_module)
        done.set()

    thread = PeriodicThread("importer", 3600, call)
    with caplog.at_level(logging.WARNING, logger="celery_ecs.periodic"):
        thread.start()
        try:
            assert done.wait(10)
            wait_for(lambda: "importer: its call imported" in caplog.text, 10,
                     what="the warning")  # fmt: skip
        finally:
            thread.stop()
    assert slow_module in caplog.text


@pytest.mark.parametrize("which", ["first", "later"])
def test_a_fork_does_not_wait_for_a_call_in_progress(which: str) -> None:
    # A call waits on I/O holding nothing a child needs, its first included: a fork must not
    # wait for it (a sweep's connect and name lookup: seconds), or the event loop that forks,
    # and the liveness it checks, would wait too.
    calls, in_call, release = [], threading.Event(), threading.Event()
    waiting_call = 1 if which == "first" else 2

    def call() -> None:
        calls.append(time.monotonic())
        if len(calls) == waiting_call:
            in_call.set()
            release.wait(30)  # a round trip that takes its time

    thread = PeriodicThread("slow-io", 0.01, call)
    thread.start()
    try:
        assert in_call.wait(10)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked_in = time.monotonic() - started
        assert wait_for_child(pid, CHILD_DEADLINE) == 0
    finally:
        release.set()
        thread.stop()
    assert forked_in < 1.0, f"the fork waited {forked_in:.1f} s for a call in progress"


def test_no_thread_of_a_busy_worker_imports_anything(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess], agent: FakeAgent, moto_server: AwsStandIn,
) -> None:
    # Every thread of the main process does its real work: the refresher and the watchdog,
    # the sweep restoring a gone worker's message, task protection PUTting to the agent, the
    # queue metrics sent to CloudWatch (moto's server). None may import a module: the worker's
    # start imported them all before its pool forked (celery_ecs.periodic).
    env = {
        **app_env, **sdk_environment(moto_server.url),
        "CELERY_TASK_PROTECTION": "true", "ECS_AGENT_URI": agent.url,
        "CELERY_METRICS_NAMESPACE": NAMESPACE, "CELERY_LIVENESS_TIMEOUT": "3",
    }  # fmt: skip
    worker = start_worker(env, tmp_path, name="busy", queues=("default",))
    processes.append(worker)
    url = env["CELERY_BROKER_URL"]
    send_task(url, "app.tasks.apply_credit", kwargs={
        "idempotency_key": "busy", "account": "acct", "amount": 1, "work_seconds": 2,
    })  # fmt: skip
    # A gone worker's message (another queue: left where the sweep puts it back).
    send_task(url, "app.tasks.noop", queue="long")
    gone = WorkerKeys("default", "gone@host/000000000000")
    payload = loads(redis_client.rpop("long"))
    redis_client.hset(gone.unacked.hash, "gone-tag", dumps([payload, "long", "long"]))
    redis_client.sadd(REGISTRY_KEY, gone.member)

    wait_for(lambda: redis_client.llen("long") == 1, 30, what="the sweep to restore it")
    wait_for(lambda: redis_client.exists("idem:busy"), 30, what="the task")
    wait_for(lambda: any(call["ProtectionEnabled"] for call in agent.calls), 30,
             what="a protection PUT")  # fmt: skip
    wait_for(lambda: cloudwatch_values(moto_server, NAMESPACE, "Backlog", ("Queue", "default")),
             30, what="a metrics round in CloudWatch")  # fmt: skip
    time.sleep(2)  # the refresher and the watchdog run every 0.2 s
    assert "its call imported" not in worker.logs(), worker.logs()


FRESH_STARTS = 5
CONCURRENCY = 4


def test_every_pool_process_of_fresh_workers_runs_a_task_at_once(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    # A child forked while a thread of the worker held a lock hangs until the soft time limit,
    # here far longer than the wait below: each of a worker's children must take a task at once.
    env = {**app_env, "CELERY_TASK_SOFT_TIME_LIMIT": "600", "CELERY_TASK_TIME_LIMIT": "660",
           "CELERY_VISIBILITY_TIMEOUT": "3600"}  # fmt: skip
    for start in range(FRESH_STARTS):
        worker = start_worker(env, tmp_path, name=f"fresh-{start}", concurrency=CONCURRENCY)
        processes.append(worker)
        keys = [f"fresh-{start}-{slot}" for slot in range(CONCURRENCY)]
        for key in keys:
            send_task(env["CELERY_BROKER_URL"], "app.tasks.apply_credit",
                      kwargs={"idempotency_key": key, "account": "acct", "amount": 1,
                              "work_seconds": 1})  # fmt: skip
        wait_for(lambda k=keys: all(redis_client.exists(f"idem:{key}") for key in k), 60,
                 what=f"start {start}: {CONCURRENCY} tasks, one per pool process")
        worker.kill_all()
