"""The container health checks read a heartbeat file the process keeps fresh."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT


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
    assert result.returncode == 1 and "heartbeat is 120s old" in result.stderr


def test_health_check_does_not_import_celery() -> None:
    code = "import sys, app.health; print('celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=30)
    assert out.stdout.strip() == "False"
