"""The GitHub workflow: valid, and deploying only what it must, with the right role.

Validated against GitHub's workflow schema (check-jsonschema's vendored copy, offline), then its
properties: which job may assume which AWS role, and the deploy queue.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ROLE_VARIABLES = {"AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN"}


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key "on" as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load(ROOT / ".github" / "workflows" / "pulumi.yml")


def roles_assumed(job: dict[str, Any]) -> set[str]:
    """The repository variables a job's AWS credential steps take their role from."""
    found = set()
    for step in job.get("steps", []):
        if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials"):
            found |= set(re.findall(r"vars\.(\w+)", step["with"]["role-to-assume"]))
    return found


def test_every_workflow_is_valid_for_github(tmp_path: Path) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text((ROOT / ".github/workflows/pulumi.yml").read_text().replace(
        "runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout: 5", 1
    ))  # fmt: skip
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0


def test_only_a_push_to_main_assumes_the_deploy_role(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    assert workflow["permissions"] == {}  # nothing unless a job asks
    assumed = {name: roles_assumed(job) for name, job in jobs.items()}
    assert {name for name, roles in assumed.items() if roles} == {"preview", "deploy"}
    assert assumed["preview"] == {"AWS_PREVIEW_ROLE_ARN"}
    assert assumed["deploy"] == {"AWS_DEPLOY_ROLE_ARN"}
    assert jobs["deploy"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert "pull_request" in jobs["preview"]["if"]
    # Only the jobs that assume a role may ask GitHub for an OIDC token.
    for name, job in jobs.items():
        may_assume = job.get("permissions", {}).get("id-token") == "write"
        assert may_assume == bool(assumed[name]), name
    assert workflow["on"]["push"] == {"branches": ["main"]}


def test_previews_of_forks_are_skipped_with_a_message(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    same_repository = "github.event.pull_request.head.repo.full_name == github.repository"
    fork = "github.event.pull_request.head.repo.full_name != github.repository"
    assert same_repository in jobs["preview"]["if"]
    assert fork in jobs["preview-from-fork"]["if"]
    assert jobs["preview-from-fork"]["permissions"] == {}
    (step,) = jobs["preview-from-fork"]["steps"]
    assert "::notice" in step["run"]


def test_deploys_queue_per_stack_and_previews_never_touch_the_queue(
    workflow: dict[str, Any],
) -> None:
    jobs = workflow["jobs"]
    deploy, preview = jobs["deploy"]["concurrency"], jobs["preview"]["concurrency"]
    # GitHub cancels a group's pending run when another arrives, unless the group queues.
    assert deploy == {
        "group": "deploy-${{ vars.PULUMI_STACK || 'dev' }}",
        "cancel-in-progress": False,
        "queue": "max",
    }
    assert preview["group"] == "preview-${{ github.event.pull_request.number }}"
    assert "concurrency" not in workflow  # no workflow-wide group a pull request could join
    assert "concurrency" not in jobs["test"]


def test_dependencies_are_cached_and_the_tests_run_first(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    for name in ("test", "preview", "deploy"):
        (setup,) = [s for s in jobs[name]["steps"] if "setup-python" in str(s.get("uses"))]
        assert setup["with"]["cache"] == "pip", name
    assert jobs["deploy"]["needs"] == "test"
    # The preview waits for the offline plan it comments with, and runs only after the tests
    # passed, even when the plan was refused (the comment shows both).
    assert jobs["preview"]["needs"] == ["test", "offline-plan"]
    assert "needs.test.result == 'success'" in jobs["preview"]["if"]
    assert any("make test" in str(step.get("run")) for step in jobs["test"]["steps"])


def test_previews_and_deploys_run_the_policy_pack(workflow: dict[str, Any]) -> None:
    for name in ("preview", "deploy"):
        steps = workflow["jobs"][name]["steps"]
        (pulumi,) = [s for s in steps if str(s.get("uses", "")).startswith("pulumi/actions")]
        assert pulumi["with"]["policyPacks"] == "policy", name
        runs = [str(step.get("run", "")) for step in steps[: steps.index(pulumi)]]
        # The pack's own virtualenv (PulumiPolicy.yaml: virtualenv venv), installed before.
        assert any(
            "python -m venv policy/venv" in run
            and "policy/venv/bin/pip install -r policy/requirements.txt" in run
            for run in runs
        ), name
    runtime = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}


def test_the_docs_show_both_trust_policies() -> None:
    readme = (ROOT / "docs" / "how-to" / "deploy-from-ci.md").read_text()
    assert '"token.actions.githubusercontent.com:sub": "repo:OWNER/REPO:pull_request"' in readme
    assert (
        '"token.actions.githubusercontent.com:sub": "repo:OWNER/REPO:ref:refs/heads/main"'
        in readme
    )


def test_one_comment_holds_the_preview_and_the_offline_plan(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    steps = jobs["preview"]["steps"]
    (pulumi,) = [s for s in steps if str(s.get("uses", "")).startswith("pulumi/actions")]
    assert pulumi["with"]["comment-on-pr"] is False
    later = steps[steps.index(pulumi) + 1 :]
    (download,) = [s for s in later if str(s.get("uses", "")).startswith("actions/download-art")]
    assert download["with"]["name"] == "offline-plan"
    (post,) = [s for s in later if "scripts/pr-comment" in str(s.get("run"))]
    assert "--preview" in post["run"] and post["env"]["PREVIEW"] == (
        "${{ steps." + pulumi["id"] + ".outputs.output }}"
    )
    # A failed preview (a policy violation) is still shown.
    assert download["if"] == post["if"] == "${{ !cancelled() }}"
    # Forks: no preview, and a read-only token; the plan goes to the job's summary.
    plan = jobs["offline-plan"]
    assert plan["permissions"] == {"contents": "read"}
    (upload,) = [s for s in plan["steps"] if str(s.get("uses", "")).startswith("actions/upload")]
    assert upload["with"]["name"] == "offline-plan"
    assert {"head.txt", "base.txt", "head.err", "status"} <= set(upload["with"]["path"].split())
    (summary,) = [s for s in plan["steps"] if "GITHUB_STEP_SUMMARY" in str(s.get("run"))]
    assert summary["if"] == "github.event.pull_request.head.repo.full_name != github.repository"


def write_fake_gh(bin_dir: Path, calls: Path) -> Path:
    """A stand-in for the gh CLI in ``bin_dir``: appends each call's arguments to ``calls``; a
    listing of comments prints ``$PREVIOUS`` (the id of the comment to replace), if set."""
    fake_gh = bin_dir / "gh"
    fake_gh.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$*" >>{calls}\n'
        # The listing (with --jq, gh prints the ids of the comments that start with the marker).
        'case "$*" in *--paginate*) [ -n "$PREVIOUS" ] && echo "$PREVIOUS";; esac\n'
        "exit 0\n"
    )
    fake_gh.chmod(0o755)
    return fake_gh


@pytest.mark.parametrize("previous", ["", "4242"])
def test_the_comment_script_replaces_the_previous_comment(tmp_path: Path, previous: str) -> None:
    """scripts/pr-comment against a stand-in for the gh CLI that records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    write_fake_gh(bin_dir, calls)
    body = tmp_path / "comment.md"
    body.write_text("<!-- marker -->\nthe plan\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "PREVIOUS": previous,
        "GITHUB_REPOSITORY": "owner/repo", "PR_NUMBER": "7", "GH_TOKEN": "t",
    }  # fmt: skip
    result = subprocess.run(
        [str(ROOT / "scripts" / "pr-comment"), str(body)], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listing, write = calls.read_text().splitlines()
    assert listing.startswith("api repos/owner/repo/issues/7/comments --paginate --jq")
    assert 'startswith(\"<!-- marker -->\")' in listing
    if previous:
        assert write == f"api -X PATCH repos/owner/repo/issues/comments/{previous} -F body=@{body}"
    else:
        assert write == f"api -X POST repos/owner/repo/issues/7/comments -F body=@{body}"
