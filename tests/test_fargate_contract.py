"""Every container the program renders starts, passes its health check and stops cleanly, run
the way Fargate runs it.

The task definitions are rendered under Pulumi mocks from ``Pulumi.dev.yaml`` (both scheduler
modes) and run by the twin (``devtools.twin``): as the definition's user (10001), read-only root
filesystem, each task volume a fresh root-owned 0755 directory unless the Dockerfile declares a
``VOLUME`` there, capabilities dropped, an init as PID 1, the image's files only. Only the broker
URL secret is resolved locally, to a real redis-server.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from devtools.render import ProgramRun, RenderedTaskDefinition, stack_file_config
from devtools.twin.container import Container, plan_container, start_container
from devtools.twin.dockerfile_image import ROOT, Image, parse_image
from infra.config import load
from policy.invariants import aws_types
from tests.support import run_program, wait_for

# The tier (tests/tiers.py): every container runs on the ECS twin, as root.
pytestmark = pytest.mark.twin

#: Generous: a container imports Celery and connects on a loaded 2-core machine.
START_LIMIT = 60.0
SLOT = "2026-12-01T02:30:00Z"


@pytest.fixture(scope="module")
def image() -> Image:
    return parse_image()


@pytest.fixture(scope="module")
def beat_stack() -> ProgramRun:
    return run_program(stack_file_config("dev"))


@pytest.fixture(scope="module")
def eventbridge_stack() -> ProgramRun:
    return run_program({**stack_file_config("dev"), "scheduler": "eventbridge"})


def run(
    image: Image,
    task: RenderedTaskDefinition,
    broker_url: str,
    state_dir: Path,
    containers: list[Container],
    command: list[str] | None = None,
) -> Container:
    definition = dict(task.container)
    if command is not None:  # a RunTask containerOverride
        definition["command"] = command
    plan = plan_container(
        image, task.inputs, definition,
        secrets={"CELERY_BROKER_URL": broker_url},
        hostname=f"ip-10-0-1-{len(containers) + 10}",
        state_dir=state_dir / task.service,
    )  # fmt: skip
    container = start_container(plan)
    containers.append(container)
    return container


def healthy(container: Container) -> bool:
    if not container.alive():
        raise AssertionError(f"{container.name} exited {container.exit_code}:\n{container.logs()}")
    return container.health()[0]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def target_group_health_path(stack: ProgramRun) -> str:
    return str(stack.one(aws_types.LB_TARGET_GROUP).inputs["healthCheck"]["path"])


def test_every_service_of_the_stack_starts_passes_its_health_check_and_stops_cleanly(
    image: Image, beat_stack: ProgramRun, redis_url: str, tmp_path: Path,
    containers: list[Container],
) -> None:
    tasks = beat_stack.task_definitions()
    assert set(tasks) == {"web", "worker-default", "worker-long", "beat"}
    started = {service: run(image, task, redis_url, tmp_path, containers)
               for service, task in tasks.items()}  # fmt: skip

    for service in started:
        wait_for(lambda s=service: healthy(started[s]), START_LIMIT, interval=1,
                 what=f"{service}'s container health check to pass")  # fmt: skip
    # The web is also checked by the load balancer's target group, on its own path.
    web_port = tasks["web"].container["portMappings"][0]["containerPort"]
    health_url = f"http://127.0.0.1:{web_port}{target_group_health_path(beat_stack)}"
    wait_for(lambda: started["web"].alive() and answers(health_url), START_LIMIT, interval=1,
             what="the target group's health check of the web")  # fmt: skip

    for service, container in started.items():
        # Exit 0 within the stop timeout: a clean stop, not ECS's SIGKILL (137).
        assert container.stop() == 0, f"{service}:\n{container.logs()}"


def test_the_enqueue_task_runs_as_eventbridge_starts_it(
    image: Image, eventbridge_stack: ProgramRun, redis_url: str, redis_client: redis.Redis,
    tmp_path: Path, containers: list[Container],
) -> None:
    tasks = eventbridge_stack.task_definitions()
    assert "beat" not in tasks
    entry = load({"scheduler": "eventbridge"}).schedule[0]
    target = eventbridge_stack.named(
        aws_types.CLOUDWATCH_EVENT_TARGET, f"schedule-{entry.name}"
    ).inputs
    # EventBridge's input transformer puts the event time where the template says.
    template = target["inputTransformer"]["inputTemplate"].replace("<time>", SLOT)
    (override,) = json.loads(template)["containerOverrides"]
    assert override["name"] == tasks["enqueue"].container["name"]

    container = run(image, tasks["enqueue"], redis_url, tmp_path, containers,
                    command=override["command"])  # fmt: skip

    assert container.wait(timeout=START_LIMIT) == 0, container.logs()
    assert json.loads(container.logs().strip().splitlines()[-1])["status"] == "enqueued"
    (message,) = redis_client.lrange(entry.queue, 0, -1)
    assert json.loads(message)["headers"]["task"] == entry.task


def test_a_container_runs_unprivileged_on_a_read_only_root(
    image: Image, beat_stack: ProgramRun, redis_url: str, tmp_path: Path,
    containers: list[Container],
) -> None:
    worker = run(image, beat_stack.task_definitions()["worker-default"], redis_url, tmp_path,
                 containers)  # fmt: skip
    wait_for(lambda: healthy(worker), START_LIMIT, interval=1, what="the worker to be healthy")

    def inside(*argv: str) -> str:
        result = worker.exec(argv, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    # PID 1 (the init) and the worker: user 10001, no other group, and with
    # capabilities.drop ALL nothing effective, permitted or even in the bounding set.
    worker_pid = inside("cat", "/proc/1/task/1/children").split()[0]
    for pid in ("1", worker_pid):
        status = dict(
            line.split(":\t", 1) for line in inside("cat", f"/proc/{pid}/status").splitlines()
        )
        assert status["Uid"].split() == ["10001"] * 4, pid
        assert status["Gid"].split() == ["10001"] * 4, pid
        assert set(status["Groups"].split()) <= {"10001"}, pid
        assert {status[key] for key in ("CapEff", "CapPrm", "CapBnd")} == {"0" * 16}, pid
    assert "celery" in inside("cat", f"/proc/{worker_pid}/cmdline")
    assert worker.exec(["touch", "/app/x"], timeout=30).returncode != 0  # read-only root
    assert inside("stat", "-c", "%U %a", "/tmp") == "root 1777"  # the image's /tmp, copied
    assert inside("sh", "-c", "touch /tmp/x /dev/shm/x && echo ok") == "ok"
    # The image holds app/ and the venv, not the rest of the checkout.
    assert worker.exec(["python", "-c", "import infra"], timeout=30).returncode != 0
    assert worker.exec(["python", "-c", "import pytest"], timeout=30).returncode != 0


def test_without_a_volume_declaration_the_worker_and_beat_cannot_run_on_fargate(
    beat_stack: ProgramRun, redis_url: str, tmp_path: Path, containers: list[Container],
) -> None:
    # What the image was before it declared VOLUME /tmp: Fargate's fresh volume is root's, 0755.
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text((ROOT / "Dockerfile").read_text().replace('VOLUME ["/tmp"]', ""))
    image = parse_image(dockerfile, context=ROOT)
    assert image.volumes == ()
    tasks = beat_stack.task_definitions()

    worker = run(image, tasks["worker-default"], redis_url, tmp_path, containers)
    beat = run(image, tasks["beat"], redis_url, tmp_path, containers)

    assert worker.wait(timeout=START_LIMIT) != 0
    assert "No usable temporary directory" in worker.logs()
    wait_for(lambda: "cannot write the beat heartbeat file" in beat.logs(), START_LIMIT,
             what="beat to report its heartbeat")  # fmt: skip
    assert beat.health() == (
        False, "unhealthy: beat has not written a heartbeat (/tmp/celery-beat.heartbeat)"
    )  # fmt: skip
    beat.signal(signal.SIGTERM)
    assert beat.wait(timeout=START_LIMIT) == 0
