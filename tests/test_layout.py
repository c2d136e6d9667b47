"""The layout says what each part holds, and a name means one thing (issue 20).

- every Pulumi type name (``aws:ecs/service:Service``) is spelled in one module,
  ``policy/invariants/aws_types.py``, and read from there everywhere else;
- every package's docstring names each of its modules, so a module added to a folder is
  described where a reader of the folder looks first;
- no two modules share a basename, but for the pairs listed in ``SHARED_BASENAMES``, each with
  the reason it is still there.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support import ROOT

#: The project's own Python, by top-level folder (the checkout's virtualenvs and caches are not).
SOURCE_FOLDERS = ("celery_ecs", "app", "infra", "policy", "devtools", "testkit", "bench", "tests")
AWS_TYPES = ROOT / "policy" / "invariants" / "aws_types.py"
#: A Pulumi type token as a whole string literal: ``"<package>:<module>:<Type>"``.
TYPE_TOKEN = re.compile(r"""^["'](?:aws|random|docker-build):[A-Za-z0-9/]*:[A-Za-z0-9]+["']$""")
#: Packages whose docstring is the folder's table of contents.
DESCRIBED_PACKAGES = (
    "devtools",
    "devtools/plan",
    "devtools/twin",
    "devtools/local_stack",
    "devtools/upstream",
    "policy/invariants",
    "testkit",
    "bench",
)
#: Basenames two modules still share, and why. Entries only ever leave this table.
SHARED_BASENAMES = {
    # The example's gunicorn settings are the runtime's plus its API keys check, named as
    # gunicorn's `--config python:<module>` convention names a config module.
    "gunicorn_conf.py": {"app/gunicorn_conf.py", "celery_ecs/gunicorn_conf.py"},
}


#: Folders inside the source folders that are not the project's (policy/venv: the pack's).
NOT_SOURCE = frozenset({"venv", ".venv", "__pycache__", "site-packages"})


def python_files() -> list[Path]:
    files: list[Path] = []
    for folder in SOURCE_FOLDERS:
        files += sorted(
            path
            for path in (ROOT / folder).rglob("*.py")
            if not NOT_SOURCE & set(path.relative_to(ROOT).parts)
        )
    files += sorted(ROOT.glob("*.py"))
    return files


def test_pulumi_type_names_are_spelled_only_in_aws_types() -> None:
    spelled = []
    for path in python_files():
        if path == AWS_TYPES:
            continue
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        spelled += [
            f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string}"
            for token in tokens
            if token.type == tokenize.STRING and TYPE_TOKEN.match(token.string)
        ]
    assert spelled == [], "use the constant of policy/invariants/aws_types.py instead:\n" + (
        "\n".join(spelled)
    )


def test_aws_types_defines_each_type_once() -> None:
    tree = ast.parse(AWS_TYPES.read_text())
    values: dict[str, list[str]] = defaultdict(list)
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            (target,) = node.targets
            assert isinstance(target, ast.Name)
            values[str(node.value.value)].append(target.id)
    assert values, "no type names found"
    assert {value: names for value, names in values.items() if len(names) > 1} == {}


@pytest.mark.parametrize("package", DESCRIBED_PACKAGES)
def test_a_package_docstring_names_every_module_of_the_package(package: str) -> None:
    folder = ROOT / package
    docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    parts = [
        path.stem
        for path in folder.glob("*.py")
        if path.stem not in {"__init__", "__main__"}
    ] + [path.name for path in folder.iterdir() if (path / "__init__.py").is_file()]
    unnamed = [part for part in sorted(parts) if not re.search(rf"\b{part}\b", docstring)]
    assert unnamed == [], f"{package}/__init__.py does not say what these hold: {unnamed}"


def test_no_two_modules_share_a_basename() -> None:
    by_name: dict[str, set[str]] = defaultdict(set)
    for path in python_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "tests" or path.name in {"__init__.py", "__main__.py"}:
            continue
        by_name[path.name].add(str(relative))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert shared == SHARED_BASENAMES
