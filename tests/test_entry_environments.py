"""Every entry point runs in the environment its real runner builds, not in the test suite's.

The suite itself runs in one virtualenv that holds everything (requirements-dev.txt); issue 17
was a program that passed there and could not be imported in the virtualenv Pulumi builds from
requirements.txt alone. Here each entry point runs in its own runner's environment, built by
``testkit.envs`` with the runner's own commands and cached (``.venvs/``, by a hash of what is
installed and the Python version; a fresh clone builds each once, which needs PyPI):

- the Pulumi program (``__main__.py``, as Pulumi's language host runs it, under mocks) in the
  virtualenv Pulumi's pip toolchain makes from ``Pulumi.yaml``: every stack file, and an
  EventBridge stack;
- the policy pack, started as Pulumi starts it, in the virtualenv made from
  ``policy/PulumiPolicy.yaml``, judging the program's resources over gRPC;
- every job of ``.github/workflows/pulumi.yml``: its install steps, read from the workflow and
  run as written (each served from the cache: two jobs that install the same thing share one
  virtualenv), then its commands, with stand-ins only where a step needs AWS, the Pulumi
  service or GitHub.

A virtualenv that cannot be built fails these tests (``BuildError``): it is never a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import render
from devtools.plan import policy_check
from policy.invariants import aws_types
from policy.invariants.policies import POLICIES
from testkit import envs
from tests.support import ROOT
from tests.test_workflows import load, write_fake_gh

# The tier (tests/tiers.py): the entry points in virtualenvs built from PyPI (.venvs/).
pytestmark = pytest.mark.redis

WORKFLOW_FILE = ROOT / ".github" / "workflows" / "pulumi.yml"
WORKFLOW = load(WORKFLOW_FILE)
#: Each artifact's name -> the job that uploads it. A job that downloads an artifact runs its
#: uploader first, in the same runner, as GitHub does (``needs``).
UPLOADERS: dict[str, str] = {
    str(step["with"]["name"]): job
    for job, definition in WORKFLOW["jobs"].items()
    for step in definition["steps"]
    if str(step.get("uses", "")).startswith("actions/upload-artifact")
}
#: The jobs a test runs by name; the uploaders run inside their downloaders' tests (running
#: them again alone would repeat the same work: the offline plan of head and base).
JOBS_RUN_FIRST = sorted(set(WORKFLOW["jobs"]) - set(UPLOADERS.values()))
#: The packages the program's virtualenv must not hold: the app's, which the image has.
APP_ONLY_PACKAGES = ("celery", "kombu", "redis", "flask")


def run(
    argv: list[str], *, cwd: Path, path: str = envs.SYSTEM_PATH, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=envs.clean_environment(path), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def finds(python: Path, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` the interpreter ``python`` can import."""
    script = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    result = run([str(python), "-c", script, *modules], cwd=Path("/"))
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def virtualenv_python(directory: Path, project_file: str) -> Path:
    """The interpreter of the virtualenv Pulumi builds for the project or pack in
    ``directory``: built by its pip toolchain's commands (cached)."""
    built = envs.build(envs.pulumi_pip_toolchain(directory, project_file))
    options = yaml.safe_load((directory / project_file).read_text())["runtime"]["options"]
    return built / options["virtualenv"] / "bin" / "python"


def render_with(python: Path, stack_files: list[Path], cwd: Path = ROOT) -> dict[str, Any]:
    """Each stack file rendered by ``python -m devtools.render`` (the project's ``__main__.py``
    under the mocks) in ``cwd``, as JSON."""
    result = run([str(python), "-m", "devtools.render", *map(str, stack_files)], cwd=cwd)
    assert result.returncode == 0, f"{python} could not run the program:\n{result.stderr}"
    rendered: dict[str, Any] = json.loads(result.stdout)
    return rendered


def registrations(rendered: Mapping[str, Any]) -> list[render.Registration]:
    return [render.Registration.from_json(item) for item in rendered["resources"]]


@pytest.fixture(scope="module")
def stack_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every shipped stack file, and dev's with the EventBridge scheduler."""
    shipped = sorted(ROOT.glob("Pulumi.*.yaml"))
    assert {path.name for path in shipped} >= {"Pulumi.dev.yaml", "Pulumi.prod.yaml"}
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    dev["config"]["celery-ecs:scheduler"] = "eventbridge"
    eventbridge = tmp_path_factory.mktemp("stacks") / "Pulumi.eventbridge.yaml"
    eventbridge.write_text(yaml.safe_dump(dev))
    return [*shipped, eventbridge]


