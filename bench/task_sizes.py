"""What each service's container uses: peak memory and CPU of web, worker and beat under load.

    python -m bench.task_sizes [--seconds 60] [--rate RPS]

The program is rendered under mocks from the defaults (a stack with only ``aws:region``) and each
service's container command runs here as a process of its own, with the rendered environment
(the task definitions' own settings: time limits, prefetch, metrics namespace), as the tests
start them (``testkit.processes``): gunicorn, the prefork worker at its default concurrency,
celery beat (redbeat). Only what Fargate would provide is stood in for: the broker URL secret
is a local redis-server, the web's API keys secret and CloudWatch are moto's server
(``testkit.aws_standin``), so the worker's metric rounds make their real ``PutMetricData``
calls and the web reads its keys through botocore, as deployed.

By default the load is ``Pulumi.dev.yaml``'s ``web.targetRequestsPerTask``, 1,000 requests a
minute (the most one web task serves before the web scales out on requests; ``--rate`` sets
another, e.g. 1 for a quiet stack), each a ``POST /tasks/apply_credit`` that enqueues a task,
which the worker runs and stores the result of, followed by a ``GET`` of its status.

Each second it reads every process of each service's tree: ``/proc/<pid>/stat`` (user + system
CPU ticks, plus those of reaped children), ``/proc/<pid>/smaps_rollup`` (Pss: each page shared by
forked children counted once overall, what the task's memory cgroup is charged) and ``VmHWM``
of ``/proc/<pid>/status`` (peak RSS; summed over a prefork tree it counts shared pages once per
process, an upper bound). Around the load it times in CPU seconds the start (until every
container's own health check passes), one health check under load and the exit on SIGTERM, and
counts the bytes each service logs. It prints, per service: peak Pss and VmHWM sum, the mean CPU
share of one vCPU under load, the start, health check and exit CPU seconds, the log volume a
month at this rate, and the smallest Fargate size that holds them with the headroom
``infra.config`` sizes the defaults by (``Measured.fits``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.api_keys import keys_document
from celery_ecs import settings as env_names
from devtools.render import RenderedTaskDefinition, run_program
from infra.budget import EXIT_MARGIN
from infra.config_tables import FARGATE_MEMORY, TASK_CPU_HEADROOM, TASK_MEMORY_HEADROOM
from infra.containers import health_check
from testkit.aws_standin import AwsStandIn
from testkit.processes import ROOT, AppProcess, python_argv, start_process
from testkit.redis_server import free_port, start_redis

#: The services measured, by the name the program gives them.
SERVICES = ("web", "worker-default", "beat")
API_KEY = "bench-api-key-0123456789abcdefghijklmnopqrstuvwxyz"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
#: The load's default: Pulumi.dev.yaml's ``web.targetRequestsPerTask``, the requests a minute one
#: web task serves before the web scales out on requests.
DEFAULT_REQUESTS_PER_MINUTE = 1000
HEALTH_CHECK = health_check("worker")
SECONDS_PER_MONTH = 730 * 3600
#: Seconds the services may take to start.
START_TIMEOUT = 60.0


@dataclass
class Usage:
    """What one service's process tree used over the run."""

    name: str
    peak_pss_kib: int = 0
    peak_hwm_kib: int = 0
    cpu_seconds: float = 0.0
    peak_cpu_share: float = 0.0


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        try:
            pending += [int(child) for child in children.read_text().split()]
        except OSError:
            continue  # gone since its parent listed it
    return found


