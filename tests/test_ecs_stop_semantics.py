"""ECS stop semantics, reproduced locally with the worker the program renders.

Each worker here is its pool's task definition as rendered by the Pulumi program under mocks,
run on the ECS twin as Fargate runs it (``testkit.rendered_worker``), against a real
redis-server, and is stopped as ECS stops a task: SIGTERM, wait the rendered ``stopTimeout``,
SIGKILL. The tasks are ``app.tasks.apply_credit``: they count their attempts and apply their
effect once per key.

The pools are scaled down so the tests take seconds (``maxCountdown`` 0):

- ``quick``: taskTimeout 3 -> warm shutdown, stopTimeout 14, visibility timeout 14.
- ``slow``: taskTimeout 30, maxStopTimeout 15 -> cold shutdown (SIGTERM remapped to SIGQUIT)
  after a 5 s soft shutdown, stopTimeout 15, visibility timeout 43.

The liveness timeout is the app's default (15 s): the rendered environment does not set it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest
import redis
from celery.bin.celery import celery as celery_cli

from celery_ecs import settings as env_names
from celery_ecs.liveness import Deadlines, unacked_count
from celery_ecs.settings import Settings
from devtools.twin.container import Container
from infra.budget import worker_budget
from testkit.rendered_worker import (
    WorkerDefinition,
    ecs_stop,
    start_rendered_worker,
    worker_definitions,
)
from tests.support import run_program, send_task, wait_for

# The tier (tests/tiers.py): workers run as containers on the ECS twin, as root.
pytestmark = pytest.mark.twin

STACK: dict[str, object] = {
    "maxCountdown": 0,
    "workers": [
        {"name": "quick", "queues": ["default"], "taskTimeout": 3, "concurrency": 4},
        {
            "name": "slow",
            "queues": ["long"],
            "taskTimeout": 30,
            "maxStopTimeout": 15,
            "concurrency": 4,
        },
    ],
}
#: Tasks in flight per test: one per pool slot (both pools have concurrency 4).
TASKS = 4
AMOUNT = 10


def render_workers(stack: Mapping[str, object]) -> dict[str, WorkerDefinition]:
    """Pool name -> its worker task definition, rendered as the tests render the program."""
    return worker_definitions(run_program(stack))


@pytest.fixture(scope="module")
def workers() -> dict[str, WorkerDefinition]:
    return render_workers(STACK)


@pytest.fixture
def quick(workers: dict[str, WorkerDefinition]) -> WorkerDefinition:
    worker = workers["quick"]
    assert env_names.REMAP_SIGTERM not in worker.environment  # warm: SIGTERM stays SIGTERM
    return worker


@pytest.fixture
def slow(workers: dict[str, WorkerDefinition]) -> WorkerDefinition:
    worker = workers["slow"]
    assert worker.environment[env_names.REMAP_SIGTERM] == "SIGQUIT"
    assert worker.environment[env_names.SOFT_SHUTDOWN_TIMEOUT] == "5"
    return worker


def send_credits(broker_url: str, queue: str, keys: list[str], work_seconds: float) -> None:
    for key in keys:
        send_task(
            broker_url,
            "app.tasks.apply_credit",
            queue=queue,
            kwargs={
                "idempotency_key": key,
                "account": "acct",
                "amount": AMOUNT,
                "work_seconds": work_seconds,
            },
        )


def attempts(client: redis.Redis, keys: list[str]) -> list[int]:
    return [int(value or 0) for value in client.mget([f"attempts:{key}" for key in keys])]


def applied(client: redis.Redis, keys: list[str]) -> list[bool]:
    return [bool(client.exists(f"idem:{key}")) for key in keys]


def unacked(client: redis.Redis, pool: str) -> int:
    return unacked_count(client, pool)


def visibility_timeout(worker: WorkerDefinition) -> int:
    return int(worker.environment[env_names.VISIBILITY_TIMEOUT])


def assert_each_applied_once(client: redis.Redis, keys: list[str]) -> None:
    assert all(applied(client, keys)), applied(client, keys)
    assert client.hget("ledger:balances", "acct") == str(AMOUNT * len(keys))


def test_warm_stop_lets_tasks_in_flight_finish_and_exits_before_the_sigkill(
    quick: WorkerDefinition,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    worker = start_rendered_worker(quick, redis_url, tmp_path, "worker")
    containers.append(worker)
    keys = [f"warm-{i}" for i in range(TASKS)]
    send_credits(redis_url, "default", keys, work_seconds=2)
    wait_for(lambda: attempts(redis_client, keys) == [1] * TASKS, 30, what="all tasks to start")

    outcome = ecs_stop(worker)

    assert outcome.exit_code == 0, worker.logs()  # exited by itself: not SIGKILLed
    assert_each_applied_once(redis_client, keys)
    assert attempts(redis_client, keys) == [1] * TASKS  # nothing ran twice
    assert redis_client.llen("default") == 0  # nothing requeued
    assert unacked(redis_client, "quick") == 0


def test_warm_stop_runs_no_reserved_message_and_puts_each_back(
    quick: WorkerDefinition,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    """A short-task pool reserves two messages per slot (the budget's prefetch): at a warm stop
    the ones not started are not run (the stop timeout covers one task per slot), and they are
    back on their queue, each run once later."""
    assert quick.environment[env_names.PREFETCH_MULTIPLIER] == "2"
    worker = start_rendered_worker(quick, redis_url, tmp_path, "worker")
    containers.append(worker)
    keys = [f"reserved-{i}" for i in range(2 * TASKS)]
    send_credits(redis_url, "default", keys, work_seconds=2)
    wait_for(lambda: sum(attempts(redis_client, keys)) == TASKS, 30, what="a task per slot")
    wait_for(lambda: unacked(redis_client, "quick") == 2 * TASKS, 30, what="the reserved ones")

    outcome = ecs_stop(worker)

    assert outcome.exit_code == 0, worker.logs()  # exited by itself: not SIGKILLed
    runs = attempts(redis_client, keys)
    assert sorted(runs) == [0] * TASKS + [1] * TASKS, runs  # the reserved ones did not start
    wait_for(lambda: redis_client.llen("default") == TASKS, 30, what="the reserved ones back")
    assert unacked(redis_client, "quick") == 0


def test_cold_stop_finishes_short_tasks_and_requeues_long_ones_at_once(
    slow: WorkerDefinition,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    first = start_rendered_worker(slow, redis_url, tmp_path, "first")
    containers.append(first)
    # Short tasks end within the 5 s soft shutdown; long ones cannot (they fit the pool's 30 s
    # taskTimeout but not the 15 s stop cap).
    short, long = ["short-0", "short-1"], ["long-0", "long-1"]
    send_credits(redis_url, "long", short, work_seconds=2)
    send_credits(redis_url, "long", long, work_seconds=8)
    wait_for(
        lambda: attempts(redis_client, short + long) == [1] * TASKS, 30, what="all tasks to start"
    )

    with ThreadPoolExecutor(max_workers=1) as stopper:
        sigterm_at = time.monotonic()
        stopping = stopper.submit(ecs_stop, first)
        # ECS starts the replacement while the old task drains.
        second = start_rendered_worker(slow, redis_url, tmp_path, "second")
        containers.append(second)
        # Back on the queue when the soft shutdown ends, not after the 43 s visibility timeout:
        # the wait gives up before the visibility timeout could have brought them back.
        wait_for(
            lambda: attempts(redis_client, long) == [2, 2],
            visibility_timeout(slow) - (time.monotonic() - sigterm_at) - 1,
            what="the long tasks to run again on the second worker",
        )
        outcome = stopping.result()

    assert outcome.exit_code == 0, first.logs()  # exited by itself: not SIGKILLed
    assert "Restoring 2 unacknowledged message(s)" in first.logs()

    wait_for(lambda: all(applied(redis_client, long)), 30, what="the long tasks' effects")
    wait_for(lambda: unacked(redis_client, "slow") == 0, 30, what="the acks")
    assert_each_applied_once(redis_client, short + long)
    assert attempts(redis_client, short) == [1, 1]  # finished during the soft shutdown
    assert attempts(redis_client, long) == [2, 2]  # at-least-once: cancelled, then run again
    assert redis_client.llen("long") == 0


def test_killed_worker_tasks_come_back_within_seconds_long_before_the_visibility_timeout(
    slow: WorkerDefinition,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    # The rendered environment leaves the liveness timeout at the app's default (15 s); the
    # pool's visibility timeout is 43 s.
    deadlines = Deadlines(Settings.from_env(
        {**slow.environment, env_names.BROKER_URL: redis_url}).liveness_timeout)  # fmt: skip
    first = start_rendered_worker(slow, redis_url, tmp_path, "first")
    containers.append(first)
    keys = [f"crash-{i}" for i in range(TASKS)]
    send_credits(redis_url, "long", keys, work_seconds=2)
    wait_for(lambda: attempts(redis_client, keys) == [1] * TASKS, 30, what="all tasks to start")

    first.kill()  # the container dies: no shutdown, nothing restored
    killed_at = time.monotonic()
    containers.append(start_rendered_worker(slow, redis_url, tmp_path, "second"))

    # While the first worker's lease may still live, the running second worker must not take
    # its messages: it cannot tell it from a live one.
    time.sleep(max(0.0, deadlines.timeout - deadlines.tick - 1 - (time.monotonic() - killed_at)))
    assert attempts(redis_client, keys) == [1] * TASKS
    assert unacked(redis_client, "slow") == TASKS
    assert redis_client.llen("long") == 0

    # Then the second worker's sweep (celery_ecs.recovery) puts them back and runs them: within 30 s
    # of the crash, whatever the visibility timeout.
    wait_for(lambda: min(attempts(redis_client, keys)) == 2,
             30 - (time.monotonic() - killed_at), what="every task to run again")  # fmt: skip
    wait_for(lambda: all(applied(redis_client, keys)), 60, what="the redelivered tasks")
    wait_for(lambda: unacked(redis_client, "slow") == 0, 30, what="the acks")
    assert_each_applied_once(redis_client, keys)
    assert attempts(redis_client, keys) == [2] * TASKS  # at-least-once: each ran twice


# --- the two sides agree --------------------------------------------------------------------------

#: Stack configurations and, per pool, the budget's inputs (taskTimeout, maxStopTimeout,
#: maxCountdown) they must produce. Both shutdown modes, defaults and the warm/cold boundary.
AGREEMENT_CASES: list[tuple[str, dict[str, object], dict[str, tuple[int, int, int]]]] = [
    ("default stack", {}, {"default": (300, 120, 300)}),
    ("scaled pools of these tests", STACK, {"quick": (3, 120, 0), "slow": (30, 15, 0)}),
    (
        "warm/cold boundary",
        {
            "maxCountdown": 3600,
            "workers": [
                {"name": "hooks", "queues": ["default"], "taskTimeout": 100},
                {"name": "reports", "queues": ["long"], "taskTimeout": 101, "maxStopTimeout": 120},
            ],
        },
        {"hooks": (100, 120, 3600), "reports": (101, 120, 3600)},
    ),
]


def test_agreement_cases_cover_both_shutdown_modes() -> None:
    modes = {
        worker_budget(timeout, max_stop_timeout=cap, max_countdown=countdown).shutdown
        for _, _, pools in AGREEMENT_CASES
        for timeout, cap, countdown in pools.values()
    }
    assert modes == {"warm", "cold"}


@pytest.mark.parametrize(
    ("case", "stack", "pools"), AGREEMENT_CASES, ids=[case for case, _, _ in AGREEMENT_CASES]
)
def test_rendered_worker_environment_yields_the_budget(
    case: str, stack: dict[str, object], pools: dict[str, tuple[int, int, int]]
) -> None:
    rendered = render_workers(stack)
    assert set(rendered) == set(pools), case
    for pool, (task_timeout, max_stop_timeout, max_countdown) in pools.items():
        budget = worker_budget(
            task_timeout, max_stop_timeout=max_stop_timeout, max_countdown=max_countdown
        )
        worker = rendered[pool]
        env = worker.environment
        settings = Settings.from_env({**env, env_names.BROKER_URL: "redis://broker:6379/0"})

        assert worker.stop_timeout == budget.stop_timeout, pool
        assert (settings.soft_time_limit, settings.time_limit) == (
            budget.soft_time_limit,
            budget.time_limit,
        ), pool
        assert settings.visibility_timeout == budget.visibility_timeout, pool
        assert settings.prefetch_multiplier == budget.prefetch_multiplier, pool
        assert settings.max_countdown == budget.max_countdown, pool
        assert settings.soft_shutdown_timeout == budget.soft_shutdown_timeout, pool
        assert settings.soft_shutdown_on_idle is False, pool
        assert settings.task_protection is budget.task_protection, pool
        assert settings.worker_pool == pool
        # Celery reads REMAP_SIGTERM itself, at import of its worker module.
        assert env.get(env_names.REMAP_SIGTERM) == (
            "SIGQUIT" if budget.shutdown == "cold" else None
        ), pool
        # What kombu ends up with: the visibility timeout, and the pool-level unacked keys
        # (each worker replaces the first two with keys of its own, celery_ecs.liveness).
        transport = settings.celery_config()["broker_transport_options"]
        assert transport == {
            "visibility_timeout": budget.visibility_timeout,
            "unacked_key": f"unacked:{pool}",
            "unacked_index_key": f"unacked_index:{pool}",
            "unacked_mutex_key": f"unacked_mutex:{pool}",
        }, pool


def celery_cli_environment(subcommand: str) -> set[str]:
    """Every environment variable Celery's CLI reads for ``celery <subcommand>``.

    Celery runs its click CLI with ``auto_envvar_prefix="CELERY"``: each option also reads
    ``CELERY_<OPTION>`` (global options) or ``CELERY_<SUBCOMMAND>_<OPTION>``, besides any
    explicit ``envvar``.
    """
    root = click.Context(celery_cli, info_name="celery", auto_envvar_prefix="CELERY")
    command = celery_cli.commands[subcommand]
    child = click.Context(command, parent=root, info_name=subcommand)
    names: set[str] = set()
    for context, params in ((root, celery_cli.params), (child, command.params)):
        for param in params:
            if not isinstance(param, click.Option) or not param.name:
                continue
            explicit = param.envvar or ()
            names.update([explicit] if isinstance(explicit, str) else explicit)
            names.add(f"{context.auto_envvar_prefix}_{param.name.upper()}")
    return names


def rendered_celery_processes() -> Iterator[tuple[str, str, Mapping[str, str]]]:
    for stack in (STACK, {}):
        for service, rendered in run_program(stack).task_definitions().items():
            command = rendered.command
            if command[:1] == ["celery"]:
                subcommand = next(arg for arg in command[1:] if arg in celery_cli.commands)
                yield service, subcommand, {**rendered.environment, **rendered.secrets}


def test_rendered_environment_sets_no_option_of_celerys_cli() -> None:
    """An app variable that is also a CLI option changes the command line behind its back: a
    pool name in ``CELERY_WORKER_POOL`` would be read as ``celery worker --pool <name>``, and
    the worker would refuse to start."""
    clashes = {
        f"{service} (celery {subcommand})": sorted(set(env) & celery_cli_environment(subcommand))
        for service, subcommand, env in rendered_celery_processes()
    }
    assert {service: names for service, names in clashes.items() if names} == {}
