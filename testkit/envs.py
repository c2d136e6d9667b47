"""Virtualenvs built the way each entry point's runner builds them, and cached.

Every entry point of the project runs in an environment some runner builds: Pulumi builds the
program's from ``requirements.txt`` (``Pulumi.yaml``: ``toolchain: pip``), the policy pack's from
``policy/requirements.txt``, each job of the GitHub workflow its own with the commands of its
steps, ``make`` the development one from ``requirements-dev.txt``. The tests prove each entry
point in the environment its runner builds (tests/test_entry_environments.py), not in the one
virtualenv that holds everything.

An ``Install`` is one such build: a shell command and the files it reads. ``build`` runs the
command, verbatim, in a directory of the cache holding copies of exactly those files, with a
bare interpreter first on ``PATH`` as ``python`` (the runner's, which has nothing of ours), and
keeps the result under a hash of the command, the files' contents and the interpreter's
version: two runners that install the same thing share one build, a changed requirements file
makes a new one. A build that fails raises ``BuildError`` with its output.

This file also runs as a script, the tests' stand-in for ``make`` in a workflow job:

    python testkit/envs.py make --cache DIR -- [make's arguments]

serves the virtualenv a goal needs (a rule whose recipe runs ``-m venv``, such as
``.venv/bin/.installed``) from the cache, then runs the real ``make`` for the rest. It imports
nothing of the project's, so it runs from any checkout.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The cache (gitignored; ``make clean`` removes it). A fresh clone builds each environment once.
CACHE = ROOT / ".venvs"
#: The directories a runner's commands find programs in, after the runner's own.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Seconds one build may take (a cold requirements-dev.txt downloads hundreds of megabytes).
BUILD_TIMEOUT = 1800
#: Marks a finished build; a directory without it is a build that died, and is redone.
BUILT = ".built.json"
#: Environment variables that would let a runner's Python see packages of ours.
_LEAKY = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")


class BuildError(RuntimeError):
    """An environment could not be built: its command failed (the message holds its output)."""


def python_version() -> str:
    """``major.minor`` of the interpreter the environments are built with."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def base_interpreter() -> Path:
    """The interpreter the running virtualenv (if any) was made from."""
    return Path(getattr(sys, "_base_executable", sys.executable))


def clean_environment(path: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what points Python at packages of ours, with
    ``PATH`` set to ``path``."""
    environment = {key: value for key, value in os.environ.items() if key not in _LEAKY}
    environment["PATH"] = path
    environment.update(extra or {})
    return environment


@contextmanager
def _locked(name: str, cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``name`` in ``cache``: parallel test processes wait for one
    build instead of running it twice in the same directory."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def runner_bin(cache: Path = CACHE) -> Path:
    """The ``bin`` directory of a bare virtualenv of the base interpreter: a ``python`` (and
    ``python3``) with pip and nothing of ours, the stand-in for what ``actions/setup-python``
    puts on a runner's ``PATH``."""
    interpreter = base_interpreter()
    digest = hashlib.sha256(f"{interpreter}\0{sys.version}".encode()).hexdigest()[:16]
    directory = cache / f"python-{python_version()}-{digest}"
    with _locked(directory.name, cache):
        if not (directory / BUILT).exists():
            shutil.rmtree(directory, ignore_errors=True)
            _run([str(interpreter), "-m", "venv", str(directory)], cwd=cache, path=SYSTEM_PATH)
            (directory / BUILT).write_text(json.dumps({"interpreter": str(interpreter)}))
    return directory / "bin"


def _run(command: Sequence[str], *, cwd: Path, path: str) -> None:
    result = subprocess.run(
        command, cwd=cwd, env=clean_environment(path), capture_output=True, text=True,
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    if result.returncode != 0:
        raise BuildError(
            f"{' '.join(command)} (in {cwd}) exited with {result.returncode}:\n"
            f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )


@dataclass(frozen=True)
class Install:
    """A shell command that builds one or more virtualenvs, and the files it reads, keyed by
    their path relative to the directory it runs in."""

    command: str
    inputs: Mapping[str, Path]
    #: Files the command reads too, whose effect ``recipe`` states: copied, not hashed.
    support: Mapping[str, Path] = field(default_factory=dict)
    #: What the command runs when its text does not say it (make: the expanded recipe).
    recipe: str = ""

    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(f"{sys.version}\0{self.command}\0{self.recipe}\0".encode())
        for relative in sorted(self.inputs):
            digest.update(f"{relative}\0".encode() + self.inputs[relative].read_bytes() + b"\0")
        return digest.hexdigest()[:20]


def build(install: Install, cache: Path = CACHE) -> Path:
    """The directory where ``install.command`` ran, among copies of its inputs: the
    virtualenvs it made are there, at the paths the command gave them. Built once per key."""
    directory = cache / install.key()
    with _locked(directory.name, cache):
        if not (directory / BUILT).exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            for relative, source in {**install.support, **install.inputs}.items():
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, directory / relative)
            path = f"{runner_bin(cache)}:{SYSTEM_PATH}"
            _run(["bash", "-eo", "pipefail", "-c", install.command], cwd=directory, path=path)
            (directory / BUILT).write_text(
                json.dumps({"command": install.command, "inputs": sorted(install.inputs)})
            )
    return directory


def virtualenvs(directory: Path) -> list[str]:
    """The virtualenvs under ``directory`` (a build's), as paths relative to it."""
    found = [path.parent for path in sorted(directory.rglob("pyvenv.cfg"))]
    return [
        str(venv.relative_to(directory))
        for venv in found
        if not any(other in venv.parents for other in found)
    ]


def link_virtualenvs(built: Path, into: Path) -> list[str]:
    """Make each virtualenv of a build appear in ``into`` at the same relative path (a symbolic
    link: a virtualenv's scripts name its absolute path, so it cannot be copied or moved)."""
    linked = virtualenvs(built)
    for relative in linked:
        target = into / relative
        if target.is_symlink() or target.exists():
            if not target.is_symlink():
                raise BuildError(f"{target} exists and is not a link to a cached virtualenv")
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(built / relative, target_is_directory=True)
    return linked


# --- what an install reads --------------------------------------------------------------------

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)")


