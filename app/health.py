"""Container health checks: ``python -m app.health worker`` or ``python -m app.health beat``.

Cheap and local: it reads the age of the heartbeat file the process touches from its own event
loop (see ``app.celery_app.WorkerHeartbeat`` and ``app.beat``). No broker round trip and no
broadcast to other workers, so a hundred workers checking every 30 s cost nothing. Imports
nothing from Celery, so it starts in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from app.settings import HEARTBEAT_DIR

#: A heartbeat older than this (seconds) means the process is stuck or lost its broker.
MAX_AGE = 60.0


def heartbeat_age(role: str, now: float | None = None) -> float | None:
    path = Path(os.environ.get(HEARTBEAT_DIR) or "/tmp") / f"celery-{role}.heartbeat"
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - mtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.health", description=__doc__)
    parser.add_argument("role", choices=["worker", "beat"])
    parser.add_argument("--max-age", type=float, default=MAX_AGE, help="seconds (default 60)")
    args = parser.parse_args(argv)
    age = heartbeat_age(args.role)
    if age is None:
        print(f"unhealthy: {args.role} has not written a heartbeat", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"unhealthy: {args.role} heartbeat is {age:.0f}s old", file=sys.stderr)
        return 1
    print(f"healthy: {args.role} heartbeat {age:.0f}s old")
    return 0


if __name__ == "__main__":
    sys.exit(main())
