"""The import boundaries of ``.importlinter`` hold, and each contract refuses the import it is
there to refuse: ``lint-imports`` runs on a copy of the tree with one bad import added.

The contracts keep the Pulumi program importable from ``requirements.txt`` alone (issue 17):
``infra`` reads the runtime (``celery_ecs``) and the example app only through their stdlib-only
contract modules, those import only the standard library, the runtime never imports the app or
the program (issue 19), and ``app`` never imports ``infra``. tests/test_entry_environments.py
proves the same in the real virtualenv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """What lint-imports reads: the config, the root packages and the contract type."""
    for package in ("celery_ecs", "app", "infra", "devtools"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def add_import(path: Path, line: str) -> None:
    """Add ``line`` after the module's ``from __future__`` import, or at its end."""
    text = path.read_text()
    after = "from __future__ import annotations\n"
    if after in text:
        path.write_text(text.replace(after, f"{after}{line}\n", 1))
    else:
        path.write_text(f"{text}\n{line}\n")


def test_the_project_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "culprit"),
    [
        # The bug of issue 17: infra reading metric names from celery_ecs.metrics (redis, kombu,
        # celery).
        (
            "infra/alarms.py", "from celery_ecs.metrics import BACKLOG_METRIC",
            "infra imports celery_ecs only through", "infra.alarms -> celery_ecs.metrics",
        ),
        # A stdlib-only module importing a package everyone knows...
        (
            "celery_ecs/names.py", "import redis",
            "import only the standard", "celery_ecs.names imports redis",
        ),
        # ...or one no list of third-party names would hold: only the standard library passes.
        (
            "celery_ecs/settings.py", "import a_package_nobody_listed",
            "import only the standard", "celery_ecs.settings imports a_package_nobody_listed",
        ),
        # The example app's queues: the stack reads them from its own config (workers[].queues).
        (
            "infra/config.py", "from app.routing import QUEUES",
            "infra imports celery_ecs only through", "infra.config -> app.routing",
        ),
        # Through another module of the runtime: celery_ecs.metrics is not a contract module.
        (
            "celery_ecs/schedule.py", "from celery_ecs import metrics",
            "import only the standard", "celery_ecs.schedule imports celery_ecs.metrics",
        ),
        # The package itself runs first whenever one of its contract modules is imported: its
        # public names that need Celery load lazily.
        (
            "celery_ecs/__init__.py", "import celery",
            "import only the standard", "celery_ecs imports celery",
        ),
        # The runtime knows no app: it is installed into images of apps it has never seen.
        (
            "celery_ecs/transport.py", "from app import tasks",
            "celery_ecs never imports app", "celery_ecs.transport -> app.tasks",
        ),
        ("app/web.py", "import infra.config", "app never imports infra", "app.web -> infra.config"),
    ],
)  # fmt: skip
def test_each_contract_refuses_a_bad_import(
    tree: Path, module: str, line: str, contract: str, culprit: str
) -> None:
    add_import(tree / module, line)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if "BROKEN" in row or contract in row]
    assert any(contract in row for row in broken), result.stdout
    assert "1 broken" in result.stdout, result.stdout
    assert culprit in " ".join(result.stdout.split()), result.stdout
