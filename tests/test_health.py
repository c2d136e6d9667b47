"""The container health checks read a heartbeat file the process keeps fresh."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from app.celery_app import app
from celery_ecs.runtime import HEARTBEAT_INTERVAL
from infra.containers import BEAT_COMMAND, WEB_COMMAND, worker_command
from testkit.processes import python_argv
from testkit.redis_server import free_port
from tests.support import ROOT, AppProcess, send_task, start_process, wait_for

# The tier (tests/tiers.py): the health checks run as the container runs them, in processes.
pytestmark = pytest.mark.redis

#: Seconds between two beat ticks at most (``beat_max_loop_interval``).
BEAT_TICK = app.conf.beat_max_loop_interval


def check(role: str, heartbeat_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
           "CELERY_HEARTBEAT_DIR": str(heartbeat_dir)}
    return subprocess.run([sys.executable, "-m", "celery_ecs.health", role], env=env,
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
    # At least 120 s: the check's interpreter may take a second or more to start on a busy host.
    age = re.search(r"beat heartbeat is (\d+)s old", result.stderr)
    assert result.returncode == 1 and age is not None and int(age[1]) >= 120, result.stderr


def test_health_check_does_not_import_celery() -> None:
    code = "import sys, celery_ecs.health; print('celery' in sys.modules)"
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


def test_the_web_check_asks_liveness_so_a_broker_outage_does_not_fail_it(
    app_env: dict[str, str], tmp_path: Path, processes: list[AppProcess]
) -> None:
    # The broker is unreachable: readiness fails, but ECS must not replace a web task that can
    # answer 503 at once, so its health check asks /livez.
    port = free_port()
    env = {**app_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
           "WEB_PORT": str(port)}  # fmt: skip
    web = start_process("web", python_argv(WEB_COMMAND), env, tmp_path)
    processes.append(web)
    health = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "WEB_PORT": str(port)}

    def web_check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "celery_ecs.health", "web"], env=health,
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    wait_for(lambda: web_check().returncode == 0, 30, what="the web to answer /livez")
    web.kill_all()
    stopped = web_check()
    assert stopped.returncode == 1
    assert f"web does not answer http://127.0.0.1:{port}/livez" in stopped.stderr


def test_the_web_check_asks_the_stack_s_liveness_path(tmp_path: Path) -> None:
    """Another app's web (``web.livenessPath``): the check asks WEB_LIVENESS_PATH, not /livez."""
    port = free_port()
    (tmp_path / "healthz").write_text("ok")
    # A web server of no framework: 200 for /healthz only, 404 for /livez.
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "WEB_PORT": str(port)}

        def web_check(**extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "celery_ecs.health", "web"],
                                  env={**base, **extra}, capture_output=True, text=True,
                                  timeout=30)  # fmt: skip

        wait_for(lambda: web_check(WEB_LIVENESS_PATH="/healthz").returncode == 0, 30,
                 what="the server to answer /healthz")  # fmt: skip
        default = web_check()
        assert default.returncode == 1
        assert f"web answers http://127.0.0.1:{port}/livez with 404" in default.stderr
    finally:
        server.kill()
        server.wait()
