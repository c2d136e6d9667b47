"""Deploys, scale-in and crashes lose nothing: proven on the ECS twin, with the task definitions,
services, load balancer and rules the program renders.

The stack is scaled down through its own budget inputs (short ``taskTimeout``s, a small
``maxStopTimeout``, ``maxCountdown`` 0, a short ``web.requestTimeout``), never by special cases
in the product; the twin shortens its health-check intervals and deregistration delay
(``time_scale``). Every scenario has at least 100 tasks in flight or queued. "Lost" is a task
that never completes: each task is ``apply_credit`` with its own idempotency key, which counts
its attempts and applies its effect once.

The scenarios that matter to a user deploying their own app (a rolling deploy of workers, a
killed worker, beat's deploy, an EventBridge slot) run for the two apps under ``examples/``
too, each with its own image and stack file (``APPS``): there a task is the app's own e-mail
task, and what ran is read from the lines it logs.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from celery_ecs.schedule import Every, PeriodicEntry
from devtools.local_stack.__main__ import wait_until_ready
from devtools.render import ProgramRun, read_stack_file, run_program
from devtools.twin.awsvpc import HOST_ADDRESS, ensure_bridge
from devtools.twin.deployed_stack import TwinCluster
from devtools.twin.task import Status, Task
from infra.config import load
from infra.containers import WEB_COMMAND
from testkit.redis_server import RedisServer, start_redis
from tests.support import send_task, wait_for
from tests.test_beat import make_overdue, sent_tasks

# The tier (tests/tiers.py): whole stacks on the ECS twin, as root.
pytestmark = pytest.mark.twin

TASKS = 100
TIME_SCALE = 0.1
STACK: dict[str, object] = {
    "maxCountdown": 0,
    "workers": [
        # Warm: hard limit 4 s + 10 fits the stop cap; visibility timeout 14 s.
        {"name": "quick", "queues": ["default"], "concurrency": 4, "taskTimeout": 3,
         "minCount": 1, "maxCount": 4},
        # Cold: 30 s tasks, 15 s stop cap: protected while busy; visibility timeout 43 s.
        {"name": "slow", "queues": ["long"], "concurrency": 2, "taskTimeout": 30,
         "maxStopTimeout": 15, "minCount": 2, "maxCount": 4},
    ],
    "web": {"requestTimeout": 5},
}  # fmt: skip
#: Generous: containers start and drain on a loaded 2-core machine.
LIMIT = 120.0


@dataclass
class Twin:
    cluster: TwinCluster
    broker: RedisServer
    #: The services' events, as ECS shows them: what to read when a scenario fails.
    events: list[str]
    app: AppCase

    @property
    def url(self) -> str:
        return self.broker.url

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker.url, decode_responses=True)

    def worker_logs(self) -> str:
        """The output of every worker task so far, stopped ones included."""
        return "".join(task.logs() for task in self.worker_tasks())

    def worker_tasks(self) -> list[Task]:
        """Every worker task started (a service forgets those of a completed deployment)."""
        return [task for task in list(self.cluster.tasks_by_id.values())
                if task.group.startswith("service:worker-")]  # fmt: skip


@dataclass(frozen=True)
class AppCase:
    """An app the scenarios deploy: its stack keys, the queue its quick pool consumes, and how
    a test sends its tasks and sees them run.

    The repository's example app (``app/``) sends ``apply_credit`` and reads the effects it
    records in Redis; an app under ``examples/`` sends its e-mail task with the key's position
    as the user id, and reads the line the task logs once it sent the e-mail."""

    name: str
    config: dict[str, object]
    queue: str
    #: The example apps: their e-mail task, and the line it logs (the user id in group 1).
    task: str = ""
    sent: re.Pattern[str] = re.compile("")
    #: The line the app's hourly schedule entry logs when it ran.
    periodic_line: str = ""

    @property
    def hourly(self) -> PeriodicEntry:
        return next(entry for entry in load(self.config).schedule
                    if isinstance(entry.schedule, Every))  # fmt: skip

    def send(self, url: str, keys: list[str], queue: str | None = None,
             work: float = 0.2) -> None:  # fmt: skip
        if not self.task:
            send_credits(url, keys, queue or self.queue, work)
            return
        for position, _ in enumerate(keys):
            send_task(url, self.task, queue=queue or self.queue, args=[position])

    def runs(self, twin: Twin, keys: list[str]) -> list[int]:
        """How many times each task ran (the example app: was attempted)."""
        if not self.task:
            return attempts(twin.redis, keys)
        ran = [int(user) for user in self.sent.findall(twin.worker_logs())]
        return [ran.count(position) for position in range(len(keys))]

    def completed(self, twin: Twin, keys: list[str]) -> int:
        if not self.task:
            return completed(twin.redis, keys)
        return sum(1 for count in self.runs(twin, keys) if count)

    def assert_all_ran(self, twin: Twin, keys: list[str]) -> None:
        if not self.task:
            assert_all_applied_once(twin.redis, keys)
            return
        wait_for(lambda: self.completed(twin, keys) == len(keys), LIMIT, interval=0.5,
                 what=f"all {len(keys)} tasks to complete")  # fmt: skip

    def periodic_ran(self, twin: Twin) -> int:
        """How many times the hourly entry's task ran (the example app: 1 once it ran)."""
        if not self.task:
            return int(twin.redis.exists("maintenance:last-purge"))
        return twin.worker_logs().count(self.periodic_line)


