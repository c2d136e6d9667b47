"""Redis commands per task of a real worker: a count, not a time, so it may be asserted.

A worker started as the task definition starts it (``start_worker``) takes rounds of no-op
tasks released at once, as ``bench.worker_budget``'s throughput rounds do, with the result
stored and without; ``INFO commandstats`` deltas (``bench.redis_commands``, the bench's own
count: commands a Lua script runs included, the bench's own excluded) give the commands per
task, by name. Run with ``-s`` to see the breakdown; a failure prints it.

Issue 21 asks for at most 8 commands per task with the result stored and at most 6 without;
reached: about 8.0 and 5.0 (docs, "Measured", section 3: which command is the floor, and why),
since the sweeps, not the tasks, stamp kombu's index. The bounds below are those figures with a
margin for the commands that come with time, not tasks (lease refreshes, sweeps, idle waits):
the code before that cut (10.0 and 7.0) fails them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from celery import Celery

from bench.redis_commands import breakdown, command_calls, per_task
from celery_ecs.liveness import unacked_count
from celery_ecs.transport import WAKE_TOKENS_MAX, wake_key
from tests.support import AppProcess, start_worker, wait_for

#: Commands per task at most (see the module docstring).
MOST_WITH_RESULT = 8.1
MOST_WITHOUT_RESULT = 5.1
#: Tasks per round: enough that the round's fixed costs (the idle waits before and after, a
#: liveness refresh or sweep that falls inside) weigh little, as in the bench (1500).
TASKS = 600
WARMUP_TASKS = 50
QUEUE, STAGING_QUEUE = "default", "commands-staging"
#: As the bench: one process per CPU of a 2-CPU task.
CONCURRENCY = 2


def release_noops(broker_url: str, store: redis.Redis, count: int, *, ignore_result: bool
                  ) -> dict[str, float]:  # fmt: skip
    """Publish ``count`` no-op tasks to a queue nobody consumes, release them onto the worker's
    queue at once (with the wake tokens the app's publish pushes), wait until every one is
    acknowledged; return the worker's commands per task by name."""
    publisher = Celery("commands-publisher", set_as_current=False)
    with publisher.connection_for_write(broker_url) as connection, \
            connection.Producer() as producer:
        for _ in range(count):
            publisher.send_task("app.tasks.noop", queue=STAGING_QUEUE, producer=producer,
                                ignore_result=ignore_result)  # fmt: skip
    before = command_calls(store)
    with store.pipeline() as release:  # one step, MULTI
        release.rename(STAGING_QUEUE, QUEUE)
        release.lpush(wake_key(QUEUE), *[1] * min(count, WAKE_TOKENS_MAX))
        release.execute()
    # LLEN, SMEMBERS and HLEN: the bench's own commands, not counted.
    wait_for(lambda: store.llen(QUEUE) == 0 and unacked_count(store, "default") == 0, 60,
             interval=0.01, what=f"{count} no-op tasks")  # fmt: skip
    # The release's MULTI and EXEC count, as in the bench (2 in a round).
    return per_task(before, command_calls(store), count)


@pytest.fixture
def worker(app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]) -> AppProcess:
    env = {**app_env, "APP_LOG_TASKS": "false"}  # as deployed: no line per task
    started = start_worker(env, tmp_path, queues=(QUEUE,), concurrency=CONCURRENCY)
    processes.append(started)
    return started


@pytest.mark.parametrize(
    ("ignore_result", "most"),
    [(False, MOST_WITH_RESULT), (True, MOST_WITHOUT_RESULT)],
    ids=["result stored", "no result"],
)
def test_commands_per_task_stay_within_the_targets(
    worker: AppProcess, redis_url: str, ignore_result: bool, most: float
) -> None:
    store = redis.Redis.from_url(redis_url)
    release_noops(redis_url, store, WARMUP_TASKS, ignore_result=ignore_result)
    commands = release_noops(redis_url, store, TASKS, ignore_result=ignore_result)
    total = sum(commands.values())
    print(f"\n{'result stored' if not ignore_result else 'no result'}: {total:.2f} commands "
          f"per task\n{breakdown(commands)}")  # fmt: skip
    assert total <= most, f"{total:.2f} commands per task, at most {most:g}:\n" + breakdown(
        commands
    )
    assert "ERROR" not in worker.logs(), worker.logs()[-3000:]
