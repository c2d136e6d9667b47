"""Container health checks: ``celery-ecs-health worker|beat|web`` (also ``python -m
celery_ecs.health``). Exit status 0 healthy, 1 not (the reason on stderr).

Cheap and local. The worker and beat: the age of the heartbeat file the process touches from its
own event loop (see ``celery_ecs.runtime.WorkerHeartbeat`` and ``celery_ecs.beat``); no broker round
trip and no broadcast to other workers, so a hundred workers checking every 30 s cost nothing. The
web: its liveness endpoint (``WEB_LIVENESS_PATH``, by default ``/livez``: no broker call) on the
local port. Imports nothing from Celery, so it starts in milliseconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from celery_ecs.names import LIVENESS_PATH
from celery_ecs.settings import HEARTBEAT_DIR, WEB_LIVENESS_PATH, WebSettings

log = logging.getLogger(__name__)

#: A heartbeat older than this (seconds) means the process is stuck or lost its broker.
MAX_AGE = 60.0
#: Seconds the web's liveness endpoint may take to answer (below the check's own timeout).
WEB_TIMEOUT = 3.0


def heartbeat_path(role: str, heartbeat_dir: str | None = None) -> Path:
    """The file ``role`` ("worker" or "beat") touches; by default in ``CELERY_HEARTBEAT_DIR``."""
    directory = heartbeat_dir or os.environ.get(HEARTBEAT_DIR) or "/tmp"
    return Path(directory) / f"celery-{role}.heartbeat"


class HeartbeatFile:
    """The writing side: the worker and beat call ``touch`` from their own loops.

    A file that cannot be written is reported as what it is, once per failure streak, and never
    raised: an ``OSError`` escaping into the worker's consumer would be taken for a lost broker
    connection (kombu counts ``OSError`` among connection errors) and restart it in a loop. The
    process keeps working; the health check, which finds no fresh heartbeat, decides.
    """

    def __init__(self, role: str, heartbeat_dir: str | None = None) -> None:
        self.role = role
        self.path = heartbeat_path(role, heartbeat_dir)
        self._failing = False

    def touch(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError as error:
            if not self._failing:
                log.error(
                    "cannot write the %s heartbeat file %s (%s: %s); the container health check "
                    "will fail until it can: make %s writable for user %d",
                    self.role, self.path, type(error).__name__, error.strerror or error,
                    self.path.parent, os.getuid(),
                )  # fmt: skip
            self._failing = True
            return
        if self._failing:
            log.info("the %s heartbeat file %s is writable again", self.role, self.path)
            self._failing = False

    def remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove the heartbeat file %s: %s", self.path, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="celery-ecs-health", description=__doc__)
    parser.add_argument("role", choices=["worker", "beat", "web"])
    parser.add_argument("--max-age", type=float, default=MAX_AGE, help="seconds (default 60)")
    args = parser.parse_args(argv)
    if args.role == "web":
        return check_web()
    path = heartbeat_path(args.role)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: {args.role} has not written a heartbeat ({path})", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a path component that is not a directory
        print(f"unhealthy: cannot read the {args.role} heartbeat {path}: {error}", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"unhealthy: {args.role} heartbeat is {age:.0f}s old", file=sys.stderr)
        return 1
    print(f"healthy: {args.role} heartbeat {age:.0f}s old")
    return 0


def check_web() -> int:
    # The stack's web.livenessPath, for a web that is not the example's.
    path = os.environ.get(WEB_LIVENESS_PATH) or LIVENESS_PATH
    url = f"http://127.0.0.1:{WebSettings.from_env().port}{path}"
    # Straight to the local port: an HTTP(S)_PROXY of the app must not route the check.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=WEB_TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as error:  # refused, timed out, not HTTP
        print(f"unhealthy: web does not answer {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: web answers {url} with {status}", file=sys.stderr)
        return 1
    print(f"healthy: web answers {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