@pytest.fixture(scope="module")
def program_python() -> Path:
    return virtualenv_python(ROOT, "Pulumi.yaml")


@pytest.fixture(scope="module")
def rendered(program_python: Path, stack_files: list[Path]) -> dict[str, Any]:
    return render_with(program_python, stack_files)


# --- 1. the Pulumi program --------------------------------------------------------------------


def test_the_program_runs_in_the_virtualenv_pulumi_builds(
    program_python: Path, stack_files: list[Path], rendered: dict[str, Any]
) -> None:
    # The environment is the minimal one: none of the app's packages.
    assert finds(program_python, APP_ONLY_PACKAGES) == []
    assert set(rendered) == {path.stem.removeprefix("Pulumi.") for path in stack_files}
    # The same program as in the suite's environment: the same resources and outputs.
    everything = render_with(Path(sys.executable), stack_files)
    for stack, run_there in rendered.items():
        here = everything[stack]
        assert len(run_there["resources"]) > 50, stack
        assert sorted((r["type"], r["name"]) for r in run_there["resources"]) == sorted(
            (r["type"], r["name"]) for r in here["resources"]
        ), stack
        assert run_there["outputs"].keys() == here["outputs"].keys(), stack
    schedulers = {stack: run_there["outputs"]["scheduler"] for stack, run_there in rendered.items()}
    assert schedulers["eventbridge"] == "eventbridge" != schedulers["dev"]
    rules = [r for r in rendered["eventbridge"]["resources"] if r["type"].endswith(":EventRule")]
    assert rules, "the EventBridge stack registered no schedule rule"


# --- 2. the policy pack -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_python() -> Path:
    return virtualenv_python(ROOT / "policy", "PulumiPolicy.yaml")


def test_the_policy_pack_loads_and_judges_in_its_own_virtualenv(
    policy_python: Path, rendered: dict[str, Any]
) -> None:
    # Its own environment: not the program's provider, not the app.
    assert finds(policy_python, ("pulumi_policy",)) == ["pulumi_policy"]
    assert finds(policy_python, ("pulumi_aws", *APP_ONLY_PACKAGES)) == []
    with policy_check.running_pack(policy_python, ROOT / "policy") as pack:
        for stack in ("dev", "prod", "eventbridge"):
            verdict = policy_check.analyze(pack, registrations(rendered[stack]))
            assert verdict.name == "celery-ecs-invariants"
            assert verdict.policies == [policy.name for policy in POLICIES]
            assert verdict.violations == [], stack

        # A broken resource: an IAM policy that allows every action.
        resources = registrations(rendered["dev"])
        index, role_policy = next(
            (i, r) for i, r in enumerate(resources) if r.type == aws_types.IAM_ROLE_POLICY
        )
        wildcard = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}
        ]}  # fmt: skip
        broken = render.Registration(
            **{**role_policy.to_json(), "secret_inputs": role_policy.secret_inputs,
               "inputs": {**role_policy.inputs, "policy": json.dumps(wildcard)}}
        )  # fmt: skip
        resources[index] = broken
        verdict = policy_check.analyze(pack, resources)
    assert verdict.violations, "the pack passed an IAM policy allowing every action"
    assert {violation.resource for violation in verdict.violations} == {broken.name}
    # Every violation blocks (the pack is mandatory), as the in-process runner reports them.
    assert verdict.enforcement_levels == {"MANDATORY"}
    in_process = policy_check.check(render.ProgramRun(resources=resources))
    assert sorted((v.policy, v.resource) for v in verdict.violations) == sorted(
        (v.policy, v.resource) for v in in_process
    )


# --- the cache --------------------------------------------------------------------------------