def example_app(name: str, **case: object) -> AppCase:
    """An app of ``examples/``, as its stack file deploys it, with the scenarios' pools."""
    own = read_stack_file(name).config
    config = {
        **STACK, **own,
        "workers": [{**STACK_QUICK_POOL, "queues": ["celery"]}],
        "web": {**own["web"], **STACK_WEB},  # type: ignore[dict-item]
    }  # fmt: skip
    return AppCase(name, config, "celery", **case)  # type: ignore[arg-type]


STACK_QUICK_POOL = STACK["workers"][0]  # type: ignore[index]
STACK_WEB = STACK["web"]
EXAMPLE = AppCase("example", STACK, "default")
APPS = [
    EXAMPLE,
    example_app("seed", task="celery_app.send_email",
                sent=re.compile(r"sent the email to user (\d+)"), periodic_line="cleanup done"),
    example_app("django", task="demoapp.tasks.send_welcome_email",
                sent=re.compile(r"sent the welcome email to user (\d+)"),
                periodic_line="expired invitations cleared"),
]  # fmt: skip
#: The scenarios a user deploying their own app relies on run for every app.
every_app = pytest.mark.parametrize("app", [pytest.param(app, id=app.name) for app in APPS])


@functools.cache
def rendered(app: str, scheduler: str) -> ProgramRun:
    case = next(case for case in APPS if case.name == app)
    return run_program({**case.config, "scheduler": scheduler}, stack="test")


@pytest.fixture
def twin_factory(tmp_path: Path) -> Iterator[Callable[..., Twin]]:
    ensure_bridge()
    started: list[Twin] = []

    def start(*services: str, scheduler: str = "beat", app: AppCase = EXAMPLE) -> Twin:
        broker = start_redis(bind=("127.0.0.1", HOST_ADDRESS))
        events: list[str] = []
        cluster = TwinCluster.from_program(
            rendered(app.name, scheduler), broker_url=f"redis://{HOST_ADDRESS}:{broker.port}/0",
            state_root=tmp_path / f"twin-{len(started)}", time_scale=TIME_SCALE,
            on_event=events.append, only=services or None,
        ).start()  # fmt: skip
        twin = Twin(cluster, broker, events, app)
        started.append(twin)
        return twin

    yield start
    for twin in started:
        twin.cluster.stop()
        twin.broker.stop()


