"""The two apps under ``examples/``, not written for this project, deploy with it: what adopting
the runtime costs them (lines of their own code, lines of a stack file), and that their stacks
render and point the twin at their own images. Their twin scenarios are in
``tests/test_twin_scenarios.py`` (``APPS``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from devtools.plan import report
from devtools.render import read_stack_file, run_program, stack_names
from devtools.twin.deployed_stack import program_image
from devtools.twin.dockerfile_image import IMAGE_VENV_PATH, ImageError
from tests.support import ROOT, shared_stack_runs, stack_run

EXAMPLES = ["seed", "django"]
#: The issue's goals: lines of the app's code that adopt the runtime, lines of its stack file.
MAX_ADOPTION_LINES = 4
MAX_STACK_FILE_LINES = 15
#: How an example marks the lines it added to adopt the runtime.
MARKER = "# celery-ecs"


def code_lines(example: str) -> list[str]:
    """Every line of the example's Python code, its comments and docstrings left out."""
    lines = []
    for path in sorted((ROOT / "examples" / example).rglob("*.py")):
        source = path.read_text()
        docstrings = {
            number
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            for number in range(node.lineno, (node.end_lineno or node.lineno) + 1)
        }
        lines += [line.strip() for number, line in enumerate(source.splitlines(), 1)
                  if number not in docstrings and not line.lstrip().startswith("#")]  # fmt: skip
    return lines


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_lines_that_adopt_the_runtime_are_marked_and_counted_in_the_readme(
    example: str,
) -> None:
    adopting = [line for line in code_lines(example) if line.endswith(MARKER)]
    # Every line that names the runtime is counted (no unmarked one hides elsewhere).
    assert all(line.endswith(MARKER) for line in code_lines(example) if "celery_ecs" in line)
    assert any("equip(app)" in line for line in adopting), adopting
    assert len(adopting) <= MAX_ADOPTION_LINES
    readme = (ROOT / "examples" / example / "README.md").read_text()
    stated = re.search(r"\*\*(\d+) lines\*\* of its own code", readme)
    assert stated is not None and int(stated.group(1)) == len(adopting)


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_stack_file_is_short_and_found_by_its_name(example: str) -> None:
    path = ROOT / "examples" / example / f"Pulumi.{example}.yaml"
    assert len(path.read_text().splitlines()) <= MAX_STACK_FILE_LINES
    assert example in stack_names()
    assert read_stack_file(example).path == path  # make plan/run STACK=<example>


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_stack_renders_and_the_twin_runs_the_example_s_own_image(example: str) -> None:
    stack = read_stack_file(example)
    run = stack_run(stack.config, stack=example)
    image = program_image(run)
    app_files = {path: source for path, source in image.copies.items()
                 if source.is_relative_to(ROOT / "examples" / example)}  # fmt: skip
    # The app's own files only, at the image's paths; nothing of the repository's example app.
    assert app_files and set(app_files) == set(image.copies), image.copies
    assert not any(path.startswith("/app/app") for path in image.copies)
    # The build stage installs the example's requirements and the runtime from source.
    (install,) = [c for c in image.venv_build.commands if "install" in c]
    assert "/tmp/requirements.txt" in install and "/src" in install
    assert image.venv_build.files["/tmp/requirements.txt"] == (
        ROOT / "examples" / example / "requirements.txt"
    )
    assert image.user == "10001:10001" and "/tmp" in image.volumes
    assert IMAGE_VENV_PATH in image.env["PATH"]
    (web,) = [d for d in run.task_definitions().values() if d.service == "web"]
    assert web.command == stack.config["web"]["command"]  # type: ignore[index]


def test_the_twin_refuses_a_prebuilt_image_it_cannot_pull() -> None:
    stack = read_stack_file("seed").config
    run = run_program({**stack, "image": {"uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/"
                                          "seed@sha256:" + "0" * 64}}, stack="seed")  # fmt: skip
    with pytest.raises(ImageError, match=r"image\.uri: the twin runs images it builds"):
        program_image(run)


@pytest.mark.parametrize("example", EXAMPLES)
def test_make_plan_renders_and_validates_the_example(
    example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with shared_stack_runs():
        assert report.main(["--stack", example, "--no-diagram"]) == 0
    out = capsys.readouterr().out
    assert f"Offline plan of stack {example}" in out
    assert "OK:" in out


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_build_context_file_the_dockerfile_copies_is_sent(example: str) -> None:
    """The Dockerfile's own ignore file (an allowlist) lets through what it copies."""
    directory = ROOT / "examples" / example
    allowed = [line[1:].rstrip("/") for line in (directory / "Dockerfile.dockerignore")
               .read_text().splitlines() if line.startswith("!")]  # fmt: skip
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (directory / "Dockerfile").read_text(),
                        flags=re.M)  # fmt: skip
    for sources in copied:
        for source in sources.split():
            assert any(Path(source.rstrip("/")).is_relative_to(a) for a in allowed), source