def test_a_build_runs_its_command_once_per_key_and_a_failure_fails(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing\n")
    install = envs.Install(
        "python -m venv --without-pip v && echo built >>../runs", {"requirements.txt": requirements}
    )
    built = envs.build(install, cache)
    assert envs.virtualenvs(built) == ["v"]
    assert envs.build(install, cache) == built  # cached: the command ran once
    assert (cache / "runs").read_text() == "built\n"
    # What is installed is the key: another requirements file, another build.
    requirements.write_text("pip\n")
    changed = envs.Install(install.command, {"requirements.txt": requirements})
    assert changed.key() != built.name
    # A command that fails raises, with its output, and leaves no finished build behind.
    failing = envs.Install("python -m venv --without-pip v && echo broken >&2 && exit 3", {})
    with pytest.raises(envs.BuildError, match="broken"):
        envs.build(failing, cache)
    assert not (cache / failing.key() / envs.BUILT).exists()


def test_jobs_that_install_the_same_thing_share_a_virtualenv() -> None:
    def installs(job: str) -> list[envs.Install]:
        found = [
            envs.pip_steps(str(step["run"]), ROOT)
            for step in WORKFLOW["jobs"][job]["steps"]
            if "run" in step
        ]
        return [install for install in found if install is not None]

    assert [i.key() for i in installs("preview")] == [i.key() for i in installs("deploy")]
    assert len(installs("preview")) == 2
    # Pulumi's own toolchain upgrades pip, setuptools and wheel first: another virtualenv.
    program = envs.pulumi_pip_toolchain(ROOT, "Pulumi.yaml")
    assert program.key() not in {install.key() for install in installs("preview")}


# --- 3. the workflow's jobs -------------------------------------------------------------------

@cache
def github_context() -> dict[str, Any]:
    """What the workflow's expressions read. Repository variables are unset (their defaults
    apply). Read when a job runs, not at import: collecting the unit tier imports this module
    too, as a user git may refuse to run for (a checkout owned by root)."""
    base_sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "token": "stand-in-github-token",
        "repository": "owner/repo",
        "event_name": "pull_request",
        "event": {
            "pull_request": {
                "number": 7,
                "base": {"sha": base_sha},
                "head": {"repo": {"full_name": "owner/repo"}},
            }
        },
    }
#: GitHub runs ``run`` steps with ``bash --noprofile --norc -eo pipefail {0}`` (GitHub Docs,
#: "Workflow syntax for GitHub Actions", jobs.<job_id>.steps[*].shell).
SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


@dataclass
class JobRun:
    """One job's run: its workspace (the checkout), step outputs, and what it printed."""

    name: str
    workspace: Path
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)


