"""The offline plan (devtools/plan/report.py, `make plan`): stable text, every resource, exit status
for a broken rule or config, the docs' diagram and cost table current, the PR comment."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.plan import broker_ceiling, broker_nodes, cost, diagram, report
from devtools.plan.comment import LIMIT, MARKER, comment
from devtools.render import MOCK_AUTH_TOKEN, read_stack_file
from infra.containers import health_check
from tests.support import ROOT, shared_stack_runs


@pytest.fixture(scope="module")
def dev() -> report.OfflinePlan:
    stack = read_stack_file("dev")
    assert stack.region is not None
    with shared_stack_runs():
        return report.make_plan("dev", stack.config, stack.region)


def test_the_same_config_gives_byte_identical_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once in a new interpreter (as `make plan` runs it: another hash seed), once here (from
    this process's rendering of the dev stack, which other tests share)."""
    png = tmp_path / "dev.png"
    arguments = ["--stack", "dev", "--diagram", str(png)]
    process = subprocess.run(
        [sys.executable, "-m", "devtools.plan", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    first_digest = diagram.embedded_digest(png)
    with shared_stack_runs():
        assert report.main(arguments) == 0
    assert capsys.readouterr().out == process.stdout
    assert diagram.embedded_digest(png) == first_digest is not None
    for section in ("Summary", "Validation", "Resources, by component", "Monthly cost", "Diagram"):
        assert f"\n{section}\n{'=' * len(section)}\n" in process.stdout
    assert "\nOK: " in process.stdout


def test_every_resource_is_listed_under_its_component(dev: report.OfflinePlan) -> None:
    text = report.format_plan(dev, None)
    components = {r.urn: r for r in dev.run.resources if not r.custom}
    for resource in dev.run.resources:
        if not resource.custom:
            continue
        component = components[resource.parent]
        while component.parent in components:  # a component inside another: listed as that
            component = components[component.parent]
        heading = f"\n{component.name} ({component.type.rsplit(':', 1)[1]})\n"
        section = text.split(heading, 1)[1].split("\n\n", 1)[0]
        assert f"  {resource.type.rsplit(':', 1)[1]} {resource.name}\n" in section, resource.name


def test_the_plan_shows_what_a_reviewer_checks(dev: report.OfflinePlan) -> None:
    text = report.format_plan(dev, None)
    long_pool = "budget: taskTimeout 1800 s -> soft 1800 s / hard 1860 s, cold shutdown"
    text = text.replace("\n        ", " ")  # lines the plan wrapped
    for expected in (
        long_pool,
        "network-alb <- tcp 80 from 0.0.0.0/0 PUBLIC",
        "internet-facing PUBLIC application load balancer",
        "TLS required, encrypted at rest on",
        # Target tracking divides by the desired count (tasks still starting count at once).
        "target tracking: 40 waiting messages per worker (publishing) (queues default)",
        "step scaling on its alarm (PercentChangeInCapacity): above the threshold by +25 % from 0",
        "celery-ecs-dev-scale-out-default: Waiting messages per worker (10 s) >= 50 in 2 of 2 "
        "periods of 10 s",
        "on ALARM worker-default-scaling-burst",
        "celery-ecs-dev-queue-age-default: Oldest message age > 300 in 2 of 2 periods of 60 s",
        "celery-ecs-dev: 13 widgets (2 of alarm states, 11 graphs)",
        "1-4 tasks of worker-default-service",
        "allow secretsmanager:GetSecretValue on broker",
        "Tasks:       beat 1, web 1-2, worker-default 1-4, worker-long 1-2 (ARM64)",
        "Alarms:      12 (2 high-resolution, for scale-out)",
        "notifying nobody (alerts.email and alerts.topicArn unset)",
    ):
        assert expected in text, expected
    # Secrets never reach the plan, in any form.
    assert MOCK_AUTH_TOKEN not in text and "rediss://" not in text
    assert "MockToken" not in text


def test_the_alert_topic_its_key_and_their_policies_are_shown() -> None:
    config = {**read_stack_file("dev").config, "alerts": {"email": "ops@example.com"}}
    emailed = report.make_plan("dev", config, "us-east-1")
    assert emailed.report.ok, emailed.report.findings
    text = report.format_plan(emailed, None).replace("\n        ", " ")
    for expected in (
        "notifying notifications-topic",
        "\nnotifications (Notifications)\n",
        "rotation on; deleted 7 days after destroy",
        "allow cloudwatch.amazonaws.com: kms:Decrypt, kms:GenerateDataKey on the key when",
        "encrypted with notifications-key",
        "deny anyone: sns:Publish on notifications-topic when",
        "email to ops@example.com from notifications-topic; pending until the address confirms",
        "on ALARM notifications-topic, on OK notifications-topic",
        "KMS key: 1 (alert topic encryption)",
    ):
        assert expected in text, expected
    source = diagram.graph_source(emailed.run, emailed.config, "dev")
    assert "SNS topic\n(KMS-encrypted)" in source and "email subscription" in source


def test_a_broken_rule_fails_the_plan_naming_resource_field_and_rule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A code change AWS would refuse: a worker health check every 400 s (5-300 allowed)."""

    def every_400_seconds(role: str) -> dict[str, object]:
        return {**health_check(role), "interval": 400}

    monkeypatch.setattr("infra.worker_service.health_check", every_400_seconds)
    # A fresh render, not the shared one (shared_stack_runs): the program has changed.
    assert report.main(["--stack", "dev", "--no-diagram"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 2 problem(s)" in out
    assert (
        "worker-default-task (aws:ecs/taskDefinition:TaskDefinition): RegisterTaskDefinition."
        "containerDefinitions[0].healthCheck.interval (from containerDefinitions): 400 is out of "
        'range 5..300 [documented: "You may specify between 5 and 300 seconds."]'
    ) in out.replace("\n    ", " ")


def test_an_invalid_config_fails_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.broken.yaml"
    stack.write_text("config:\n  aws:region: us-east-1\n  celery-ecs:scheduler: cron\n")
    assert report.main(["--file", str(stack), "--no-diagram"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "invalid stack config: scheduler: unknown value 'cron'; allowed: beat, eventbridge\n"
    )


def test_a_missing_stack_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["--stack", "nonexistent"]) == 2
    assert "no stack file Pulumi.nonexistent.yaml; stacks here: dev" in capsys.readouterr().err


def test_a_region_without_prices_is_planned_without_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.ireland.yaml"
    stack.write_text("config:\n  aws:region: eu-west-1\n")
    assert report.main(["--file", str(stack), "--no-diagram"]) == 0
    out = capsys.readouterr().out
    assert "Offline plan of stack ireland, region eu-west-1" in out
    assert "No price table for eu-west-1" in out
    assert "us-east-1a" not in out and "eu-west-1a" in out


def test_the_plan_prints_the_broker_ceiling_of_the_stack_node_type(dev: report.OfflinePlan) -> None:
    """The section's figures are the model's (devtools/plan/broker_ceiling.py) for the stack's node
    type, from the bench's figures file: change the node type and they change."""
    figures = broker_ceiling.load_figures()
    text = report.format_plan(dev, None).replace("\n    ", " ")
    section = text.split("\nBroker ceiling\n==============\n", 1)[1].split("\n\n", 1)[0]
    node = broker_nodes.node_type(dev.config.broker.node_type)
    assert node is not None and dev.config.broker.node_type == "cache.t4g.micro"
    without = broker_ceiling.ceiling(node, figures.no_result)
    with_results = broker_ceiling.ceiling(node, figures.results, result_bytes=figures.result_bytes)
    assert section.startswith("cache.t4g.micro (burstable, 10 % of each of 2 vCPUs sustained;")
    assert (f"no result (as beat sends): about {without.rate:,.0f} tasks/s sustained, CPU-bound"
            in section)  # fmt: skip
    assert f"redis-server {figures.no_result.cpu_us:.0f} us" in section
    assert (f"results stored (as the web sends): about {with_results.rate:,.1f} tasks/s "
            "sustained, memory-bound") in section  # fmt: skip
    assert (f"backlog at maxmemory: {broker_ceiling.backlog(node, figures):,} queued messages of "
            f"{figures.message_bytes} bytes") in section  # fmt: skip
    larger = report.format_plan(replace(dev, config=replace(dev.config, broker=replace(
        dev.config.broker, node_type="cache.m7g.large"))), None)  # fmt: skip
    assert "cache.m7g.large (2 vCPUs;" in larger


def test_the_docs_show_the_current_dev_plan(dev: report.OfflinePlan) -> None:
    """`make plan-docs` (or `make docs`) writes both; they must be what Pulumi.dev.yaml renders
    now. The cost page shows the table, the README and the cost page the diagram."""
    assert report.COST_BLOCK.content() == cost.markdown(dev.estimate), (
        "docs/reference/cost.md's cost table is out of date: run make docs"
    )
    source = diagram.graph_source(dev.run, dev.config, report._title(dev))
    assert diagram.embedded_digest(report.DOCS_DIAGRAM) == diagram.digest(source), (
        "docs/plan-dev.png is out of date: run make plan-docs"
    )
    assert "![Diagram of the dev stack](docs/plan-dev.png)" in (ROOT / "README.md").read_text()
    assert "![Diagram of the dev stack](../plan-dev.png)" in report.COST_BLOCK.page.read_text()


def test_the_diagram_is_drawn_from_the_rendered_stack(dev: report.OfflinePlan) -> None:
    source = diagram.graph_source(dev.run, dev.config, "dev")
    assert source == diagram.graph_source(dev.run, dev.config, "dev")
    for label in (
        "worker-long\n1-2 tasks",
        "taskTimeout 1800 s, cold stop",
        "ElastiCache valkey 8.0",
        "VPC 10.0.0.0/16 (us-east-1a, us-east-1b)",
        "public subnets",
        "HTTP 80",
        "CloudWatch\nBacklog, BeatHeartbeat\nOldestMessageAge, Workers",
        "(+ per worker, 10 s alarms)",
        "10 alarms\nnotifying nobody",
        "dashboard\ncelery-ecs-dev",
    ):
        assert label in source, label
    # The dev stack leaves Container Insights off: the diagram does not claim it.
    assert "Container Insights" not in source
    assert "<diagrams>/aws/compute/fargate.png" in source
    assert str(ROOT) not in source


def test_the_pull_request_comment() -> None:
    head = "plan\nline two\n"
    assert comment("dev", head, None, 0).startswith(f"{MARKER}\n### Offline plan of stack `dev`")
    assert "No change against the base branch." in comment("dev", head, head, 0)
    changed = comment("dev", head, "plan\nline 2\n", 1)
    assert "```diff" in changed and "-line 2" in changed and "+line two" in changed
    assert "**Refused**" in changed
    assert "`make plan` exited with status 2" in comment("dev", "", None, 2, "no stack file")
    # With a preview (the preview job), it comes first; a preview that printed nothing says so.
    both = comment("dev", head, head, 0, preview="Previewing update (dev)\n+ 3 to create\n")
    assert both.startswith(f"{MARKER}\n### `pulumi preview` of stack `dev`")
    assert both.index("+ 3 to create") < both.index("### Offline plan of stack `dev`")
    assert "see the `preview` job's log" in comment("dev", head, head, 0, preview="")
    assert "pulumi preview" not in comment("dev", head, head, 0)
    huge = comment("dev", "x" * (2 * LIMIT), None, 0)
    assert len(huge) < 65_536 and "cut here" in huge


def test_the_prod_plan_names_its_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    """Pulumi.prod.yaml renders offline (exit 0) and the plan lists the documentation examples
    a real deploy would refuse, by key."""
    with shared_stack_runs():
        assert report.main(["--stack", "prod", "--no-diagram"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: 2 placeholder(s) to replace; pulumi preview and up refuse them" in out
    assert "  - web.certificateArn:\n    arn:aws:acm:us-east-1:123456789012:certificate/" in out
    assert "  - alerts.email: ops@example.com is at example.com" in out
