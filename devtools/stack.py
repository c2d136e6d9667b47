"""The local stack: Redis, the web, one worker and beat, with one command.

    python -m devtools.stack [--broker-url URL] [--port 8000] [--concurrency 2]

Without ``--broker-url`` a throwaway redis-server is started on a free loopback port. Every
process runs the same command as its ECS container, in a session of its own: the terminal's
Ctrl-C reaches only this process, which stops the others in order: the web and beat first, then
the worker with a warm shutdown (running tasks finish), then Redis. A Ctrl-C while the stack
is stopping stops what is still running at once (the worker's cold shutdown cancels its tasks).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from app import routing
from app.schedule import SCHEDULE
from app.settings import WEB_REQUEST_TIMEOUT, Settings
from devtools.processes import ROOT, AppProcess, python_argv, start_process
from devtools.redis_server import RedisUnavailable, free_port, start_redis
from infra.budget import BEAT_STOP_TIMEOUT, EXIT_MARGIN, web_budget
from infra.containers import BEAT_COMMAND, ENQUEUE_MODULE, WEB_COMMAND, worker_command

#: Stop order: the producers first, so nothing new is enqueued while the worker drains; Redis
#: stops after all of them. With each, the signal that stops it at once when the stack is told
#: to hurry: gunicorn's quick shutdown, Celery's cold shutdown; beat's SIGTERM is already quick.
STOP_ORDER: tuple[tuple[str, signal.Signals], ...] = (
    ("web", signal.SIGQUIT),
    ("beat", signal.SIGTERM),
    ("worker", signal.SIGQUIT),
)


class Interrupts:
    """Counts the Ctrl-Cs (SIGINT) and SIGTERMs this process receives, from installation on.

    The handler only counts: a signal handler runs in the main thread between two bytecodes and
    must not take a lock that thread may hold (``threading.Event.set`` does).
    """

    def __init__(self) -> None:
        self.count = 0
        signal.signal(signal.SIGINT, self.received)
        signal.signal(signal.SIGTERM, self.received)

    def received(self, _signum: int, _frame: object) -> None:
        self.count += 1


def stop_timeouts(env: dict[str, str]) -> dict[str, float]:
    """Seconds each process gets after SIGTERM: the same budget as the ECS stop timeouts."""
    settings = Settings.from_env(env)
    web = web_budget(int(env.get(WEB_REQUEST_TIMEOUT) or 30))
    return {
        "web": web.stop_timeout,
        "beat": BEAT_STOP_TIMEOUT,
        "worker": settings.time_limit + EXIT_MARGIN,
    }


def follow(process: AppProcess, stopped: threading.Event) -> None:
    """Copy a process's log to this terminal, each line prefixed with the process name."""
    with process.log_path.open("rb") as log:
        while True:
            # Decided before reading: a process's last lines, written just before it exits,
            # are still read.
            finished = stopped.is_set() and not process.alive()
            line = log.readline()
            if line:
                sys.stdout.write(f"{process.name:>6} | {line.decode(errors='replace')}")
                sys.stdout.flush()
            elif finished:
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
        print("stopping redis...", flush=True)
        server.stop()