class Runner:
    """Runs a workflow job's steps on this machine, as a GitHub runner would: a checkout of the
    tree, ``python`` a bare interpreter (setup-python's), ``run`` steps in bash, install steps
    served from the cache (built by running them as written), and stand-ins for what needs the
    outside world: ``sudo`` (already root), ``apt-get`` (checks the packages are installed),
    ``gh`` (records its calls: test_workflows.py's), ``make`` (its virtualenv goals from the
    cache, testkit/envs.py), AWS credentials (none needed), ``pulumi/actions`` (the program
    rendered under the mocks in the job's ``.venv``, judged by the policy pack in its own
    virtualenv) and the artifact store (a directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.artifacts = directory / "artifacts"
        self.standins = directory / "bin"
        self.standins.mkdir(parents=True)
        self.gh_calls = directory / "gh-calls"
        write_fake_gh(self.standins, self.gh_calls)
        self._script("sudo", '[ "${1:-}" = -E ] && shift\nexec "$@"\n')
        self._script(
            "apt-get",
            'case "$1" in update) exit 0;; install) shift;; *) exit 2;; esac\n'
            'for package in "$@"; do\n'
            '  case "$package" in -*) continue;; esac\n'
            '  dpkg-query -W -f=\'${Status}\\n\' "$package" 2>/dev/null | grep -q "ok installed"'
            ' || { echo "apt-get stand-in: $package is not installed" >&2; exit 100; }\n'
            "done\n",
        )
        self._script(
            "make",
            f"exec {sys.executable} {ROOT / 'testkit' / 'envs.py'} make --cache {envs.CACHE}"
            ' -- "$@"\n',
        )
        self.python_bin = envs.runner_bin()
        self.path = f"{self.standins}:{self.python_bin}:{envs.SYSTEM_PATH}"
        self.runs: dict[str, JobRun] = {}

    def _script(self, name: str, body: str) -> None:
        script = self.standins / name
        script.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n{body}")
        script.chmod(0o755)

    # --- expressions ---

    def evaluate(self, expression: str, job: JobRun) -> Any:
        """The few expression forms the workflow uses: ``!cancelled()``, ``a || 'default'``,
        and context paths (an unset repository variable is empty)."""
        expression = expression.strip()
        if expression == "!cancelled()":
            return True
        value: Any = ""
        for alternative in (part.strip() for part in expression.split("||")):
            if re.fullmatch(r"'[^']*'", alternative):
                value = alternative[1:-1]
            else:
                value = self._lookup(alternative, job)
            if value:
                return value
        return value

    def _lookup(self, path: str, job: JobRun) -> Any:
        head, _, rest = path.partition(".")
        contexts: dict[str, Any] = {
            "github": github_context(), "vars": {}, "secrets": {"PULUMI_ACCESS_TOKEN": "stand-in"},
            "steps": {step: {"outputs": outputs} for step, outputs in job.outputs.items()},
        }  # fmt: skip
        if head not in contexts:
            raise AssertionError(f"the job runner does not know the expression {path!r}")
        value: Any = contexts[head]
        for key in rest.split("."):
            if head == "vars" and key not in value:
                return ""
            if not isinstance(value, dict) or key not in value:
                raise AssertionError(f"the job runner does not know the expression {path!r}")
            value = value[key]
        return value

    def substitute(self, text: str, job: JobRun) -> str:
        return re.sub(r"\$\{\{(.*?)\}\}", lambda m: str(self.evaluate(m[1], job)), text)

    # --- jobs ---

    def run_job(self, name: str) -> JobRun:
        if name in self.runs:
            return self.runs[name]
        definition = WORKFLOW["jobs"][name]
        job = JobRun(name, self.directory / name / "workspace")
        job.workspace.mkdir(parents=True)
        environment = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_REPOSITORY": github_context()["repository"],
            "GITHUB_WORKSPACE": str(job.workspace),
            "GITHUB_STEP_SUMMARY": str(self.directory / name / "summary.md"),
            "RUNNER_TEMP": str(self.directory / name),
            # Runs of `make test` collect the suite rather than run it (it is running this).
            "PYTEST_ADDOPTS": "--collect-only -q -n 0 -p no:cacheprovider",
            # mypy's cache outlives the workspace: the same verdict, without minutes of work.
            "MYPY_CACHE_DIR": str(envs.CACHE / "mypy"),
        }
        for key, value in (definition.get("env") or {}).items():
            environment[key] = self.substitute(str(value), job)
        for number, step in enumerate(definition["steps"]):
            label = f"{name} step {number} ({step.get('name') or step.get('uses') or step['run']})"
            step_environment = {
                **environment,
                **{k: self.substitute(str(v), job) for k, v in (step.get("env") or {}).items()},
            }
            if "uses" in step:
                outputs = self.use(step, job, step_environment, label)
            else:
                command = self.substitute(step["run"], job)
                outputs = self.run_step(command, job, step_environment, label)
            if "id" in step:
                job.outputs[step["id"]] = outputs
        self.runs[name] = job
        return job

    def run_step(
        self, command: str, job: JobRun, environment: dict[str, str], label: str
    ) -> dict[str, str]:
        install = envs.pip_steps(command, job.workspace)
        if install is not None:
            built = envs.build(install)
            for relative in envs.link_virtualenvs(built, job.workspace):
                job.served.append(relative)
            job.log.append(f"{label}: served from {built}")
            return {}
        result = subprocess.run(
            [*SHELL, "-c", command], cwd=job.workspace, capture_output=True, text=True,
            timeout=1800, env={**envs.clean_environment(self.path), **environment},
        )  # fmt: skip
        job.log.append(f"{label}:\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, f"{label} failed ({result.returncode}):\n" + "\n".join(
            job.log[-1:]
        )
        return {}

    def use(
        self, step: dict[str, Any], job: JobRun, environment: dict[str, str], label: str
    ) -> dict[str, str]:
        action = str(step["uses"]).split("@", 1)[0]
        inputs = {k: self.substitute(str(v), job) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            checkout(job.workspace)
        elif action == "actions/setup-python":
            assert inputs["python-version"] == envs.python_version(), (
                f"{label} asks for Python {inputs['python-version']}; the environments here are "
                f"built with {envs.python_version()}"
            )
        elif action == "aws-actions/configure-aws-credentials":
            pass  # the stand-ins reach nothing of AWS
        elif action == "pulumi/actions":
            return {"output": self.pulumi(inputs, job, label)}
        elif action == "actions/upload-artifact":
            store = self.artifacts / inputs["name"]
            for entry in inputs["path"].split():
                source = job.workspace / entry
                if source.is_dir():
                    shutil.copytree(source, store / entry, dirs_exist_ok=True)
                elif source.exists():
                    (store / entry).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, store / entry)
                else:
                    assert inputs.get("if-no-files-found") == "ignore", f"{label}: no {entry}"
        elif action == "actions/download-artifact":
            store = self.artifacts / inputs["name"]
            if not store.exists():
                self.run_job(UPLOADERS[inputs["name"]])
            shutil.copytree(store, job.workspace / inputs["path"], dirs_exist_ok=True)
        else:
            raise AssertionError(f"{label}: the job runner has no stand-in for {action}")
        return {}

    def pulumi(self, inputs: dict[str, str], job: JobRun, label: str) -> str:
        """pulumi/actions: the program run by its runtime's virtualenv (``Pulumi.yaml``), which
        the action does not build, and each policy pack's verdict from its own virtualenv."""
        workspace = job.workspace
        options = yaml.safe_load((workspace / "Pulumi.yaml").read_text())["runtime"]["options"]
        python = workspace / options["virtualenv"] / "bin" / "python"
        assert python.exists(), f"{label}: no {options['virtualenv']}: no step built it"
        stack = inputs["stack-name"]
        rendered = render_with(python, [workspace / f"Pulumi.{stack}.yaml"], cwd=workspace)[stack]
        lines = [f"{inputs['command']} of {stack}: {len(rendered['resources'])} resources"]
        for pack in inputs.get("policyPacks", "").split():
            pack_dir = workspace / pack
            pack_options = yaml.safe_load((pack_dir / "PulumiPolicy.yaml").read_text())["runtime"]
            pack_python = pack_dir / pack_options["options"]["virtualenv"] / "bin" / "python"
            assert pack_python.exists(), f"{label}: the policy pack's virtualenv was not built"
            with policy_check.running_pack(pack_python, pack_dir) as analyzer:
                verdict = policy_check.analyze(analyzer, registrations(rendered))
            lines.append(f"policy pack {verdict.name}: {len(verdict.violations)} violation(s)")
            lines += [f"{v.policy}: {v.resource}: {v.message}" for v in verdict.violations]
            assert not verdict.violations, "\n".join(lines)
        job.log.append(f"{label}:\n" + "\n".join(lines))
        return "\n".join(lines)


