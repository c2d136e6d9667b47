"""The offline plan: what a stack config deploys, whether AWS will accept it, what it costs.

    python -m devtools.plan --stack dev        (make plan; make plan STACK=prod)

Renders the Pulumi program under mocks for ``Pulumi.<stack>.yaml`` (no credentials, no Docker,
no network), validates every API request and IAM policy against AWS's own rules
(``devtools.plan.aws_rules``), draws the stack (``devtools.plan.diagram``), estimates its monthly
cost (``devtools.plan.cost``) and prints every resource grouped by component with the settings a
reviewer cares about. The same config gives byte-identical text: names come from the program,
ids and ARNs from deterministic mocks, everything is sorted, and the only date is the price
table's. Exit status: 0, or 1 when the config is invalid or a rule is broken (2: no such stack).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.docblocks import DOCS, GeneratedBlock
from devtools.plan import broker_ceiling, cost, diagram
from devtools.plan.aws_rules import Report, check_against_aws, versions
from devtools.plan.summaries import SUMMARIES, default_summary, name_of, ports_text
from devtools.render import (
    DEFAULT_REGION,
    ROOT,
    ProgramRun,
    Registration,
    read_stack_file,
    read_stack_path,
    run_program,
    stack_names,
)
from infra.config import ConfigError, StackConfig, load, placeholders
from policy.invariants import aws_types

#: Where ``make plan`` writes the diagram of a stack (not committed).
DIAGRAM_DIRECTORY = ROOT / ".plan"
#: The diagram the README and the docs show, and the docs' cost table, for ``Pulumi.dev.yaml``.
DOCS_DIAGRAM = DOCS / "plan-dev.png"
COST_BLOCK = GeneratedBlock(
    page=DOCS / "reference" / "cost.md",
    begin="<!-- plan: cost of Pulumi.dev.yaml -->",
    end="<!-- /plan -->",
)
#: Components in the order a reader meets them; others follow, by name.
_COMPONENT_ORDER = (
    "Network", "Broker", "Image", "Cluster", "Web", "Worker", "Beat", "Schedule", "ServiceScaling",
    "Alarms", "Notifications", "Dashboard",
)  # fmt: skip


@dataclass(frozen=True)
class OfflinePlan:
    """A stack config rendered under mocks, checked against AWS's rules and priced."""

    stack: str
    region: str
    config: StackConfig
    run: ProgramRun
    report: Report
    estimate: cost.Estimate


def make_plan(stack: str, config: dict[str, object], region: str) -> OfflinePlan:
    """Render, validate and price ``config``; an invalid config raises the program's
    ``InvalidStackConfig`` (a ``ConfigError``) before any resource is registered."""
    run = run_program(config, stack=stack, region=region, project_root=ROOT)
    stack_config = load(config)
    # A production stack is priced against the same config without production's defaults
    # too, to say what production adds and why.
    without_production = None
    if stack_config.production:
        base = {**config, "production": False}
        without_production = (
            run_program(base, stack=stack, region=region, project_root=ROOT),
            load(base),
        )
    return OfflinePlan(
        stack=stack,
        region=region,
        config=stack_config,
        run=run,
        report=check_against_aws(run),
        estimate=cost.estimate(run, stack_config, region, without_production),
    )


# --- text ---------------------------------------------------------------------------------


def format_plan(plan: OfflinePlan, diagram_path: Path | None) -> str:
    lines = [
        f"Offline plan of stack {plan.stack}, region {plan.region}",
        "Rendered under Pulumi mocks: no credentials, no Docker, no network. Names are the",
        "program's; ids, ARNs and the 'abc1234' suffixes of generated names are placeholders.",
        "",
        *_section("Summary", _summary(plan)),
        *_section("Validation", _validation(plan.report) + _placeholders(plan.config)),
        *_section("Resources, by component", _resources(plan)),
        *_section("Broker ceiling", broker_ceiling.plan_lines(
            plan.config.broker.node_type, broker_ceiling.load_figures())),
        *_section("Monthly cost", cost.format_estimate(plan.estimate)),
    ]
    if diagram_path is not None:
        lines += _section("Diagram", [_relative(diagram_path)])
    return "\n".join(lines).rstrip() + "\n"


