"""Liveness that a stuck thread cannot fake: real workers, each stall frozen in place.

A worker ("stalled") runs a long task; another ("other", same pool and queue) would take it the
moment the stalled one's liveness key expires. Then one part of the stalled worker is frozen
(``tests.stall_hooks``): the refresher's name lookup, the refresher itself, or the sweep's name
lookup while the pool forks a replacement child. Whatever is frozen, the task must never run on
two workers at once: the stalled worker keeps its lease, or gives the task up before anyone may
take it. Every run records a sample every 0.1 s (worker, run, time); two runs whose samples
interleave ran at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from celery_ecs.liveness import Deadlines
from tests.stall_hooks import DONE, RUNS, STALL_DIR
from tests.support import AppProcess, send_task, start_worker, wait_for

LIVENESS_TIMEOUT = 6
DEADLINES = Deadlines(LIVENESS_TIMEOUT)
#: Long enough to outlast the stalled worker's key expiring (L) and a sweep taking the task.
TASK_SECONDS = 25.0
#: How long a frozen lookup sleeps: far past the key's expiry.
LOOKUP_STALL = 40


@pytest.fixture
def stall_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "stalls"
    directory.mkdir()
    return directory


def worker_env(app_env: dict[str, str], workdir: Path, stall_dir: Path | None) -> dict[str, str]:
    """A worker reaching Redis by name (``localhost``: a real lookup, with the stall hook), with
    limits the long task fits in, its own heartbeat file and, for the stalled one, its stalls."""
    workdir.mkdir(exist_ok=True)
    env = {
        **app_env,
        "CELERY_BROKER_URL": app_env["CELERY_BROKER_URL"].replace("127.0.0.1", "localhost"),
        "CELERY_LIVENESS_TIMEOUT": str(LIVENESS_TIMEOUT),
        "CELERY_TASK_SOFT_TIME_LIMIT": "60",
        "CELERY_TASK_TIME_LIMIT": "66",
        # Above held per slot (4) x 66 + 30: nothing comes back through the visibility timeout.
        "CELERY_VISIBILITY_TIMEOUT": "900",
        "CELERY_HEARTBEAT_DIR": str(workdir),
    }
    if stall_dir is not None:
        env[STALL_DIR] = str(stall_dir)
    return env


def start(env: dict[str, str], workdir: Path, name: str, processes: list[AppProcess],
          queues: tuple[str, ...] = ("default",), concurrency: int = 1,
          extra: tuple[str, ...] = ()) -> AppProcess:  # fmt: skip
    worker = start_worker(env, workdir, name=name, queues=queues, concurrency=concurrency,
                          extra=("--include", "tests.stall_hooks", *extra))  # fmt: skip
    processes.append(worker)
    return worker


def record_run(url: str, key: str, seconds: float, queue: str = "default") -> None:
    send_task(url, "tests.record_run", kwargs={"key": key, "seconds": seconds}, queue=queue)


def runs(client: redis.Redis, key: str) -> dict[str, tuple[str, float, float]]:
    """Each run of ``key``: its worker, first and last sample."""
    found: dict[str, tuple[str, float, float]] = {}
    for sample in client.lrange(RUNS.format(key=key), 0, -1):
        worker, run, at = sample.split()
        first = found.get(run, (worker, float(at), float(at)))[1]
        found[run] = (worker, first, float(at))
    return found


def assert_never_two_at_once(client: redis.Redis, key: str) -> None:
    by_start = sorted(runs(client, key).values(), key=lambda run: run[1])
    for earlier, later in itertools.pairwise(by_start):
        assert earlier[2] < later[1], f"{key} ran on two workers at once: {earlier} and {later}"


def running_on(client: redis.Redis, key: str, worker: str) -> Callable[[], bool]:
    return lambda: any(w.startswith(f"{worker}@") for w, *_ in runs(client, key).values())


def kill_refresher_connection(client: redis.Redis) -> None:
    """Drop the liveness refresher's connection (the one whose last command was PEXPIRE), so
    that its next refresh connects again, and looks the broker's name up."""
    [refresher] = [c for c in client.client_list() if c["cmd"] == "pexpire"]
    client.client_kill_filter(_id=refresher["id"])


def run_with_a_stall(
    app_env: dict[str, str], tmp_path: Path, stall_dir: Path, client: redis.Redis,
    processes: list[AppProcess], key: str, stall: Callable[[], None],
    stalled_concurrency: int = 1, stalled_extra: tuple[str, ...] = (),
) -> tuple[AppProcess, AppProcess]:  # fmt: skip
    """The stalled worker takes the long task, the other starts, then ``stall`` freezes part of
    the stalled worker; returns both once the task is done."""
    url = app_env["CELERY_BROKER_URL"]
    stalled_env = worker_env(app_env, tmp_path / "stalled", stall_dir)
    stalled = start(stalled_env, tmp_path / "stalled", "stalled", processes,
                    queues=("default", "long"), concurrency=stalled_concurrency,
                    extra=stalled_extra)  # fmt: skip
    record_run(url, key, TASK_SECONDS)
    wait_for(running_on(client, key, "stalled"), 30, what="the task to start on 'stalled'")
    other_env = worker_env(app_env, tmp_path / "other", None)
    other = start(other_env, tmp_path / "other", "other", processes)

    stall()
    wait_for(lambda: client.exists(DONE.format(key=key)), 120, interval=0.5,
             what=f"{key} to complete")  # fmt: skip
    time.sleep(1)  # a second run still going would sample on
    return stalled, other