def requirement_files(names: Iterable[str], directory: Path) -> dict[str, Path]:
    """Requirements files named relative to ``directory``, with every file they include
    (``-r``/``-c``, relative to the including file), keyed by path relative to ``directory``."""
    found: dict[str, Path] = {}
    pending = [directory / name for name in names]
    while pending:
        path = pending.pop()
        relative = os.path.relpath(path, directory)
        if relative in found:
            continue
        if not path.is_file():
            raise BuildError(f"requirements file {relative} (in {directory}) does not exist")
        found[relative] = path
        for line in path.read_text().splitlines():
            include = _INCLUDE.match(line)
            if include:
                pending.append(path.parent / include[1])
    return found


_PIP_STEP = re.compile(
    r"^(?:python3? -m venv (?P<venv>\S+)|(?P<pip>\S+/bin/pip) install (?P<args>(?:-r \S+ ?)+))$"
)


def pip_steps(command: str, directory: Path) -> Install | None:
    """``command`` as an ``Install`` when it only makes virtualenvs and pip-installs
    requirements files into them (``python -m venv D && D/bin/pip install -r F``), else None."""
    parts = [part.strip() for part in command.strip().split("&&")]
    matches = [_PIP_STEP.match(part) for part in parts]
    if not parts or not all(matches) or "-m venv" not in command:
        return None
    files = [
        name
        for match in matches
        if match and match["args"]
        for name in match["args"].split()
        if name != "-r"
    ]
    return Install(command.strip(), requirement_files(files, directory))


def pulumi_pip_toolchain(directory: Path, project_file: str) -> Install:
    """What Pulumi runs to build the virtualenv of the project (``Pulumi.yaml``) or policy
    pack (``PulumiPolicy.yaml``) in ``directory`` with ``toolchain: pip``: ``python -m venv
    <virtualenv>``, then pip, setuptools and wheel upgraded, then ``pip install -r
    requirements.txt`` (pulumi/pulumi sdk/python/toolchain/pip.go, InstallDependencies)."""
    runtime = (yaml.safe_load((directory / project_file).read_text()) or {}).get("runtime")
    options = runtime.get("options", {}) if isinstance(runtime, dict) else {}
    if options.get("toolchain", "pip") != "pip" or not options.get("virtualenv"):
        raise BuildError(
            f"{directory / project_file}: runtime.options must name toolchain: pip and a "
            f"virtualenv; found {options}"
        )
    python = f"{options['virtualenv']}/bin/python"
    command = (
        f"python -m venv {options['virtualenv']}"
        f" && {python} -m pip install --upgrade pip setuptools wheel"
        f" && {python} -m pip install -r requirements.txt"
    )
    return Install(command, requirement_files(["requirements.txt"], directory))