def checkout(workspace: Path) -> None:
    """actions/checkout: the tree (tracked and new files, as git would commit them) in a git
    repository whose origin is this one, so a job can fetch the base commit from it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workspace / name)
    git = ["git", "-c", "user.name=runner", "-c", "user.email=runner@localhost"]
    for command in (
        ["init", "-q"],
        ["remote", "add", "origin", f"file://{ROOT}"],
        ["add", "-A"],
        ["commit", "-q", "-m", "checkout"],
    ):
        subprocess.run([*git, *command], cwd=workspace, check=True, capture_output=True)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    yield Runner(tmp_path)


def test_the_runner_python_has_nothing_of_ours(runner: Runner) -> None:
    """setup-python's stand-in: what the preview's comment step runs devtools.plan.comment with."""
    python = runner.python_bin / "python"
    assert finds(python, ("yaml", "pulumi", "celery", "pytest")) == []


def test_every_uploader_runs_in_the_test_of_a_job_that_downloads_its_artifact() -> None:
    downloaded = {
        str(step["with"]["name"])
        for job in JOBS_RUN_FIRST
        for step in WORKFLOW["jobs"][job]["steps"]
        if str(step.get("uses", "")).startswith("actions/download-artifact")
    }
    assert UPLOADERS, "the workflow uploads no artifact: run every job by name"
    assert set(UPLOADERS) <= downloaded, "an artifact nobody downloads: its job runs in no test"


@pytest.mark.parametrize("name", JOBS_RUN_FIRST)
def test_each_workflow_job_runs_in_the_environment_it_installs(runner: Runner, name: str) -> None:
    runner.run_job(name)
    # A job whose artifact this one downloads ran first, in the same runner: checked here too.
    for job in runner.runs.values():
        check_job(runner, job)


def check_job(runner: Runner, job: JobRun) -> None:
    name, workspace = job.name, job.workspace
    log = "\n".join(job.log)
    if name == "test":
        # make test ran every check in the virtualenv make built, the suite collected there.
        assert "Success: no issues found" in log and "Contracts: 4 kept, 0 broken" in log, log
        assert re.search(r"\d+ tests? collected", log), log
    elif name == "offline-plan":
        assert (workspace / "status").read_text().strip() == "0", log
        assert (workspace / "head.txt").read_text().strip()
        assert (workspace / "base.txt").read_text().strip()  # the base's plan, from its checkout
        assert (runner.directory / name / "summary.md").read_text().strip()
    elif name in {"preview", "deploy"}:
        # The program in the .venv the job built, the pack in policy/venv, both from the cache.
        assert sorted(job.served) == [".venv", "policy/venv"], job.served
        assert "0 violation(s)" in log, log
    if name == "preview":
        # The comment, made by the runner's bare python, was posted through the gh stand-in.
        comment = (workspace / "comment.md").read_text()
        assert comment.startswith("<!-- celery-ecs offline plan -->")
        assert "preview of dev" in comment
        assert "-F body=@comment.md" in runner.gh_calls.read_text()
    if name == "preview-from-fork":
        assert "::notice title=No preview for pull requests from forks::" in log
