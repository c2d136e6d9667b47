"""The import boundaries of ``.importlinter`` hold, and each contract refuses the import it is
there to refuse: ``lint-imports`` runs on a copy of the tree with one bad import added.

The contracts keep the Pulumi program importable from ``requirements.txt`` alone (issue 17):
``infra`` reads ``app`` only through three contract modules (``app.settings``, ``app.names``,
``app.schedule``: names, the schedule's types and codec; nothing of the example app itself, issue
19), those import only the standard library, and ``app`` never imports ``infra``.
tests/test_entry_environments.py proves the same in the real virtualenv.
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
    for package in ("app", "infra", "devtools"):
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
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "culprit"),
    [
        # The bug of issue 17: infra reading metric names from app.metrics (redis, kombu, celery).
        (
            "infra/alarms.py", "from app.metrics import BACKLOG_METRIC",
            "infra imports app only through", "infra.alarms -> app.metrics",
        ),
        # A stdlib-only module importing a package everyone knows...
        ("app/names.py", "import redis", "import only the standard", "app.names imports redis"),
        # ...or one no list of third-party names would hold: only the standard library passes.
        (
            "app/settings.py", "import a_package_nobody_listed",
            "import only the standard", "app.settings imports a_package_nobody_listed",
        ),
        # The example app's queues: the stack reads them from its own config (workers[].queues).
        (
            "infra/config.py", "from app.routing import QUEUES",
            "infra imports app only through", "infra.config -> app.routing",
        ),
        # Through another module of the app: app.metrics is not one of the three.
        (
            "app/schedule.py", "from app import metrics",
            "import only the standard", "app.schedule imports app.metrics",
        ),
        # The app package itself runs first whenever one of the four is imported.
        ("app/__init__.py", "import celery", "import only the standard", "app imports celery"),
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