def send_credits(url: str, keys: list[str], queue: str = "default", work: float = 0.2) -> None:
    for key in keys:
        send_task(url, "app.tasks.apply_credit", queue=queue,
                  kwargs={"idempotency_key": key, "account": "acct", "amount": 1,
                          "work_seconds": work})  # fmt: skip


def attempts(client: redis.Redis, keys: list[str]) -> list[int]:
    return [int(value or 0) for value in client.mget([f"attempts:{key}" for key in keys])]


def completed(client: redis.Redis, keys: list[str]) -> int:
    return sum(client.exists(f"idem:{key}") for key in keys)


def assert_all_applied_once(client: redis.Redis, keys: list[str]) -> None:
    wait_for(lambda: completed(client, keys) == len(keys), LIMIT, interval=0.5,
             what=f"all {len(keys)} tasks to complete")  # fmt: skip
    assert client.hget("ledger:balances", "acct") == str(len(keys))


# --- First deploy -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["beat", "eventbridge"])
def test_first_deploy_reaches_steady_state_and_serves(
    twin_factory: Callable[..., Twin], scheduler: str,
) -> None:
    twin = twin_factory(scheduler=scheduler)
    keys = [f"first-{i}" for i in range(TASKS)]
    send_credits(twin.url, keys, work=0.05)  # queued before anything runs

    twin.cluster.wait_steady(LIMIT)

    expected = {"web", "worker-quick", "worker-slow"} | ({"beat"} if scheduler == "beat" else set())
    assert set(twin.cluster.services) == expected
    assert_all_applied_once(twin.redis, keys)
    assert set(twin.cluster.rules) == (set() if scheduler == "beat" else {
        f"schedule-{entry}" for entry in ("purge-expired-idempotency-keys", "nightly-report")
    })  # fmt: skip


# --- Rolling deploys ------------------------------------------------------------------------------


@every_app
def test_a_rolling_deploy_of_a_warm_pool_loses_and_repeats_nothing(
    twin_factory: Callable[..., Twin], app: AppCase,
) -> None:
    twin = twin_factory("worker-quick", app=app)
    twin.cluster.service("worker-quick").set_desired_count(2)
    twin.cluster.wait_steady(LIMIT)
    keys = [f"warm-{i}" for i in range(TASKS)]
    app.send(twin.url, keys, work=0.3)
    wait_for(lambda: app.completed(twin, keys) >= 10, LIMIT, what="the first tasks to run")

    twin.cluster.deploy("worker-quick")

    twin.cluster.wait_steady(LIMIT)
    app.assert_all_ran(twin, keys)
    assert app.runs(twin, keys) == [1] * TASKS  # warm shutdown: none ran twice
    assert {t.revision.number for t in twin.cluster.service("worker-quick").running()} == {2}


def test_a_cold_pool_keeps_its_busy_workers_through_a_deploy_and_a_scale_in(
    twin_factory: Callable[..., Twin],
) -> None:
    twin = twin_factory("worker-slow")
    cluster, service = twin.cluster, twin.cluster.service("worker-slow")
    cluster.wait_steady(LIMIT)
    keys = [f"cold-{i}" for i in range(TASKS)]
    send_credits(twin.url, keys, queue="long", work=0.3)
    wait_for(lambda: all(t.protected for t in service.running()), LIMIT,
             what="both busy workers to hold scale-in protection")  # fmt: skip
    old = {task.id for task in service.running()}

    cluster.deploy("worker-slow")
    service.set_desired_count(1)
    # While they are busy and protected, neither the deployment nor the scale-in stops them.
    busy_until = time.monotonic() + 5
    while time.monotonic() < busy_until and completed(twin.redis, keys) < TASKS:
        assert all(t.status == Status.RUNNING for t in service.tasks() if t.id in old)
        time.sleep(0.2)

    cluster.wait_steady(LIMIT)  # once idle, protection ends and the deployment completes
    assert_all_applied_once(twin.redis, keys)
    assert [t.revision.number for t in service.running()] == [2]
    assert not any(t.failed for t in service.tasks())


