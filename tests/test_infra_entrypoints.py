"""The commands the task definitions and schedules run are the app's real entry points.

Every command is taken from what the program renders (both scheduler modes, several pools) and
resolved against the app: the Celery ``--app`` target imports and knows the ``--queues``,
the runtime's console scripts (``pyproject.toml``) exist, the enqueue command's task is one the
equipped app registers, gunicorn's config module and app factory exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess

import pytest

import celery_ecs
from celery_ecs.schedule import entries_from_json
from celery_ecs.settings import BEAT_SCHEDULE
from devtools.render import RenderedTaskDefinition
from infra.containers import ENQUEUE_SCRIPT, HEALTH_SCRIPT
from policy.invariants import aws_types
from testkit.processes import CONSOLE_SCRIPTS, python_argv
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


def test_runtime_scripts_exist(commands: list[list[str]]) -> None:
    scripts = {argv[0] for argv in commands} & set(CONSOLE_SCRIPTS) - {"celery", "gunicorn"}
    assert scripts >= {HEALTH_SCRIPT}
    for argv in commands:
        if argv[0] not in scripts:
            continue
        assert importlib.util.find_spec(CONSOLE_SCRIPTS[argv[0]]) is not None, argv
        if argv[0] == ENQUEUE_SCRIPT and argv[1:2] != ["--help"]:
            assert argv[1] in registered_tasks(), argv


def registered_tasks() -> set[str]:
    from app.celery_app import app

    assert celery_ecs.settings_of(app) is not None  # equipped: LookupError otherwise
    app.loader.import_default_modules()
    return set(app.tasks)


def test_beat_s_schedule_names_registered_tasks() -> None:
    """The entries the stack hands beat (its environment) name tasks the app registers."""
    beat = shared_run(STACKS["beat"]).task_definitions()["beat"]
    entries = entries_from_json(beat.environment[BEAT_SCHEDULE])
    assert entries and {entry.task for entry in entries} <= registered_tasks()


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
    assert task.command == [ENQUEUE_SCRIPT, "--help"]
    done = subprocess.run(
        python_argv(task.command),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--slot" in done.stdout and "--name" in done.stdout
