"""The layout says what each part holds, and a name means one thing (issue 20).

- every Pulumi type name (``aws:ecs/service:Service``) is spelled in one module,
  ``policy/invariants/aws_types.py``, and read from there everywhere else.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from pathlib import Path

from tests.support import ROOT

#: The project's own Python, by top-level folder (the checkout's virtualenvs and caches are not).
SOURCE_FOLDERS = ("app", "infra", "policy", "devtools", "testkit", "bench", "tests")
AWS_TYPES = ROOT / "policy" / "invariants" / "aws_types.py"
#: A Pulumi type token as a whole string literal: ``"<package>:<module>:<Type>"``.
TYPE_TOKEN = re.compile(r"""^["'](?:aws|random|docker-build):[A-Za-z0-9/]*:[A-Za-z0-9]+["']$""")
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