@every_app
def test_a_beat_deploy_never_has_two_beats_scheduling_and_sends_a_due_entry_once(
    twin_factory: Callable[..., Twin], app: AppCase,
) -> None:
    twin = twin_factory("beat", app=app)
    hourly = app.hourly
    queued = [f"queued-{i}" for i in range(TASKS)]
    app.send(twin.url, queued)  # no worker runs: 100 tasks wait in the queue
    twin.cluster.wait_steady(LIMIT)
    wait_for(lambda: twin.redis.exists(f"redbeat:{hourly.name}"), LIMIT, what="the schedule")
    holders: set[str] = set()
    stop = threading.Event()

    def watch_lock() -> None:
        # The lock names one beat at a time; it changes hands only through a release.
        previous = None
        while not stop.is_set():
            holder = twin.redis.get("redbeat::lock")
            if holder and previous and holder != previous:
                raise AssertionError("the lock changed hands without a release")
            if holder:
                holders.add(holder)
            previous = holder
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_lock, daemon=True)
    watcher.start()
    make_overdue(twin.redis, hourly.name)
    twin.redis.zadd("redbeat::schedule", {f"redbeat:{hourly.name}": time.time() - 1})
    twin.cluster.deploy("beat")
    twin.cluster.wait_steady(LIMIT)
    wait_for(lambda: sent_tasks(twin.redis, hourly.queue).count(hourly.task) >= 1, LIMIT,
             what="the due entry")  # fmt: skip
    time.sleep(2)  # several ticks of the new beat
    stop.set()
    watcher.join()

    assert sent_tasks(twin.redis, hourly.queue).count(hourly.task) == 1
    assert len(holders) == 2  # the old beat, then the new one
    assert twin.redis.llen(app.queue) >= TASKS


# --- Failures -------------------------------------------------------------------------------------


@every_app
def test_a_killed_worker_is_replaced_and_its_tasks_run_again(
    twin_factory: Callable[..., Twin], app: AppCase,
) -> None:
    twin = twin_factory("worker-quick", app=app)
    service = twin.cluster.service("worker-quick")
    twin.cluster.wait_steady(LIMIT)
    keys = [f"kill-{i}" for i in range(TASKS)]
    app.send(twin.url, keys, work=0.3)
    wait_for(lambda: app.completed(twin, keys) >= 10, LIMIT, what="the first tasks to run")
    (victim,) = service.running()
    assert victim.container is not None

    victim.container.kill()  # the container dies: no shutdown, its messages stay unacked

    wait_for(lambda: any(t.id != victim.id and t.status == Status.RUNNING
                         for t in service.tasks()), LIMIT, what="a replacement")  # fmt: skip
    assert victim.failed and "Essential container in task exited (137)" in victim.stopped_reason
    replaced, left = time.monotonic(), TASKS - app.completed(twin, keys)
    app.assert_all_ran(twin, keys)  # the unacked ones after the visibility timeout
    # ...within 30 s of the replacement's start (the quick pool's visibility timeout is 14 s),
    # on top of the time the queue's other tasks take on its 4 slots: whatever the machine took
    # to start the replacement, and however long Fargate takes, the held tasks wait no longer.
    assert time.monotonic() - replaced < 30 + left * 0.3 / 4


def test_a_web_task_that_fails_its_health_check_is_replaced(
    twin_factory: Callable[..., Twin],
) -> None:
    twin = twin_factory("web")
    service = twin.cluster.service("web")
    twin.cluster.wait_steady(LIMIT)
    (frozen,) = service.running()
    assert frozen.container is not None
    queued = [f"health-{i}" for i in range(TASKS)]
    send_credits(twin.url, queued)

    # Every process of the container stops answering (tini, PID 1, cannot be signalled).
    result = frozen.container.exec(["sh", "-c", "kill -STOP -1"], timeout=30)
    assert result.returncode in (0, 1), result.stderr

    wait_for(lambda: frozen.status == Status.STOPPED, LIMIT, what="the frozen task to be stopped")
    assert frozen.failed and "health checks" in frozen.stopped_reason
    twin.cluster.wait_steady(LIMIT)
    assert frozen not in service.running()
    assert twin.redis.llen("default") == TASKS  # nothing consumed them, nothing lost them