def test_a_name_lookup_that_hangs_in_the_refresher_costs_nothing(
    app_env: dict[str, str], tmp_path: Path, stall_dir: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    def stall() -> None:
        (stall_dir / "getaddrinfo").write_text(f"{LOOKUP_STALL} liveness")
        kill_refresher_connection(redis_client)

    stalled, _ = run_with_a_stall(app_env, tmp_path, stall_dir, redis_client, processes,
                                  "lookup", stall)  # fmt: skip

    assert_never_two_at_once(redis_client, "lookup")
    # The refresher connected again to the address it had, within a tick: nothing was lost.
    [(worker, _, _)] = runs(redis_client, "lookup").values()
    assert worker.startswith("stalled@")
    assert "using its last address" in stalled.logs()
    assert "liveness lost" not in stalled.logs()


def test_a_refresher_stuck_in_a_call_loses_the_liveness_in_time(
    app_env: dict[str, str], tmp_path: Path, stall_dir: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    flag = stall_dir / "pexpire"

    def stall() -> None:
        flag.touch()
        # Frozen past the moment its key expires and a sweep of the other worker can take the
        # task; then the refresher may go on (the worker has given the task up by then).
        time.sleep(LIVENESS_TIMEOUT + DEADLINES.sweep_interval + 2)
        flag.unlink()

    stalled, _ = run_with_a_stall(app_env, tmp_path, stall_dir, redis_client, processes,
                                  "stuck", stall)  # fmt: skip

    assert_never_two_at_once(redis_client, "stuck")
    assert "liveness lost (no successful refresh" in stalled.logs()
    assert len(runs(redis_client, "stuck")) >= 2  # given up, and run again: at least once


def test_a_fork_during_a_sweep_stuck_on_a_lookup_holds_up_no_liveness(
    app_env: dict[str, str], tmp_path: Path, stall_dir: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    url = app_env["CELERY_BROKER_URL"]

    def stall() -> None:
        (stall_dir / "getaddrinfo").write_text(f"{LOOKUP_STALL} unacked-sweep")
        time.sleep(DEADLINES.sweep_interval + 1)  # the next sweep is now stuck in its lookup
        # A short task on the stalled worker's other pool process, which then exits (one task
        # per child): the pool forks a replacement during the sweep.
        record_run(url, "short", 0.1, queue="long")
        wait_for(lambda: redis_client.exists(DONE.format(key="short")), 30,
                 what="the short task")  # fmt: skip

    stalled, _ = run_with_a_stall(
        app_env, tmp_path, stall_dir, redis_client, processes, "fork", stall,
        stalled_concurrency=2, stalled_extra=("--max-tasks-per-child", "1"),
    )

    assert_never_two_at_once(redis_client, "fork")
    [(worker, _, _)] = runs(redis_client, "fork").values()
    assert worker.startswith("stalled@")
    assert "liveness lost" not in stalled.logs()


def test_forks_wait_for_no_thread_stuck_in_its_first_call(
    app_env: dict[str, str], tmp_path: Path, stall_dir: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    # Every lookup of the sweep's and the metrics' threads hangs from the worker's start: their
    # first calls are stuck. The pool forks a new child after each task (one task per child):
    # no fork may wait for those calls, nor may the event loop that forks, nor the liveness.
    (stall_dir / "getaddrinfo").write_text(f"{LOOKUP_STALL} unacked-sweep")
    env = {**worker_env(app_env, tmp_path / "stalled", stall_dir),
           "CELERY_METRICS_NAMESPACE": "CeleryEcs/test"}  # no AWS region: to stdout  # fmt: skip
    stalled = start(env, tmp_path / "stalled", "stalled", processes,
                    extra=("--max-tasks-per-child", "1"))  # fmt: skip
    url = app_env["CELERY_BROKER_URL"]
    began = time.monotonic()
    for number in range(3):
        record_run(url, f"fork-{number}", 0.1)
        wait_for(lambda n=number: redis_client.exists(DONE.format(key=f"fork-{n}")), 30,
                 what=f"task {number}")  # fmt: skip
    took = time.monotonic() - began
    # Three tasks, two new children between them: about 10 s unstalled (billiard replaces an
    # exited child within its 5 s maintenance round), not the 40 s of a stuck first call.
    assert took < LOOKUP_STALL - 15, f"3 tasks took {took:.1f} s: the forks waited"
    # The sweep's lookups hang all along: each is cut at the lookup's bound (5 s), not the 40 s
    # of the lookup. Then the sweep goes on with the broker's last address if a connection of
    # the process resolved it before (the resolver is shared), else it fails this round.
    cut = ("TimeoutError(); using its last address", "unacked sweep: broker unreachable")
    wait_for(lambda: any(line in stalled.logs() for line in cut), LOOKUP_STALL - 10,
             what="the stuck lookup to be cut")  # fmt: skip
    assert "liveness lost" not in stalled.logs()
