"""The container health checks read a heartbeat file the process keeps fresh."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import redis

from app.celery_app import HEARTBEAT_INTERVAL, app
from devtools.processes import python_argv
from infra.containers import BEAT_COMMAND, worker_command
from tests.support import ROOT, AppProcess, send_task, start_process, wait_for

#: Seconds between two beat ticks at most (``beat_max_loop_interval``).
BEAT_TICK = app.conf.beat_max_loop_interval


def check(role: str, heartbeat_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
           "CELERY_HEARTBEAT_DIR": str(heartbeat_dir)}
    return subprocess.run([sys.executable, "-m", "app.health", role], env=env,
                          capture_output=True, text=True, timeout=30)


def test_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    (tmp_path / "celery-worker.heartbeat").touch()
    assert check("worker", tmp_path).returncode == 0


def test_missing_or_stale_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    missing = check("beat", tmp_path)
    assert missing.returncode == 1 and "has not written a heartbeat" in missing.stderr

    stale = tmp_path / "celery-beat.heartbeat"
    stale.touch()
    old = time.time() - 120
    os.utime(stale, (old, old))
    result = check("beat", tmp_path)
    # 120 s, and whatever the check took to start on a busy machine.
    assert result.returncode == 1 and re.search(r"heartbeat is 1[2-9]\ds old", result.stderr)


def test_health_check_does_not_import_celery() -> None:
    code = "import sys, app.health; print('celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=30)
    assert out.stdout.strip() == "False"


def unwritable_directory(tmp_path: Path) -> Path:
    """A heartbeat directory nobody can create, root included: its parent is a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return blocker / "heartbeats"


def test_a_worker_that_cannot_write_its_heartbeat_says_so_keeps_working_and_fails_its_check(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    heartbeats = unwritable_directory(tmp_path)
    env = {**app_env, "CELERY_HEARTBEAT_DIR": str(heartbeats)}
    worker = start_process("worker", python_argv(worker_command("hb", ["default"], 1)), env,
                           tmp_path)
    processes.append(worker)
    send_task(env["CELERY_BROKER_URL"], "app.tasks.apply_credit",
              kwargs={"idempotency_key": "hb-1", "account": "acct", "amount": 1})

    # The worker consumes as usual: the heartbeat is not the broker connection.
    wait_for(lambda: redis_client.exists("idem:hb-1"), 30, what="the task to run")
    time.sleep(HEARTBEAT_INTERVAL + 1)  # at least one more heartbeat round
    logs = worker.logs()
    assert worker.alive(), logs
    assert "Connection to broker lost" not in logs
    assert logs.count(f"cannot write the worker heartbeat file {heartbeats}") == 1, logs

    result = check("worker", heartbeats)
    assert result.returncode == 1
    assert f"cannot read the worker heartbeat {heartbeats}/celery-worker.heartbeat" in result.stderr


def test_a_beat_that_cannot_write_its_heartbeat_keeps_scheduling_and_fails_its_check(
    app_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis,
    processes: list[AppProcess],
) -> None:
    heartbeats = unwritable_directory(tmp_path)
    env = {**app_env, "CELERY_HEARTBEAT_DIR": str(heartbeats)}
    beat = start_process("beat", python_argv(BEAT_COMMAND), env, tmp_path)
    processes.append(beat)

    wait_for(lambda: "cannot write the beat heartbeat file" in beat.logs(), 30,
             what="beat to report the heartbeat it cannot write")
    wait_for(lambda: redis_client.exists("redbeat::lock"), 30, what="beat to hold its lock")
    time.sleep(2 * BEAT_TICK)  # several ticks later, still running and still holding the lock
    assert beat.alive(), beat.logs()
    assert redis_client.exists("redbeat::lock")
    assert beat.logs().count("cannot write the beat heartbeat file") == 1
    assert check("beat", heartbeats).returncode == 1