def _section(title: str, body: Sequence[str]) -> list[str]:
    return [title, "=" * len(title), *body, ""]


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _summary(plan: OfflinePlan) -> list[str]:
    run, config = plan.run, plan.config
    references = run.by_reference()
    services = ", ".join(
        f"{tasks.name} {cost.count_text(tasks.low, tasks.high)}"
        for tasks in cost.task_sets(run, references, config.schedule)
        if not tasks.name.startswith("enqueue (")
    )
    ingress = [
        rule
        for rule in run.of_type(aws_types.VPC_SECURITY_GROUP_INGRESS_RULE)
        if rule.inputs.get("cidrIpv4") == "0.0.0.0/0"
    ]
    public = [
        f"{name_of(references, r.inputs['securityGroupId'])} accepts {ports_text(r.inputs)} from "
        "0.0.0.0/0"
        for r in ingress
    ]
    if any(
        s.inputs["networkConfiguration"].get("assignPublicIp")
        for s in run.of_type(aws_types.ECS_SERVICE)
    ):
        public.append("tasks get public IPs (security groups admit only the load balancer)")
    https = any(
        listener.inputs["protocol"] == "HTTPS" for listener in run.of_type(aws_types.LB_LISTENER)
    )
    broker = run.one(aws_types.ELASTICACHE_REPLICATION_GROUP).inputs
    encryption = [
        f"broker: TLS {broker.get('transitEncryptionMode', 'off')}, "
        f"at rest {'yes' if broker.get('atRestEncryptionEnabled') else 'no'}, AUTH token; "
        "its URL only in Secrets Manager",
        "load balancer: HTTPS, HTTP redirected" if https else "load balancer: plain HTTP only",
    ]
    rules = run.of_type(aws_types.CLOUDWATCH_EVENT_RULE)
    schedule = (
        "beat, one task (stopped before its replacement starts)"
        if config.scheduler == "beat"
        else f"EventBridge, {len(rules)} rules starting one-off tasks"
    )
    alarms = run.of_type(aws_types.CLOUDWATCH_METRIC_ALARM)
    # The operator alarms notify on OK too; the scale-out alarms only start a scaling policy.
    notified = sorted(
        {name_of(references, a) for x in alarms for a in x.inputs.get("okActions", [])}
    )
    lines = [
        f"Tasks:       {services} ({config.cpu_architecture})",
        *_labelled("Public:", public),
        *_labelled("Encryption:", encryption),
        f"Schedule:    {schedule}",
        *_labelled(
            "Alarms:",
            [
                f"{len(alarms)} ({sum(map(cost.high_resolution, alarms))} high-resolution, for "
                "scale-out)",
                "notifying "
                + (", ".join(notified) or "nobody (alerts.email and alerts.topicArn unset)"),
            ],
        ),
    ]
    if plan.estimate.prices is not None:
        low, high = plan.estimate.totals
        lines.append(
            f"Cost:        {cost.money(low)} a month at min count (floor "
            f"{cost.money(plan.estimate.floor)}), {cost.money(high)} at max count"
        )
    return lines


def _labelled(label: str, items: Sequence[str]) -> list[str]:
    return [f"{label if index == 0 else '':12} {item}" for index, item in enumerate(items)]


def _validation(report: Report) -> list[str]:
    rules = ", ".join(f"{name} {version}" for name, version in sorted(versions().items()))
    counts = (
        f"{report.requests} API requests and {report.policies} IAM, key and resource policies "
        f"({rules})"
    )
    if report.ok:
        return [cost.wrap(f"OK: {counts} follow AWS's rules.", "", "")]
    return [
        f"FAILED: {len(report.findings)} problem(s) in {counts}:",
        *(cost.wrap(str(finding), "  - ", "    ") for finding in report.findings),
    ]


def _placeholders(config: StackConfig) -> list[str]:
    """Documentation examples left in the config: fine offline, refused by a real deploy."""
    found = placeholders(config)
    if not found:
        return []
    return [
        "",
        f"WARNING: {len(found)} placeholder(s) to replace; pulumi preview and up refuse them "
        "in a real account:",
        *(cost.wrap(message, "  - ", "    ") for message in found),
    ]


def _resources(plan: OfflinePlan) -> list[str]:
    run = plan.run
    references = run.by_reference()
    components = {r.urn: r for r in run.resources if not r.custom}
    groups: dict[str, list[Registration]] = {}
    for resource in run.resources:
        if resource.custom:
            groups.setdefault(_component_of(resource, components), []).append(resource)
    lines: list[str] = []
    for urn in sorted(groups, key=lambda urn: _component_key(components.get(urn))):
        component = components.get(urn)
        title = f"{component.name} ({component.type.rsplit(':', 1)[1]})" if component else "(stack)"
        lines.append(title)
        lines += [
            cost.wrap(line, "  ", "    ") for line in _component_notes(component, plan.config)
        ]
        for resource in sorted(groups[urn], key=lambda r: (r.type, r.name)):
            lines.append(f"  {resource.type.rsplit(':', 1)[1]} {resource.name}")
            summarize = SUMMARIES.get(resource.type, default_summary)
            lines += [
                cost.wrap(item, "      ", "        ") for item in summarize(resource, references)
            ]
        lines.append("")
    return lines