def wait_until_ready(
    url: str, web: AppProcess, interrupts: Interrupts, timeout: float = 30.0
) -> None:
    """Return once the web answers ``/readyz``, or as soon as a stop is asked for."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while not interrupts.count:
        if not web.alive():
            raise RuntimeError(f"web exited:\n{web.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"web not ready at {url} after {timeout:.0f}s:\n{web.logs()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)


def stop(process: AppProcess, timeout: float, at_once: signal.Signals,
         hurry: Callable[[], bool]) -> int:
    """Stop like ECS: SIGTERM, up to ``timeout`` seconds, then SIGKILL. Once ``hurry()``, send
    ``at_once`` instead and wait at most EXIT_MARGIN seconds more. Returns the exit status."""
    deadline = time.monotonic() + timeout
    sent: signal.Signals | None = None
    while process.alive():
        hurried = hurry()
        wanted = at_once if hurried else signal.SIGTERM
        if wanted != sent:
            print(f"stopping {process.name}{' at once' if hurried else ''}...", flush=True)
            process.signal(wanted)
            sent = wanted
            if hurried:
                deadline = min(deadline, time.monotonic() + EXIT_MARGIN)
        elif time.monotonic() > deadline:
            process.kill_all()
        else:
            time.sleep(0.1)
    return int(process.process.returncode)


def banner(web_url: str, broker_url: str, log_dir: Path) -> str:
    """What the stack prints once the web is ready: what to try, and how to stop."""
    interpreter = Path(sys.executable)
    if interpreter.is_relative_to(ROOT):
        interpreter = interpreter.relative_to(ROOT)  # `python -m app…` runs from the repository
    # The schedule is hourly and nightly, so nothing periodic runs in a short session: fire an
    # entry by hand with the command EventBridge runs (less its --slot, so it fires every time).
    enqueue = shlex.join([str(interpreter), "-m", ENQUEUE_MODULE, "--entry", SCHEDULE[0].name])
    return (
        f"\nweb listening on {web_url}  (broker {broker_url}, logs in {log_dir})\n"
        f"  curl -s -X POST {web_url}/tasks/apply_credit -H 'Content-Type: "
        "application/json' -d '{\"idempotency_key\": \"k1\", \"account\": \"alice\", "
        "\"amount\": 5}'\n"
        f"  curl -s {web_url}/tasks/<id>\n"
        f"run a schedule entry now ({', '.join(entry.name for entry in SCHEDULE)}):\n"
        f"  CELERY_BROKER_URL={shlex.quote(broker_url)} {enqueue}\n"
        "Ctrl-C stops everything; running tasks finish first (a second Ctrl-C cancels them).\n"
    )


def run(broker_url: str | None, port: int, concurrency: int) -> int:
    # Before anything starts: a Ctrl-C during startup stops the stack in order too.
    interrupts = Interrupts()
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
        # Locally, a line per task shows what runs (off in ECS: APP_LOG_TASKS).
        env.setdefault("APP_LOG_TASKS", "true")
        timeouts = stop_timeouts(env)
        worker = worker_command("local", routing.QUEUES, concurrency)
        processes = {
            "worker": start_process("worker", python_argv(worker), env, log_dir),
            "beat": start_process("beat", python_argv(BEAT_COMMAND), env, log_dir),
            "web": start_process("web", python_argv(WEB_COMMAND), env, log_dir),
        }
        stopped = threading.Event()
        followers = [threading.Thread(target=follow, args=(p, stopped), daemon=True)
                     for p in processes.values()]
        for thread in followers:
            thread.start()

        web_url = f"http://127.0.0.1:{port}"
        status = 0
        try:
            wait_until_ready(web_url, processes["web"], interrupts)
            if not interrupts.count:
                print(banner(web_url, url, log_dir), flush=True)
            while not interrupts.count:
                dead = [p for p in processes.values() if not p.alive()]
                if dead:
                    print(f"{dead[0].name} exited with {dead[0].process.returncode}; stopping",
                          file=sys.stderr)
                    status = 1
                    break
                time.sleep(0.5)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            status = 1
        finally:
            def hurry() -> bool:
                # The first stop request (Ctrl-C, SIGTERM, a process that exited or never got
                # ready) stops in order; any later one stops what is still running at once.
                return interrupts.count + status >= 2

            codes = {name: stop(processes[name], timeouts[name], at_once, hurry)
                     for name, at_once in STOP_ORDER}
            stopped.set()
            for thread in followers:
                thread.join(timeout=5)
            if any(codes.values()):
                print(f"exit statuses: {codes}", file=sys.stderr)
                status = 1
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