def cpu_ticks(pid: int) -> int:
    """User + system ticks of ``pid`` and of its children it has waited for (a prefork child
    that exits is counted in its parent's cutime/cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (proc(5)).
    return sum(int(value) for value in fields[11:15])


def tree_ticks(pid: int) -> int:
    return sum(map(cpu_ticks, tree(pid)))


def status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


class Sampler(threading.Thread):
    """Reads each service's tree once a second until stopped."""

    def __init__(self, processes: Mapping[str, AppProcess]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.usage = {name: Usage(name) for name in processes}
        self.stopping = threading.Event()

    def ticks(self, name: str) -> int:
        return tree_ticks(self.processes[name].process.pid)

    def run(self) -> None:
        last = {name: self.ticks(name) for name in self.processes}
        started = {name: ticks for name, ticks in last.items()}
        previous = time.monotonic()
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            for name, process in self.processes.items():
                pids = tree(process.process.pid)
                usage = self.usage[name]
                usage.peak_pss_kib = max(usage.peak_pss_kib, sum(map(pss_kib, pids)))
                usage.peak_hwm_kib = max(
                    usage.peak_hwm_kib, sum(status_kib(pid, "VmHWM") for pid in pids)
                )
                ticks = self.ticks(name)
                share = (ticks - last[name]) / CLOCK_TICKS / (now - previous)
                usage.peak_cpu_share = max(usage.peak_cpu_share, share)
                usage.cpu_seconds = (ticks - started[name]) / CLOCK_TICKS
                last[name] = ticks
            previous = now


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def load_web(port: int, rate: float, seconds: float) -> tuple[int, int]:
    """``rate`` requests a second for ``seconds``: each enqueues a credit, then reads its
    status. Returns (requests answered 2xx, requests sent)."""
    ok = sent = 0
    interval = 1 / rate
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    index = 0
    while next_at < deadline:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        index += 1
        body = {"idempotency_key": f"bench-{index}", "account": f"acct-{index % 50}", "amount": 1}
        status, answer = call(port, "POST", "/tasks/apply_credit", body)
        sent += 1
        if status == 202 and isinstance(answer, dict):
            ok += 1
            status, _ = call(port, "GET", str(answer["status_url"]))
            sent += 1
            ok += status == 200
    return ok, sent


@dataclass
class Service:
    name: str
    process: AppProcess
    environment: dict[str, str]
    health_check: list[str]
    #: CPU seconds the tree spent from start until the web answered ready.
    start_cpu: float = 0.0


@contextmanager
def services(workdir: Path) -> Iterator[tuple[dict[str, Service], int]]:
    """The three services, as the defaults render them, on a local Redis and the stand-in."""
    run = run_program({}, stack="bench", region="us-east-1")
    definitions: dict[str, RenderedTaskDefinition] = run.task_definitions()
    redis_server = start_redis()
    standin = AwsStandIn()
    started: dict[str, Service] = {}
    try:
        port = free_port()
        web_keys = definitions["web"].environment[env_names.WEB_API_KEYS_SECRET_ARN]
        standin.put_secret(web_keys, keys_document(API_KEY))
        for name in SERVICES:
            definition = definitions[name]
            directory = workdir / name
            directory.mkdir()
            environment = {
                key: value
                for key, value in os.environ.items()
                if not key.startswith(("CELERY_", "WEB_", "AWS_"))
            }
            environment.update(definition.environment)
            environment.update(standin.environment())
            environment.update(
                {
                    env_names.BROKER_URL: redis_server.url,
                    env_names.HEARTBEAT_DIR: str(directory),
                    "WEB_PORT": str(port),
                    "PYTHONPATH": str(ROOT),
                    "TMPDIR": str(directory),
                }
            )
            process = start_process(name, python_argv(definition.command), environment, directory)
            # ["CMD", "celery-ecs-health", role]: run with this interpreter (python -m).
            health = python_argv(definition.container["healthCheck"]["command"][1:])
            started[name] = Service(name, process, environment, health)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(healthy(service) for service in started.values()):
            if time.monotonic() > deadline or not all(
                service.process.alive() for service in started.values()
            ):
                logs = "\n".join(f"--- {n}\n{s.process.logs()}" for n, s in started.items())
                raise RuntimeError(f"the services did not start:\n{logs}")
            time.sleep(0.5)
        for service in started.values():
            service.start_cpu = tree_ticks(service.process.process.pid) / CLOCK_TICKS
        yield started, port
    finally:
        for service in started.values():
            service.process.stop(30)
        standin.stop()
        redis_server.stop()


def log_size(service: Service) -> int:
    return service.process.log_path.stat().st_size


def healthy(service: Service) -> bool:
    """Whether the container's own health check passes now."""
    completed = subprocess.run(
        service.health_check, env=service.environment, cwd=ROOT, capture_output=True, check=False
    )
    return completed.returncode == 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def health_check_cpu(service: Service) -> float:
    """CPU seconds of one run of the service's health check (it must pass)."""
    before = children_cpu()
    if not healthy(service):
        raise RuntimeError(f"{service.name}'s health check failed under load")
    return children_cpu() - before


def exit_cpu(service: Service, timeout: float) -> float:
    """CPU seconds the service spends from SIGTERM until it has exited: its whole life's CPU
    (counted in this process's children once it is waited for) less what it had spent."""
    before_tree = tree_ticks(service.process.process.pid) / CLOCK_TICKS
    before_children = children_cpu()
    code = service.process.stop(timeout)
    if code != 0:
        raise RuntimeError(f"{service.name} exited with {code} on SIGTERM")
    return children_cpu() - before_children - before_tree


@dataclass(frozen=True)
class Measured:
    """One service's figures, and the smallest Fargate size that holds them."""

    name: str
    peak_memory_mib: float
    #: Sum of the processes' VmHWM: shared pages counted once per process (an upper bound).
    peak_rss_sum_mib: float
    mean_cpu: float
    start_cpu: float
    health_cpu: float
    exit_cpu: float
    #: Bytes the service wrote to its log (stdout and stderr: what awslogs ships) a second.
    log_bytes_per_second: float = 0.0

    def fits(self, cpu: int, memory: int) -> bool:
        """Memory: the peak x TASK_MEMORY_HEADROOM (beyond it the task is killed). CPU, at the
        size's share of a vCPU (a CFS quota: more work takes longer, it is not refused), with
        TASK_CPU_HEADROOM on each: the load's mean, the start within the health check's start
        period, one health check within its timeout, the exit within the budget's EXIT_MARGIN."""
        share = cpu / 1024
        return (
            memory >= self.peak_memory_mib * TASK_MEMORY_HEADROOM
            and self.mean_cpu * TASK_CPU_HEADROOM <= share
            and self.start_cpu * TASK_CPU_HEADROOM / share <= HEALTH_CHECK["startPeriod"]
            and self.health_cpu * TASK_CPU_HEADROOM / share <= HEALTH_CHECK["timeout"]
            and self.exit_cpu * TASK_CPU_HEADROOM / share <= EXIT_MARGIN
        )

    def smallest_fit(self) -> tuple[int, int]:
        for cpu, memories in FARGATE_MEMORY.items():
            for memory in memories:
                if self.fits(cpu, memory):
                    return cpu, memory
        raise ValueError(f"no Fargate size fits {self}")


def measure(seconds: float, rate: float) -> tuple[list[Measured], int, int]:
    with (
        tempfile.TemporaryDirectory(prefix="celery-ecs-sizes-") as temporary,
        services(Path(temporary)) as (started, port),
    ):
        sampler = Sampler({name: service.process for name, service in started.items()})
        logged = {name: log_size(service) for name, service in started.items()}
        sampler.start()
        try:
            ok, sent = load_web(port, rate, seconds)
            # Under the load's last second: the health checks of loaded containers.
            health = {name: health_check_cpu(service) for name, service in started.items()}
        finally:
            sampler.stopping.set()
            sampler.join()
        logged = {name: log_size(service) - logged[name] for name, service in started.items()}
        dead = [name for name, service in started.items() if not service.process.alive()]
        if dead:
            raise RuntimeError(f"died under load: {', '.join(dead)}")
        exits = {name: exit_cpu(service, 30) for name, service in started.items()}
    measured = [
        Measured(
            name=name,
            peak_memory_mib=sampler.usage[name].peak_pss_kib / 1024,
            peak_rss_sum_mib=sampler.usage[name].peak_hwm_kib / 1024,
            mean_cpu=sampler.usage[name].cpu_seconds / seconds,
            start_cpu=service.start_cpu,
            health_cpu=health[name],
            exit_cpu=exits[name],
            log_bytes_per_second=logged[name] / seconds,
        )
        for name, service in started.items()
    ]
    return measured, ok, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load")
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_REQUESTS_PER_MINUTE / 60,
        help="requests a second (default: Pulumi.dev.yaml's web.targetRequestsPerTask / 60)",
    )
    args = parser.parse_args(argv)
    measured, ok, sent = measure(args.seconds, args.rate)
    print(
        f"Load: {args.seconds:g} s at {args.rate:.1f} POST /tasks/apply_credit a second, each "
        f"then a GET of its status: {ok} of {sent} requests answered 2xx. Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs."
    )
    print(
        f"Headroom: memory x{TASK_MEMORY_HEADROOM:g} of the peak (Pss of the process tree); CPU "
        f"x{TASK_CPU_HEADROOM:g} on the load's mean, the start (within the health check's "
        f"{HEALTH_CHECK['startPeriod']} s start period), a health check (within its "
        f"{HEALTH_CHECK['timeout']} s timeout) and the exit (within {EXIT_MARGIN} s), each at "
        "the size's share of a vCPU."
    )
    print(
        f"{'service':16} {'peak Pss':>9} {'VmHWM sum':>10} {'CPU mean':>9} {'start':>8} "
        f"{'health':>8} {'exit':>8} {'logs':>9}  smallest fit"
    )
    for item in measured:
        cpu, memory = item.smallest_fit()
        print(
            f"{item.name:16} {item.peak_memory_mib:>5.0f} MiB {item.peak_rss_sum_mib:>6.0f} MiB "
            f"{item.mean_cpu:>8.1%} "
            f"{item.start_cpu:>7.2f}s {item.health_cpu:>7.2f}s {item.exit_cpu:>7.2f}s "
            f"{item.log_bytes_per_second * SECONDS_PER_MONTH / 1e9:>5.2f} GB  "
            f"cpu {cpu} memory {memory}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