def test_a_broker_restart_under_load_loses_nothing(
    twin_factory: Callable[..., Twin],
) -> None:
    twin = twin_factory("worker-quick")
    twin.cluster.wait_steady(LIMIT)
    keys = [f"restart-{i}" for i in range(TASKS)]
    send_credits(twin.url, keys, work=0.2)
    wait_for(lambda: completed(twin.redis, keys) >= 10, LIMIT, what="the first tasks to run")

    twin.broker.restart(downtime=1)

    assert_all_applied_once(twin.redis, keys)
    assert all(t.status == Status.RUNNING for t in twin.cluster.service("worker-quick").tasks())


# --- The front door and the schedule -------------------------------------------------------------


def test_a_web_rolling_deploy_under_load_answers_every_request(
    twin_factory: Callable[..., Twin],
) -> None:
    twin = twin_factory("web")
    cluster = twin.cluster
    cluster.wait_steady(LIMIT)
    assert cluster.load_balancer is not None
    url = f"{cluster.load_balancer.url}/tasks/noop"
    # The web reads its keys from the twin's Secrets Manager, as the program wrote them; a
    # request without one is refused (and queues nothing).
    assert cluster.api_key is not None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {cluster.api_key}"}
    anonymous = urllib.request.Request(url, data=b"{}", method="POST",
                                       headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=60)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer realm="celery-ecs"'
    statuses: list[int] = []
    stop = threading.Event()

    def post() -> None:
        while not stop.is_set():
            request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
            except OSError:
                statuses.append(0)  # refused or reset at the front door

    clients = [threading.Thread(target=post, daemon=True) for _ in range(2)]
    for client in clients:
        client.start()
    wait_for(lambda: len(statuses) >= 20, LIMIT, what="requests before the deploy")
    cluster.deploy("web")
    cluster.wait_steady(LIMIT)
    wait_for(lambda: len(statuses) >= TASKS, LIMIT, what=f"{TASKS} requests")
    stop.set()
    for client in clients:
        client.join()

    assert set(statuses) == {202}, sorted(set(statuses))
    assert {t.revision.number for t in cluster.service("web").running()} == {2}


@every_app
def test_a_twice_delivered_eventbridge_slot_enqueues_once(
    twin_factory: Callable[..., Twin], app: AppCase,
) -> None:
    twin = twin_factory("worker-quick", scheduler="eventbridge", app=app)
    keys = [f"slot-{i}" for i in range(TASKS)]
    app.send(twin.url, keys, queue="long")  # queued: no worker consumes long here
    slot = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    rule = f"schedule-{app.hourly.name}"

    first, second = twin.cluster.fire(rule, slot), twin.cluster.fire(rule, slot)

    for task in (first, second):
        assert task.wait_stopped(LIMIT) and task.exit_code == 0, task.logs()
    outcomes = sorted(json.loads(t.logs().strip().splitlines()[-1])["status"]
                      for t in (first, second))  # fmt: skip
    assert outcomes == ["duplicate", "enqueued"]
    wait_for(lambda: app.periodic_ran(twin), LIMIT, what="the entry's task to run")
    time.sleep(2)  # a second run, if there were one, would have been taken by now
    assert app.periodic_ran(twin) == 1
    assert twin.redis.llen("long") == TASKS


