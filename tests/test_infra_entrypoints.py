"""The commands the task definitions and schedules run are the app's real entry points.

Every command is taken from what the program renders (both scheduler modes, several pools) and
resolved against the app: the Celery ``--app`` target imports and knows the ``--queues``,
``python -m`` modules exist, gunicorn's config module and app factory exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys

import pytest

from app.schedule import SCHEDULE
from devtools.render import RenderedTaskDefinition
from policy.invariants import aws_types
from tests.support import ROOT, shared_run

STACKS = {
    "beat": {
        "workers": [
            {"name": "fast", "queues": ["default"]},
            {"name": "slow", "queues": ["long"], "taskTimeout": 1800},
        ]
    },
    "eventbridge": {"scheduler": "eventbridge"},
}


@pytest.fixture(params=list(STACKS))
def commands(request: pytest.FixtureRequest) -> list[list[str]]:
    """Every argv the stack runs: container commands, health checks, schedule overrides."""
    run = shared_run(STACKS[request.param])
    tasks: list[RenderedTaskDefinition] = list(run.task_definitions().values())
    argvs = [task.command for task in tasks]
    argvs += [
        task.container["healthCheck"]["command"][1:]
        for task in tasks
        if "healthCheck" in task.container
    ]
    for target in run.of_type(aws_types.CLOUDWATCH_EVENT_TARGET):
        template = json.loads(target.inputs["inputTransformer"]["inputTemplate"])
        argvs += [override["command"] for override in template["containerOverrides"]]
    return argvs


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_celery_commands_load_the_app_and_its_queues(commands: list[list[str]]) -> None:
    celery = [argv for argv in commands if argv[0] == "celery"]
    assert {argv[3] for argv in celery} >= {"worker"}
    for argv in celery:
        module = importlib.import_module(option(argv, "--app"))
        app = module.app
        if argv[3] == "worker":
            known = {queue.name for queue in app.conf.task_queues}
            assert set(option(argv, "--queues").split(",")) <= known, argv


def test_python_modules_exist(commands: list[list[str]]) -> None:
    modules = [argv for argv in commands if argv[:2] == ["python", "-m"]]
    assert {argv[2] for argv in modules} >= {"app.health"}
    for argv in modules:
        assert importlib.util.find_spec(argv[2]) is not None, argv
        if "--entry" in argv:
            assert option(argv, "--entry") in {entry.name for entry in SCHEDULE}


def test_gunicorn_config_and_app_factory_exist(commands: list[list[str]]) -> None:
    (argv,) = [argv for argv in commands if argv[0] == "gunicorn"]
    config = option(argv, "--config")
    assert config.startswith("python:")
    assert importlib.util.find_spec(config.removeprefix("python:")) is not None
    module_name, factory = argv[-1].split(":")
    assert factory.endswith("()")
    assert callable(getattr(importlib.import_module(module_name), factory.removesuffix("()")))


@pytest.mark.redis  # runs the app's enqueue command in a process
def test_enqueue_default_command_only_prints_usage() -> None:
    """The enqueue task definition's own command (without EventBridge's override)."""
    task = shared_run({"scheduler": "eventbridge"}).task_definitions()["enqueue"]
    assert task.command == ["python", "-m", "app.enqueue", "--help"]
    done = subprocess.run(
        [sys.executable, *task.command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--entry" in done.stdout
