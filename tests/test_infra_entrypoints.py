"""The commands the task definitions and schedules run are the app's real entry points.

Every command is taken from what the program renders (both scheduler modes, several pools) and
resolved against the app: the Celery ``--app`` target imports and knows the ``--queues``,
the runtime's console scripts (``pyproject.toml``) exist and the enqueue command's ``--app`` is
equipped and has its ``--entry``, gunicorn's config module and app factory exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess

import pytest

import celery_ecs
from app.schedule import SCHEDULE
from devtools.processes import CONSOLE_SCRIPTS, python_argv
from devtools.render import RenderedTaskDefinition
from infra.containers import ENQUEUE_SCRIPT, HEALTH_SCRIPT
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
    for target in run.of_type("aws:cloudwatch/eventTarget:EventTarget"):
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
        if "--app" in argv:
            app = importlib.import_module(option(argv, "--app")).app
            assert celery_ecs.settings_of(app) is not None  # equipped: LookupError otherwise
            if "--entry" in argv:
                assert option(argv, "--entry") in app.conf.beat_schedule
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
    assert "--entry" in done.stdout
