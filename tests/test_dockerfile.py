"""The image: lint-clean, hardened, and holding exactly what the app's processes need.

No Docker engine is needed: the Dockerfile is linted with hadolint and parsed (with the ECS
twin's reading of it, ``devtools.twin.dockerfile_image``), and the app's imports are checked
against what the image copies (app/) and installs (app/requirements.txt and the runtime package,
built from pyproject.toml and celery_ecs/). The twin runs the image's build stage and its
containers for real (``tests/test_fargate_contract.py``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from devtools.twin.dockerfile_image import Stage, dockerfile_stages
from infra import containers
from infra.config import load as load_stack_config
from tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
APP = ROOT / "app"
REQUIREMENTS = APP / "requirements.txt"
APP_USER = "10001:10001"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def copy_sources(stage: Stage) -> list[str]:
    """What the stage copies from the build context (not from other stages)."""
    sources = []
    for arguments in stage.arguments("COPY"):
        *paths, _destination = shlex.split(arguments)
        if not any(path.startswith("--from=") for path in paths):
            sources += [path for path in paths if not path.startswith("--")]
    return sources


# --- Lint ----------------------------------------------------------------------------------------


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    # A user-level hadolint config could silence rules: give it an empty home.
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(hadolint), "--format", "json", str(DOCKERFILE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


# --- Structure -----------------------------------------------------------------------------------


def test_base_images_are_pinned_to_a_patch_release(stages: list[Stage]) -> None:
    for stage in stages:
        repository, _, tag = stage.image.partition(":")
        assert repository == "python", stage.image
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-bookworm", tag), stage.image
    assert len({stage.image for stage in stages}) == 1  # the venv's interpreter is the final one


def test_the_final_stage_runs_as_a_fixed_unprivileged_user(final: Stage) -> None:
    users = final.arguments("USER")
    assert users and users[-1] == APP_USER
    uid, gid = users[-1].split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0
    (created,) = [run for run in final.arguments("RUN") if "useradd" in run]
    assert f"--uid {uid}" in created and f"--gid {gid}" in created
    assert APP_USER == containers.APP_USER  # what the task definitions run as


def test_commands_are_in_exec_form_and_the_default_is_the_web_server(
    stages: list[Stage], final: Stage
) -> None:
    for stage in stages:
        for keyword, arguments in stage.instructions:
            if keyword in ("CMD", "ENTRYPOINT"):
                command = json.loads(arguments)  # shell form is not JSON
                assert isinstance(command, list) and all(isinstance(a, str) for a in command)
    assert not final.arguments("ENTRYPOINT")  # no wrapper between ECS and the process
    (cmd,) = final.arguments("CMD")
    assert tuple(json.loads(cmd)) == containers.WEB_COMMAND


def test_the_final_stage_has_the_app_environment(final: Stage) -> None:
    environment = " ".join(final.arguments("ENV")).split()
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:$PATH"} <= set(
        environment
    )
    assert final.arguments("WORKDIR") == ["/app"]
    assert final.arguments("EXPOSE") == [str(load_stack_config({}).web.port)]


def test_the_image_holds_the_venv_and_app_only(stages: list[Stage], final: Stage) -> None:
    build = stages[0]
    assert copy_sources(build) == [
        "app/requirements.txt", "app/constraints.txt", "pyproject.toml", "celery_ecs/"
    ]  # fmt: skip
    assert copy_sources(final) == ["app/"]
    from_stages = [a for a in final.arguments("COPY") if a.startswith("--from=")]
    assert from_stages == [f"--from={build.name} /opt/venv /opt/venv"]


def test_the_final_stage_installs_nothing(final: Stage) -> None:
    runs = " ".join(final.arguments("RUN"))
    for installer in ("pip install", "apt-get", "apt ", "gcc", "build-essential", "curl", "wget"):
        assert installer not in runs, installer
    assert "tini" not in DOCKERFILE.read_text().lower()  # ECS provides the init process
    assert not final.arguments("HEALTHCHECK")  # ECS ignores it; task definitions hold them


def test_the_build_context_is_the_app_only(tmp_path: Path) -> None:
    # Docker's own reading of .dockerignore (the Docker SDK's), over a context holding a file
    # of every kind the checkout has, including the ones that must never reach the image.
    for path in ("app/web.py", "app/requirements.txt", "app/__pycache__/web.cpython-311.pyc",
                 "app/web.pyc", "celery_ecs/health.py", "celery_ecs/__pycache__/x.pyc",
                 "pyproject.toml", "tests/test_web.py", "infra/web_service.py", ".git/HEAD",
                 ".venv/bin/python", ".twin/x", "Pulumi.dev.yaml", "README.md"):  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    (tmp_path / "Dockerfile").write_text("")

    sent = exclude_paths(str(tmp_path), patterns, dockerfile="Dockerfile")

    # Docker always sends the Dockerfile and .dockerignore; everything else is app/'s sources
    # and the runtime package's (its source and pyproject.toml).
    assert {path for path in sent if not path.startswith(("app", "celery_ecs"))} == {
        "Dockerfile", "pyproject.toml"
    }  # fmt: skip
    assert {path for path in sent if path.startswith(("app/", "celery_ecs/"))} == {
        "app/web.py", "app/requirements.txt", "celery_ecs/health.py"
    }  # fmt: skip


# --- What app/ imports is what the image has ----------------------------------------------------


def imports_of(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports (relative imports: ``app``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("app" if node.level else (node.module or "").split(".")[0])
    return names


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def required_distributions() -> set[str]:
    names = set()
    for line in REQUIREMENTS.read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            names.add(normalized(re.split(r"[\[<>=!~; ]", requirement)[0]))
    return names


def first_party() -> set[str]:
    """Top-level packages and modules of this repository."""
    return {
        path.stem if path.suffix == ".py" else path.name
        for path in ROOT.iterdir()
        if not path.name.startswith(".")
        and ((path / "__init__.py").exists() or path.suffix == ".py")
    }


def test_app_imports_only_itself_the_standard_library_and_its_requirements() -> None:
    local = first_party()
    assert {"app", "celery_ecs", "infra", "devtools", "tests"} <= local
    providers = importlib.metadata.packages_distributions()
    required = required_distributions()

    for module in sorted(APP.glob("*.py")):
        for name in sorted(imports_of(module) - {"__future__"}):
            where = f"{module.relative_to(ROOT)} imports {name}"
            if name in local:
                # app/ is copied, the runtime installed (the build stage builds its package).
                assert name in ("app", "celery_ecs"), f"{where}: not in the image"
            elif name not in sys.stdlib_module_names:
                distributions = {normalized(d) for d in providers.get(name, [])}
                assert distributions & required, f"{where}: not in app/requirements.txt"


def entry_point_commands() -> list[tuple[str, ...]]:
    """Every command the task definitions of the default stack run in this image."""
    health_check = containers.health_check("worker")["command"]
    assert isinstance(health_check, list) and health_check[0] == "CMD"
    return [
        containers.WEB_COMMAND,
        containers.BEAT_COMMAND,
        # The schedule's commands run the same module, with task names (tests/test_enqueue.py).
        containers.ENQUEUE_DEFAULT_COMMAND,
        *(
            containers.worker_command(pool.name, pool.queues, pool.concurrency)
            for pool in load_stack_config({}).workers
        ),
        tuple(health_check[1:]),
    ]


def test_every_entry_point_is_in_the_image() -> None:
    scripts = {ep.name: ep.dist for ep in importlib.metadata.entry_points(group="console_scripts")}
    # The runtime's own scripts: the package the build stage installs declares them.
    runtime_scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    required = required_distributions()
    for command in entry_point_commands():
        executable = command[0]
        if executable in runtime_scripts:
            module = runtime_scripts[executable].partition(":")[0]
            assert ROOT.joinpath(*module.split(".")).with_suffix(".py").is_file(), executable
        elif executable != "python":
            provider = scripts[executable]
            assert provider is not None and normalized(provider.name) in required, executable
        for module in re.findall(r"\b(?:app|celery_ecs)(?:\.\w+)+", " ".join(command)):
            path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
            assert path.is_file(), f"{' '.join(command)}: {module} is not in the image"
