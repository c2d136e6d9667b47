"""The runtime as a distribution: ``python -m build`` makes a wheel of ``celery_ecs`` alone, with
its dependencies and console scripts, that installs and runs without this repository.

The wheel is built offline (``--no-isolation``: the build backend, flit_core, is in the dev
virtualenv) and installed with ``--no-deps`` into a fresh virtualenv: what needs only the
standard library runs there (the health check, the contract modules), and what needs Celery is
loaded on first use. The image installs it with its pinned dependencies
(tests/test_twin_container.py runs its scripts there).
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import ROOT

# Builds and runs the package in processes of their own (tests/tiers.py: the app's modules).
pytestmark = pytest.mark.redis

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_the_runtime_package_only(wheel: Path) -> None:
    version = PYPROJECT["version"]
    assert wheel.name == f"celery_ecs-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"celery_ecs-{version}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    sources = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / "celery_ecs").glob("*.py")
    }
    assert {name for name in names if not name.startswith("celery_ecs-")} == sources
    assert metadata["Name"] == "celery-ecs" and metadata["Version"] == version
    declared = [
        *PYPROJECT["dependencies"],
        *(f'{d}; extra == "web"' for d in PYPROJECT["optional-dependencies"]["web"]),
    ]
    assert sorted(map(str, map(Requirement, metadata.get_all("Requires-Dist") or []))) == sorted(
        map(str, map(Requirement, declared))
    )
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    assert dict(scripts["console_scripts"]) == PYPROJECT["scripts"]


def test_the_wheel_installs_and_runs_without_the_repository(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"  # no app/, no celery_ecs/ on the path
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "CELERY_HEARTBEAT_DIR": str(elsewhere)}

    health = subprocess.run(
        [str(venv / "bin" / "celery-ecs-health"), "worker"], cwd=elsewhere, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert health.returncode == 1, health.stderr
    assert "unhealthy: worker has not written a heartbeat" in health.stderr

    code = (
        "import sys, celery_ecs, celery_ecs.settings, celery_ecs.names, celery_ecs.schedule\n"
        "print(celery_ecs.__version__, celery_ecs.__file__.startswith(sys.prefix))\n"
        "celery_ecs.equip\n"
    )
    imported = subprocess.run(
        [str(python), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert imported.stdout == f"{PYPROJECT['version']} True\n", imported.stderr
    # Installed without its dependencies: the names that need Celery say so on first use only.
    assert "No module named 'redis'" in imported.stderr or "'celery'" in imported.stderr
