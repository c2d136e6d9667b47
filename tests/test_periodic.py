"""Threads of the worker's main process never leave a forked pool child holding their locks.

The prefork pool forks from the worker's main process, where ``app.periodic`` threads run the
unacked sweep, task protection and backlog metrics. A fork while one of them holds a lock (here:
a module's import lock, the lock a real child hung on in ``getaddrinfo`` -> ``encodings``)
leaves the child blocked forever. ``FORK_GATE`` makes every fork wait for a thread's first call
(the imports happen then), and for nothing else.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.periodic import PeriodicThread
from tests.support import AppProcess, send_task, start_worker, wait_for

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


def test_a_fork_during_a_periodic_call_waits_and_the_child_is_not_left_holding_its_lock(
    slow_module: str,
) -> None:
    inside_call = threading.Event()

    def call() -> None:
        inside_call.set()
        importlib.import_module(slow_module)

    thread = PeriodicThread("importer", 3600, call)
    thread.start()
    try:
        assert inside_call.wait(10)
        time.sleep(0.2)  # well inside the one-second import
        pid = os.fork()
        if pid == 0:  # the child: what a pool process does first, at the worst moment
            try:
                importlib.import_module(slow_module)
            finally:
                os._exit(0)
        status = wait_for_child(pid, CHILD_DEADLINE)
    finally:
        thread.stop()

    assert status == 0, "the child hung on a lock its parent's thread held at the fork"


def test_work_does_not_start_while_a_fork_is_in_progress() -> None:
    # The gate is shared by all periodic threads; a fork holds it exclusively, so a call due at
    # that moment waits for the fork instead of taking locks the child would copy.
    from app.periodic import FORK_GATE

    calls: list[float] = []
    FORK_GATE.before_fork()
    thread = PeriodicThread("counter", 3600, lambda: calls.append(time.monotonic()))
    try:
        thread.start()
        time.sleep(0.5)
        assert calls == []
    finally:
        FORK_GATE.after_fork_in_parent()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    assert len(calls) == 1


def test_a_fork_does_not_wait_for_a_later_call_in_progress() -> None:
    # After the first call (the imports), a call waits on I/O holding nothing a child needs:
    # a fork must not wait for it (a sweep's Redis round trips: seconds), or the event loop that
    # forks, and the liveness, would wait too.
    calls, in_second_call, release = [], threading.Event(), threading.Event()

    def call() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            in_second_call.set()
            release.wait(30)  # a round trip that takes its time

    thread = PeriodicThread("slow-io", 0.01, call)
    thread.start()
    try:
        assert in_second_call.wait(10)
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


def test_a_thread_that_never_holds_the_gate_runs_during_a_fork() -> None:
    from app.periodic import FORK_GATE

    calls: list[float] = []
    FORK_GATE.before_fork()
    thread = PeriodicThread("watchdog", 0.01, lambda: calls.append(1.0), gate_first_call=False)
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) >= 3
    finally:
        FORK_GATE.after_fork_in_parent()
        thread.stop()


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