def _component_of(resource: Registration, components: dict[str, Registration]) -> str:
    """The URN of the top-level component a resource belongs to ("" for the stack itself): a
    component inside another (the web's ``FargateService``) is part of that one."""
    urn = resource.parent
    while urn in components and components[urn].parent in components:
        urn = components[urn].parent
    return urn if urn in components else ""


def _component_key(component: Registration | None) -> tuple[int, str]:
    if component is None:
        return (-1, "")
    kind = component.type.rsplit(":", 1)[1]
    rank = _COMPONENT_ORDER.index(kind) if kind in _COMPONENT_ORDER else len(_COMPONENT_ORDER)
    return (rank, component.name)


def _component_notes(component: Registration | None, config: StackConfig) -> list[str]:
    """What the budget and the config decide for a component (timeouts, pools)."""
    if component is None:
        return []
    kind = component.type.rsplit(":", 1)[1]
    if kind == "Worker":
        (pool,) = [pool for pool in config.workers if f"worker-{pool.name}" == component.name]
        budget = pool.budget
        spot = "Fargate Spot above the first task" if pool.fargate_spot else "Fargate only"
        return [
            f"pool {pool.name}: queues {', '.join(pool.queues)}; concurrency {pool.concurrency}; "
            f"{pool.min_count}-{pool.max_count} tasks; {spot}",
            f"budget: taskTimeout {pool.task_timeout} s -> soft {budget.soft_time_limit} s / hard "
            f"{budget.time_limit} s, {budget.shutdown} shutdown, stopTimeout "
            f"{budget.stop_timeout} s, soft shutdown {budget.soft_shutdown_timeout} s, "
            f"visibility {budget.visibility_timeout} s, prefetch {budget.prefetch_multiplier} "
            f"per slot, scale-in protection {'yes' if budget.task_protection else 'no'}",
        ]
    if kind == "Web":
        web_budget = config.web.budget
        return [
            f"budget: requestTimeout {web_budget.request_timeout} s -> ALB idle timeout "
            f"{web_budget.idle_timeout} s, deregistration delay "
            f"{web_budget.deregistration_delay} s, stopTimeout {web_budget.stop_timeout} s"
        ]
    return []


# --- the command ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.plan", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--stack", default="dev",
        help="the stack: reads Pulumi.<stack>.yaml, or examples/<stack>/Pulumi.<stack>.yaml",
    )  # fmt: skip
    source.add_argument("--file", type=Path, help="a stack file anywhere (Pulumi.<stack>.yaml)")
    parser.add_argument(
        "--diagram", type=Path, help="where to write the diagram (default .plan/<stack>.png)"
    )
    parser.add_argument("--no-diagram", action="store_true", help="skip the diagram")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the docs' diagram and cost table (for Pulumi.dev.yaml)",
    )
    args = parser.parse_args(argv)
    try:
        stack_file = read_stack_path(args.file) if args.file else read_stack_file(args.stack)
    except FileNotFoundError as error:
        stacks = ", ".join(stack_names())
        missing = _relative(Path(str(error.filename)))
        print(f"no stack file {missing}; stacks here: {stacks}", file=sys.stderr)
        return 2
    stack = stack_file.stack
    region = stack_file.region or DEFAULT_REGION
    try:
        plan = make_plan(stack, stack_file.config, region)
    except ConfigError as error:
        # The program's own message: "invalid stack config: <key>: <problem>; allowed: ...".
        print(error, file=sys.stderr)
        return 1
    diagram_path = None
    if not args.no_diagram:
        diagram_path = args.diagram or DIAGRAM_DIRECTORY / f"{stack}.png"
        diagram.write_png(plan.run, plan.config, _title(plan), diagram_path)
    if args.write_docs:
        write_docs(plan)
    sys.stdout.write(format_plan(plan, diagram_path))
    return 0 if plan.report.ok else 1


def _title(plan: OfflinePlan) -> str:
    return f"celery-ecs: stack {plan.stack} ({plan.region})"


def write_docs(plan: OfflinePlan) -> None:
    """The docs' diagram (docs/plan-dev.png) and cost table, from this plan."""
    diagram.write_png(plan.run, plan.config, _title(plan), DOCS_DIAGRAM)
    COST_BLOCK.write(cost.markdown(plan.estimate))


if __name__ == "__main__":
    raise SystemExit(main())
