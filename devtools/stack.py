"""The local stack: Redis, the web, one worker and beat, with one command.

    python -m devtools.stack [--broker-url URL] [--port 8000] [--concurrency 2]

Without ``--broker-url`` a throwaway redis-server is started on a free loopback port. Every
process runs the same command as its ECS container. Ctrl-C stops everything in order: the web
and beat first, then the worker with a warm shutdown (in-flight tasks finish), then Redis.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from app import routing
from app.settings import WEB_REQUEST_TIMEOUT, Settings
from devtools.processes import ROOT, AppProcess, python_argv, start_process
from devtools.redis_server import RedisUnavailable, free_port, start_redis
from infra.budget import BEAT_STOP_TIMEOUT, EXIT_MARGIN, web_budget
from infra.containers import BEAT_COMMAND, WEB_COMMAND, worker_command


def stop_timeouts(env: dict[str, str]) -> dict[str, float]:
    """Seconds each process gets after SIGTERM: the same budget as the ECS stop timeouts."""
    settings = Settings.from_env(env)
    web = web_budget(int(env.get(WEB_REQUEST_TIMEOUT) or 30))
    return {
        "web": web.stop_timeout,
        "beat": BEAT_STOP_TIMEOUT,
        "worker": settings.time_limit + EXIT_MARGIN,
    }


def follow(process: AppProcess, stop: threading.Event) -> None:
    """Copy a process's log to this terminal, each line prefixed with the process name."""
    with process.log_path.open("rb") as log:
        while True:
            line = log.readline()
            if line:
                sys.stdout.write(f"{process.name:>6} | {line.decode(errors='replace')}")
                sys.stdout.flush()
            elif stop.is_set() and not process.alive():
                return
            else:
                time.sleep(0.1)


@contextmanager
def broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


def wait_until_ready(url: str, web: AppProcess, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not web.alive():
            raise RuntimeError(f"web exited:\n{web.logs()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"web not ready at {url} after {timeout:.0f}s:\n{web.logs()}")


def run(broker_url: str | None, port: int, concurrency: int) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="celery-ecs-local-"))
    with broker(broker_url) as url:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        env = {
            **os.environ,
            "CELERY_BROKER_URL": url,
            "CELERY_HEARTBEAT_DIR": str(log_dir),
            "WEB_PORT": str(port),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        timeouts = stop_timeouts(env)
        worker = worker_command("local", routing.QUEUES, concurrency)
        processes = [
            start_process("worker", python_argv(worker), env, log_dir),
            start_process("beat", python_argv(BEAT_COMMAND), env, log_dir),
            start_process("web", python_argv(WEB_COMMAND), env, log_dir),
        ]
        stopping = threading.Event()
        followers = [threading.Thread(target=follow, args=(p, stopping), daemon=True)
                     for p in processes]
        for thread in followers:
            thread.start()

        def request_stop(signum: int, _frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        web_url = f"http://127.0.0.1:{port}"
        status = 0
        try:
            wait_until_ready(web_url, processes[2])
            print(
                f"\nweb listening on {web_url}  (broker {url}, logs in {log_dir})\n"
                f"  curl -s -X POST {web_url}/tasks/apply_credit -H 'Content-Type: "
                "application/json' -d '{\"idempotency_key\": \"k1\", \"account\": \"alice\", "
                "\"amount\": 5}'\n"
                f"  curl -s {web_url}/tasks/<id>\n"
                "Ctrl-C stops everything; running tasks finish first.\n",
                flush=True,
            )
            while not stopping.is_set():
                dead = [p for p in processes if not p.alive()]
                if dead:
                    print(f"{dead[0].name} exited with {dead[0].process.returncode}; stopping",
                          file=sys.stderr)
                    status = 1
                    break
                stopping.wait(0.5)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            status = 1
        finally:
            stopping.set()
            # Producers first, so nothing new is enqueued while the worker drains.
            for name in ("web", "beat", "worker"):
                process = next(p for p in processes if p.name == name)
                print(f"stopping {name}...", flush=True)
                process.stop(timeouts[name])
            for thread in followers:
                thread.join(timeout=5)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker-url", help="use this Redis instead of starting one")
    parser.add_argument("--port", type=int, default=8000,
                        help="web port (default 8000; 0 picks a free one)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    try:
        return run(args.broker_url, args.port or free_port(), args.concurrency)
    except RedisUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
