"""The twin's reading of the Dockerfile and of container definitions (pure: no process runs)."""

from __future__ import annotations

import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from devtools.twin.container import ContractError, plan_container
from devtools.twin.dockerfile_image import (
    IMAGE_VENV_PATH,
    ROOT,
    Image,
    ImageError,
    image_venv,
    parse_image,
)
from infra.containers import ENQUEUE_SCRIPT, HEALTH_SCRIPT

# The tier (tests/tiers.py): planning a container takes the image's virtualenv, which the
# twin builds from PyPI into .twin/ (devtools.twin.dockerfile_image), in the checkout.
pytestmark = pytest.mark.twin

TASK: dict[str, Any] = {"volumes": [{"name": "scratch"}, {"name": "tmp"}]}


def definition(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "user": "10001:10001",
        "readonlyRootFilesystem": True,
        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
        "mountPoints": [
            {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False},
            {"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False},
        ],
        "environment": [{"name": "A", "value": "from-definition"}],
        "secrets": [{"name": "CELERY_BROKER_URL", "valueFrom": "arn:aws:secretsmanager:x"}],
        **overrides,
    }


def plan(image: Image, tmp_path: Path, **overrides: Any) -> Any:
    return plan_container(
        image, TASK, definition(**overrides), secrets={"CELERY_BROKER_URL": "redis://x"},
        hostname="ip-10-0-0-1", state_dir=tmp_path / "state",
    )  # fmt: skip


@pytest.fixture(scope="module")
def image() -> Image:
    return parse_image()


def test_the_image_is_read_from_the_dockerfile(image: Image) -> None:
    assert image.user == "10001:10001" and image.workdir == "/app"
    assert image.volumes == ("/tmp",)
    assert image.env["PATH"].startswith("/opt/venv/bin:/usr/local/bin:")
    assert image.cmd == ("gunicorn", "--config", "python:app.gunicorn_conf", "app.web:create_app()")
    assert image.copies == {"/app/app": ROOT / "app"}
    assert image.resolve_user(None) == (10001, 10001) and image.home_of(10001) == "/nonexistent"
    # The build stage's own commands, as the twin runs them to make the image's venv.
    (venv, install, runtime) = image.venv_build.commands
    assert venv == ("python", "-m", "venv", "--without-pip", IMAGE_VENV_PATH)
    assert install[:4] == ("pip", "--python", f"{IMAGE_VENV_PATH}/bin/python", "install")
    assert runtime[:4] == install[:4] and runtime[-1] == "/src"
    assert image.venv_build.files == {
        "/tmp/requirements.txt": ROOT / "app" / "requirements.txt",
        "/tmp/constraints.txt": ROOT / "app" / "constraints.txt",
        "/src/pyproject.toml": ROOT / "pyproject.toml",
        "/src/celery_ecs": ROOT / "celery_ecs",
    }


def test_the_image_venv_is_seen_at_its_image_path_only(image: Image, tmp_path: Path) -> None:
    """A container sees the venv where the image holds it, /opt/venv, and nowhere else: its
    scripts name no path of this checkout, which a volume may hide (a checkout under /tmp)."""
    venv = image_venv(image)
    shebang = (venv / "bin" / "celery").read_text().splitlines()[0]
    assert shebang == f"#!{IMAGE_VENV_PATH}/bin/python"
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert str(venv).encode() not in script.read_bytes(), script.name
    binds = plan(image, tmp_path).binds
    assert [target for source, target, _ in binds if source == str(venv)] == [IMAGE_VENV_PATH]


def test_the_image_venv_holds_the_runtime_package_and_its_scripts(
    image: Image, tmp_path: Path
) -> None:
    """The build stage installs the runtime as a package, built from this repository: importable
    with nothing of the checkout on the path, its console scripts (the task definitions' health
    checks and enqueue command) run, and the example app is not in it."""
    venv = image_venv(image)
    python = venv / "bin" / "python"
    clean = {"PATH": "/usr/bin:/bin"}  # no PYTHONPATH: only the venv's site-packages
    imported = subprocess.run(
        [str(python), "-c", "import celery_ecs, sys; print(celery_ecs.__version__, "
         "celery_ecs.__file__.startswith(sys.prefix)); import app"],
        cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert imported.stdout == f"{version} True\n", imported.stderr
    assert "No module named 'app'" in imported.stderr  # the example app is copied, not installed

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {HEALTH_SCRIPT, ENQUEUE_SCRIPT}
    for name in scripts:
        # The scripts name /opt/venv/bin/python (the image's): run with the venv's here.
        script = venv / "bin" / name
        ran = subprocess.run([str(python), str(script), "--help"], cwd=tmp_path, env=clean,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert ran.returncode == 0 and f"usage: {name}" in ran.stdout, ran.stderr
    health = subprocess.run(
        [str(python), str(venv / "bin" / HEALTH_SCRIPT), "worker"], cwd=tmp_path,
        env={**clean, "CELERY_HEARTBEAT_DIR": str(tmp_path)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert health.returncode == 1 and "has not written a heartbeat" in health.stderr


def test_a_dockerfile_the_twin_cannot_reproduce_is_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        (ROOT / "Dockerfile").read_text().replace(
            "RUN python -m venv", "RUN apt-get install -y gcc && python -m venv"
        )
    )
    with pytest.raises(ImageError, match="runs python and pip only"):
        parse_image(dockerfile, context=ROOT)


def test_volumes_are_fresh_root_directories_unless_the_image_declares_them(
    image: Image, tmp_path: Path
) -> None:
    planned = plan(image, tmp_path)
    modes = {path: stat.S_IMODE(Path(source).stat().st_mode) for source, path, _ in planned.volumes}
    owners = {Path(source).stat().st_uid for source, _, _ in planned.volumes}
    assert modes == {"/tmp": 0o1777, "/scratch": 0o755} and owners == {0}


def test_the_environment_layers_image_platform_definition_and_secrets(
    image: Image, tmp_path: Path
) -> None:
    env = plan(image, tmp_path).env
    assert env["PATH"] == image.env["PATH"]
    assert env["HOME"] == "/nonexistent" and env["HOSTNAME"] == "ip-10-0-0-1"
    assert env["A"] == "from-definition" and env["CELERY_BROKER_URL"] == "redis://x"


def test_command_overrides_follow_dockers_rules(image: Image, tmp_path: Path) -> None:
    assert plan(image, tmp_path).argv == list(image.cmd)
    assert plan(image, tmp_path, command=["celery", "beat"]).argv == ["celery", "beat"]
    assert plan(image, tmp_path, entryPoint=["python"]).argv == ["python"]  # CMD dropped
    with pytest.raises(ContractError, match="exec form"):
        plan(image, tmp_path, command="celery beat")


def test_the_user_and_capabilities_become_setpriv_options(image: Image, tmp_path: Path) -> None:
    assert plan(image, tmp_path).privileges == [
        "setpriv", "--reuid=10001", "--regid=10001", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all",
    ]  # fmt: skip
    with pytest.raises(ContractError, match="only allows SYS_PTRACE"):
        plan(image, tmp_path, linuxParameters={"capabilities": {"add": ["NET_ADMIN"]}})


def test_unresolved_secrets_and_privileged_containers_are_refused(
    image: Image, tmp_path: Path
) -> None:
    with pytest.raises(ContractError, match="no local value for the secrets"):
        plan_container(image, TASK, definition(), secrets={}, hostname="h",
                       state_dir=tmp_path)  # fmt: skip
    with pytest.raises(ContractError, match="privileged"):
        plan(image, tmp_path, privileged=True)
