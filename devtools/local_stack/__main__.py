"""The local stack: the deployed stack's services, run on the ECS twin, with one command.

    python -m devtools.local_stack [--stack dev] [--scheduler beat|eventbridge] [--broker-url URL]
                             [--port 8000] [--time-scale 0.1] [--raw-metrics]

The program is rendered under Pulumi mocks from ``Pulumi.<stack>.yaml`` and every service runs
on the twin (``devtools.twin``) as Fargate would run it: the same task definitions, commands,
environments and health checks, each task in its own namespaces and network, the web behind a
front door that routes like its load balancer. Without ``--broker-url`` a throwaway redis-server
is started (on loopback and the twin's bridge); with it, tasks reach that Redis through a relay
on the bridge. ``--time-scale`` shortens health-check intervals, start periods and the
deregistration delay (1 = AWS's timing); stop timeouts are the budget's.

Each task's output is copied here, prefixed with its service and task. The metric lines workers
and beat write every 10 to 30 seconds are shown as one short line, and only when a value changed
(``devtools.local_stack.metric_lines``); ``--raw-metrics`` shows them as written. The tasks'
own logs keep every line.

Every process the stack starts is in a session of its own: the terminal's Ctrl-C reaches only
this process, which stops the rest in order: the web and beat first, then the workers (each as
ECS stops it: SIGTERM, its stop timeout, SIGKILL; warm pools finish their tasks), then Redis. A
Ctrl-C while the stack is stopping stops what still runs at once (the workers' cold shutdown
cancels their tasks and puts them back on their queues). An output that closes (``make run |
tee run.log``, where the terminal's Ctrl-C ends ``tee`` too) does not stop the shutdown: what is
left to say is dropped, and everything still stops.

The web accepts the API key the program generated, which the twin's stand-in of Secrets Manager
holds; the banner prints it, with ``curl`` lines that send it.

While it runs, ``curl <control>/status`` shows what runs; ``curl -X POST
<control>/rules/<name>/fire`` fires an EventBridge rule now, ``curl -X POST
<control>/services/<name>/deploy`` rolls a service onto a new revision (both printed at start).
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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import redis

from celery_ecs.names import LIVENESS_PATH
from celery_ecs.schedule import PeriodicEntry
from devtools.local_stack.metric_lines import MetricLines
from devtools.render import read_stack_file, run_program
from devtools.twin.awsvpc import HOST_ADDRESS, ensure_bridge
from devtools.twin.control import ControlEndpoint
from devtools.twin.deployed_stack import TwinCluster
from devtools.twin.relay import Relay
from devtools.twin.task import Status, Task
from infra.budget import EXIT_MARGIN
from infra.config import StackConfig, load
from infra.config_tables import DEFAULT_CELERY_APP
from infra.containers import enqueue_command
from testkit.processes import ROOT, python_argv
from testkit.redis_server import RedisUnavailable, free_port, start_redis

#: Stop order by service name prefix: the producers first, so nothing new is enqueued while the
#: workers drain; Redis stops after all of them. With each, the signal that stops it at once
#: when the stack is told to hurry: gunicorn's quick shutdown, Celery's cold shutdown; beat's
#: SIGTERM is already quick.
STOP_ORDER: tuple[tuple[str, signal.Signals], ...] = (
    ("web", signal.SIGQUIT),
    ("beat", signal.SIGTERM),
    ("worker-", signal.SIGQUIT),
)
#: Seconds the web may take to answer through the front door once the stack starts.
READY_TIMEOUT = 120.0

_output = threading.Lock()


def say(text: str, *, end: str = "\n", stream: TextIO | None = None) -> None:
    """Write ``text`` and ``end`` at once to ``stream`` (default stdout): the threads copying
    the tasks' output and the stack's own messages share the terminal, and a line must not be
    cut by another's.

    An output that fails (a pipe whose reader is gone: EPIPE, as Python ignores SIGPIPE; a
    terminal gone: EIO) must not stop the stack in the middle of stopping its tasks: the stream's
    file descriptor is pointed at /dev/null, so this and every later write, and the flush at
    exit, succeed into nothing. That is what the Python documentation advises for a closed
    stdout (the ``signal`` module, "Note on SIGPIPE").
    """
    out = sys.stdout if stream is None else stream
    with _output:
        try:
            out.write(f"{text}{end}")
            out.flush()
        except OSError:
            discard(out)


def discard(stream: TextIO) -> None:
    """Send what is still written to ``stream`` to /dev/null (its buffer included)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


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