def test_rules_fire_on_their_schedule_once_per_slot(
    twin_factory: Callable[..., Twin],
) -> None:
    twin = twin_factory("worker-quick", scheduler="eventbridge")
    created = twin.cluster.created
    hourly = "schedule-purge-expired-idempotency-keys"  # rate(1 hour), from the rule's creation

    # The hourly rule alone: a cron rule's slots depend on when the test runs (the nightly
    # report's 02:30 falls within the hour when it starts between 01:30 and 02:30).
    only = {hourly}
    assert twin.cluster.fire_due(created + timedelta(minutes=59), only) == []
    (task,) = twin.cluster.fire_due(created + timedelta(hours=1, seconds=1), only)
    assert twin.cluster.fire_due(created + timedelta(hours=1, seconds=2), only) == []  # same slot

    assert task.wait_stopped(LIMIT) and task.exit_code == 0, task.logs()
    outcome = json.loads(task.logs().strip().splitlines()[-1])
    slot = (created + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (outcome["status"], outcome["slot"]) == ("enqueued", slot)
    assert twin.cluster._fired == {hourly: created + timedelta(hours=1)}


def test_a_deployment_whose_tasks_keep_failing_is_rolled_back(
    twin_factory: Callable[..., Twin],
) -> None:
    twin = twin_factory("worker-quick")
    service = twin.cluster.service("worker-quick")
    twin.cluster.wait_steady(LIMIT)
    queued = [f"breaker-{i}" for i in range(TASKS)]
    send_credits(twin.url, queued, work=0.05)

    def crash(container: dict[str, object]) -> None:
        container["command"] = ["python", "-c", "raise SystemExit(3)"]

    broken = twin.cluster.deploy("worker-quick", crash)

    # Three failed tasks (the threshold's minimum) fail the deployment; the last completed one
    # is deployed again.
    wait_for(lambda: service.primary.rollback, LIMIT, what="the circuit breaker's rollback")
    twin.cluster.wait_steady(LIMIT)
    assert [t.revision.number for t in service.running()] == [1]
    assert any("circuit breaker threshold 3" in event for event in twin.events), twin.events
    assert service.revision.number == 1 and broken.number == 2
    assert_all_applied_once(twin.redis, queued)


def test_a_celery_app_the_image_does_not_hold_fails_the_run_and_says_why(
    tmp_path: Path,
) -> None:
    """``celeryApp`` is only a name offline; on the twin the worker cannot load it, exits, and
    the run reports the service, the exit, the command and the import error (and ``make run``
    stops)."""
    stack = {
        **STACK, "celeryApp": "proj.missing", "image": {"context": "."},
        "web": {"requestTimeout": 5, "command": list(WEB_COMMAND)}, "schedule": [],
    }  # fmt: skip
    ensure_bridge()
    broker = start_redis(bind=("127.0.0.1", HOST_ADDRESS))
    events: list[str] = []
    cluster = TwinCluster.from_program(
        run_program(stack, stack="test"), broker_url=f"redis://{HOST_ADDRESS}:{broker.port}/0",
        state_root=tmp_path / "twin", time_scale=TIME_SCALE, on_event=events.append,
        only=["worker-quick"],
    ).start()  # fmt: skip
    try:
        (report,) = wait_for(cluster.failed_to_start, LIMIT, what="the failed first deployment")
        assert report.startswith("service worker-quick cannot start: 3 tasks failed"), report
        assert "Essential container in task exited (" in report, report
        assert "celery --app proj.missing worker" in report, report
        # Celery's traceback ends the output: what could not be imported.
        assert "ModuleNotFoundError: No module named 'proj'" in report, report
        assert any("circuit breaker threshold 3" in event for event in events), events
        # `make run` ends its wait with that report instead of serving a stack without workers.
        with pytest.raises(RuntimeError, match="service worker-quick cannot start") as raised:
            wait_until_ready("http://127.0.0.1:9", cluster, SimpleNamespace(count=0))
        assert "celeryApp and web.command" in str(raised.value)
    finally:
        cluster.stop()
        broker.stop()