# --- make -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    prerequisites: tuple[str, ...]
    recipe: tuple[str, ...]


def make_rules(directory: Path) -> dict[str, Rule]:
    """The rules of ``directory``'s Makefile as make reads them (its database, ``make -pq``):
    target -> prerequisites (expanded) and recipe lines (unexpanded)."""
    result = subprocess.run(
        [_real_make(), "-C", str(directory), "-pq", "--no-print-directory"],
        capture_output=True, text=True, timeout=60, env=clean_environment(SYSTEM_PATH),
    )  # fmt: skip
    rules: dict[str, Rule] = {}
    target: str | None = None
    for line in result.stdout.splitlines():
        if line.startswith("\t") and target is not None:
            rule = rules[target]
            rules[target] = Rule(rule.prerequisites, (*rule.recipe, line.strip()))
            continue
        rule_line = re.match(r"^([^#\s:=][^:=]*?):(?![:=])\s*(.*)$", line)
        if rule_line:
            target = rule_line[1]
            prerequisites = tuple(rule_line[2].split("|")[0].split())
            rules[target] = Rule(prerequisites, ())
        elif not line.startswith("#"):
            target = None
    return rules


def venv_targets(rules: Mapping[str, Rule]) -> set[str]:
    """The targets whose recipe makes a virtualenv."""
    return {target for target, rule in rules.items() if any("-m venv" in r for r in rule.recipe)}


def needed_venv_targets(rules: Mapping[str, Rule], goals: Iterable[str]) -> list[str]:
    """The virtualenv targets ``goals`` depend on, directly or not (or are)."""
    wanted = venv_targets(rules)
    seen: set[str] = set()
    pending = list(goals)
    while pending:
        target = pending.pop()
        if target not in seen:
            seen.add(target)
            pending.extend(rules.get(target, Rule((), ())).prerequisites)
    return sorted(seen & wanted)


def make_install(directory: Path, target: str, rules: Mapping[str, Rule]) -> Install:
    """``make TARGET`` in ``directory`` as an ``Install``: it reads the target's prerequisites
    (and the files those include) and runs the target's recipe, as make expands it (``make
    -n -B``). An edit elsewhere in the Makefile builds nothing anew."""
    files = [name for name in rules[target].prerequisites if (directory / name).is_file()]
    recipe = subprocess.run(
        [_real_make(), "-C", str(directory), "-n", "-B", "--no-print-directory", target],
        capture_output=True, text=True, timeout=60, check=True,
        env=clean_environment(SYSTEM_PATH),
    ).stdout  # fmt: skip
    return Install(
        f"make {target}",
        requirement_files(files, directory),
        support={"Makefile": directory / "Makefile"},
        recipe=recipe,
    )


def _real_make() -> str:
    found = shutil.which("make", path=SYSTEM_PATH)
    if found is None:
        raise BuildError("make is not installed")
    return found


def make_standin(arguments: Sequence[str], cache: Path) -> int:
    """Run ``make arguments``, with every virtualenv a goal needs served from the cache (and
    not remade: ``-o``). Only options of the form the workflow uses are read: ``-C DIR``."""
    arguments = list(arguments)
    directory = Path.cwd()
    goals: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "-C":
            directory = directory / arguments[index + 1]
            index += 1
        elif not argument.startswith("-") and "=" not in argument:
            goals.append(argument)
        index += 1
    rules = make_rules(directory)
    needed = needed_venv_targets(rules, goals or ["all"])
    for target in needed:
        built = build(make_install(directory, target, rules), cache)
        for relative in link_virtualenvs(built, directory):
            print(f"make: {relative} (for {target}) served from {built}", file=sys.stderr)
    remaining = [goal for goal in goals if goal not in needed]
    if goals and not remaining:
        return 0
    old = [option for target in needed for option in ("-o", target)]
    return subprocess.run([_real_make(), *old, *arguments], check=False).returncode


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 3 and argv[0] == "make" and argv[1] == "--cache":
        rest = list(argv[3:])
        return make_standin(rest[1:] if rest[:1] == ["--"] else rest, Path(argv[2]))
    print(f"usage: {Path(__file__).name} make --cache DIR -- [make arguments]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