class Followers:
    """Copies every task's output to this terminal, each line prefixed with its service; metric
    lines as ``metric_lines`` shows them."""

    def __init__(self, metric_lines: MetricLines) -> None:
        self.metric_lines = metric_lines
        self._followed: set[str] = set()
        self._threads: list[threading.Thread] = []
        self.done = threading.Event()

    def follow_new(self, cluster: TwinCluster) -> None:
        for name, service in cluster.services.items():
            for task in service.tasks():
                if task.id not in self._followed and task.container is not None:
                    self._followed.add(task.id)
                    thread = threading.Thread(target=self._copy, args=(name, task), daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def join(self) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _copy(self, name: str, task: Task) -> None:
        assert task.container is not None
        label = f"{name}/{task.id[:4]}"
        partial = b""  # a line the task is still writing
        with task.container.log_path.open("rb") as log:
            while True:
                # Decided before reading: a task's last lines, written just before it stops,
                # are still read.
                finished = self.done.is_set() or task.status == Status.STOPPED
                line = partial + log.readline()
                if line.endswith(b"\n") or (line and finished):
                    text = line.decode(errors="replace").removesuffix("\n")
                    shown = self.metric_lines.shown(name, text)
                    if shown is not None:
                        say(f"{label:>19} | {shown}")
                    partial = b""
                elif finished:
                    return
                else:
                    partial = line
                    time.sleep(0.1)


@contextmanager
def broker(url: str | None) -> Iterator[tuple[str, str]]:
    """(the URL for this machine, the URL tasks reach the same Redis at)."""
    if url:
        with Relay.to_url(url) as relay:
            yield url, relay.url_for_tasks
        return
    server = start_redis(bind=("127.0.0.1", HOST_ADDRESS))
    try:
        yield server.url, f"redis://{HOST_ADDRESS}:{server.port}/0"
    finally:
        # One line, ended once Redis has exited: the stack's last word says it is all done.
        say("stopping redis...", end="")
        try:
            server.stop()
        finally:
            say(" done" if server.process.poll() is not None else " failed")


def wait_until_ready(
    url: str, cluster: TwinCluster, interrupts: Interrupts, path: str = LIVENESS_PATH
) -> None:
    """Return once the web answers ``path`` (the stack's ``web.livenessPath``) through the front
    door, or a stop is asked.
    A service whose first deployment failed (a ``celeryApp`` or ``web.command`` the image
    cannot run: no offline check sees inside the image) ends the wait with its report."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not interrupts.count:
        failed = cluster.failed_to_start()
        if failed:
            raise RuntimeError(
                "\n".join(failed) + "\nThe image must hold what the stack's celeryApp and "
                "web.command name (Pulumi.<stack>.yaml; see docs/how-to/point-at-your-app.md)."
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"web not ready at {url} after {READY_TIMEOUT:.0f}s:\n"
                               f"{cluster.status()}")  # fmt: skip
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)


def stop_service(
    cluster: TwinCluster, name: str, at_once: signal.Signals, hurry: Callable[[], bool]
) -> list[int]:
    """Stop a service's tasks as ECS does; once ``hurry()``, send ``at_once`` and give them at
    most EXIT_MARGIN seconds more. Returns the exit codes."""
    service = cluster.services[name]
    tasks = [task for task in service.tasks() if task.status != Status.STOPPED]
    if not tasks:
        return []
    say(f"stopping {name}...")
    drain = service.target_group.drain if service.target_group is not None else None
    for task in tasks:
        task.stop("the local stack is stopping", drain)
    hurried_at: float | None = None
    while any(task.status != Status.STOPPED for task in tasks):
        if hurried_at is None and hurry():
            hurried_at = time.monotonic()
            say(f"stopping {name} at once...")
            for task in tasks:
                if task.container is not None and task.container.alive():
                    task.container.signal(at_once)
        if hurried_at is not None and time.monotonic() - hurried_at > EXIT_MARGIN:
            for task in tasks:
                if task.container is not None:
                    task.container.kill()
        time.sleep(0.1)
    return [task.exit_code or 0 for task in tasks]


def banner(
    web_url: str, broker_url: str, control_url: str, cluster: TwinCluster, stack: StackConfig
) -> str:
    """What the stack prints once the web answers: what to try (the example app's API, with its
    key; another app's liveness path), and how to stop."""
    schedule: Sequence[PeriodicEntry] = stack.schedule
    celery_app = stack.celery_app
    interpreter = Path(sys.executable)
    if interpreter.is_relative_to(ROOT):
        interpreter = interpreter.relative_to(ROOT)  # `python -m app…` runs from the repository
    # The example's schedule is hourly and nightly, so nothing periodic runs in a short session:
    # fire an entry by hand with the command EventBridge runs (less its --slot, so it fires
    # every time), or, with --scheduler eventbridge, fire its rule.
    run_now = ""
    if schedule:
        # The rule's command as this interpreter runs it, without "--slot <slot>"; the stack's
        # Celery app is the enqueue task's CELERY_APP, named here.
        command = python_argv([*enqueue_command(schedule[0], "<slot>")[:-2], "--app", celery_app])
        enqueue = shlex.join([str(interpreter), *command[1:]])
        run_now = (
            f"run a schedule entry now ({', '.join(entry.name for entry in schedule)}):\n"
            f"  CELERY_BROKER_URL={shlex.quote(broker_url)} {enqueue}\n"
        )
    rules = "".join(
        f"  curl -s -X POST {control_url}/rules/{rule}/fire\n" for rule in sorted(cluster.rules)
    )
    # The key the program generated, as the twin's stand-in of Secrets Manager holds it.
    authorization = shlex.quote(f"Authorization: Bearer {cluster.api_key}")
    try_it = (
        f"API key: {cluster.api_key}  (in the secret {cluster.api_keys_secret_arn})\n"
        f"  curl -s -X POST {web_url}/tasks/apply_credit -H {authorization} -H 'Content-Type: "
        "application/json' -d '{\"idempotency_key\": \"k1\", \"account\": \"alice\", "
        "\"amount\": 5}'\n"
        f"  curl -s {web_url}/tasks/<id> -H {authorization}\n"
        if celery_app == DEFAULT_CELERY_APP
        else f"  curl -s {web_url}{stack.web.liveness_path}\n"
    )
    return (
        f"\nweb listening on {web_url}  (broker {broker_url}, twin control {control_url})\n"
        f"{try_it}"
        f"{run_now}"
        f"{rules}"
        f"what runs: curl -s {control_url}/status   "
        f"roll a service: curl -s -X POST {control_url}/services/<name>/deploy\n"
        "metric lines: shown when a value changes (--raw-metrics: every line as written)\n"
        "Ctrl-C stops everything; running tasks finish first (a second Ctrl-C cancels them).\n"
    )


def run(
    stack: str, scheduler: str | None, broker_url: str | None, port: int, time_scale: float,
    raw_metrics: bool = False,
) -> int:
    # Before anything starts: a Ctrl-C during startup stops the stack in order too.
    interrupts = Interrupts()
    stack_file = read_stack_file(stack)
    config = {**stack_file.config, **({"scheduler": scheduler} if scheduler else {})}
    rendered = run_program(config, stack=stack, region=stack_file.region or "us-east-1")
    ensure_bridge()
    state_root = Path(tempfile.mkdtemp(prefix="celery-ecs-local-"))
    status = 0
    with broker(broker_url) as (url, url_for_tasks):
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        cluster = TwinCluster.from_program(
            rendered, broker_url=url_for_tasks, state_root=state_root, front_door_port=port,
            time_scale=time_scale, on_event=say,
            # Locally, a line per task shows what runs (off in ECS: APP_LOG_TASKS).
            environment_overrides={"APP_LOG_TASKS": "true"},
        ).start()  # fmt: skip
        control = ControlEndpoint(cluster)
        followers = Followers(MetricLines(raw=raw_metrics))
        web_url = cluster.load_balancer.url if cluster.load_balancer else ""
        stack_config = load(config)
        try:
            wait_until_ready(web_url, cluster, interrupts, stack_config.web.liveness_path)
            if not interrupts.count:
                say(banner(web_url, url, control.url, cluster, stack_config))
            while not interrupts.count:
                followers.follow_new(cluster)
                time.sleep(0.3)
        except RuntimeError as exc:
            say(str(exc), stream=sys.stderr)
            status = 1
        finally:
            def hurry() -> bool:
                # The first stop request (Ctrl-C, SIGTERM, a failed start) stops in order; any
                # later one stops what is still running at once.
                return interrupts.count + status >= 2

            cluster.stop_scheduling()
            followers.follow_new(cluster)
            codes: dict[str, list[int]] = {}
            for prefix, at_once in STOP_ORDER:
                for name in sorted(n for n in cluster.services if n.startswith(prefix)):
                    codes[name] = stop_service(cluster, name, at_once, hurry)
            cluster.close()
            control.close()
            followers.join()
            if any(code for exits in codes.values() for code in exits):
                say(f"exit statuses: {codes}", stream=sys.stderr)
                status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.local_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev",
                        help="Pulumi.<stack>.yaml to run, or examples/<stack>/Pulumi.<stack>.yaml "
                             "(default dev)")  # fmt: skip
    parser.add_argument("--scheduler", choices=["beat", "eventbridge"],
                        help="override the stack's scheduler")
    parser.add_argument("--broker-url", help="use this Redis instead of starting one")
    parser.add_argument("--port", type=int, default=8000,
                        help="the front door's port (default 8000; 0 picks a free one)")
    parser.add_argument("--time-scale", type=float, default=0.1,
                        help="health-check intervals and delays x this (default 0.1; 1: AWS's)")
    parser.add_argument("--raw-metrics", action="store_true",
                        help="show the metric lines as the tasks write them, every one (default: "
                             "one short line when a value changes)")
    args = parser.parse_args(argv)
    try:
        return run(args.stack, args.scheduler, args.broker_url, args.port or free_port(),
                   args.time_scale, args.raw_metrics)  # fmt: skip
    except RedisUnavailable as exc:
        say(f"error: {exc}", stream=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
