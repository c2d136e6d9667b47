"""Write the documentation's generated parts from the code (``make docs``).

    python -m devtools.docs             write every generated block
    python -m devtools.docs --check     exit 1, naming the stale ones, instead of writing

The blocks (``devtools.docblocks``): the dev stack's diagram and cost table
(``devtools.plan``), the upstream suites' exclusion table (``devtools.upstream.suites``), the
key tables of the stack configuration (``infra.config_tables.SECTIONS``, which the loaders
read by) and the stack outputs' table, written here from the program's exports: the program
runs under mocks for each stack config of ``OUTPUT_STACKS``, so the table says which outputs
each config exports as the program does, and a new output without a meaning in
``OUTPUT_MEANINGS`` fails the generator (and ``tests/test_docs.py``), never the reader.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devtools.docblocks import DOCS, GeneratedBlock
from devtools.plan import broker_ceiling, cost, report
from devtools.render import DEFAULT_REGION, run_program, stack_file_config
from devtools.upstream import suites
from infra import config_keys, config_tables

OUTPUTS_BLOCK = GeneratedBlock(
    page=DOCS / "reference" / "outputs.md",
    begin="<!-- outputs: devtools/docs.py, from the program's exports -->",
    end="<!-- end of outputs -->",
)

CONFIGURATION_BLOCK = GeneratedBlock(
    page=DOCS / "reference" / "configuration.md",
    begin="<!-- configuration: devtools/docs.py, from infra/config_tables.py -->",
    end="<!-- end of configuration -->",
)

#: The stacks whose exports the table shows, by column heading: (stack name, config).
OUTPUT_STACKS: dict[str, tuple[str, dict[str, object]]] = {
    "only `aws:region`": ("minimal", {}),
    "`Pulumi.dev.yaml`": ("dev", stack_file_config("dev")),
    "`scheduler: eventbridge`": ("eventbridge", {"scheduler": "eventbridge"}),
    "`Pulumi.prod.yaml`": ("prod", stack_file_config("prod")),
}

#: What each output holds, and when the program exports it.
OUTPUT_MEANINGS: dict[str, str] = {
    "webUrl": "`http(s)://<ALB DNS>`",
    "webApiKeysSecretArn": "the ARN of the secret holding the web's API keys, never a key",
    "brokerEndpoint": "`host:6379`, never the token",
    "clusterName": "the ECS cluster's name",
    "serviceNames": "`{web, worker-<pool>…, beat}`",
    "imageRepositoryUrl": "the ECR repository the image is pushed to",
    "scheduler": "`beat` or `eventbridge`",
    "dashboardUrl": "with `dashboard` (production's default): the stack's CloudWatch dashboard",
    "scheduleDeadLetterQueueUrl": "with `scheduler: eventbridge`: the dead-letter queue of the "
    "schedule slots that could not start",
    "alertTopicArn": "with `alerts.email` or `alerts.topicArn`: the topic the alarms notify",
    "brokerFinalSnapshotName": "in production: the snapshot a destroy leaves "
    "([Destroy](../how-to/deploy.md#destroy))",
}


def outputs_table() -> str:
    """The outputs table: one row per output, a column per stack config of ``OUTPUT_STACKS``."""
    runs = {
        column: run_program(config, stack=stack, region=DEFAULT_REGION)
        for column, (stack, config) in OUTPUT_STACKS.items()
    }
    exported = {name for run in runs.values() for name in run.outputs}
    secret = sorted(name for run in runs.values() for name in run.secret_outputs)
    if secret:
        raise ValueError(f"outputs marked secret, which the docs promise none is: {secret}")
    unexplained = sorted(exported - OUTPUT_MEANINGS.keys())
    if unexplained:
        raise ValueError(f"outputs without a meaning in OUTPUT_MEANINGS: {unexplained}")
    stale = sorted(OUTPUT_MEANINGS.keys() - exported)
    if stale:
        raise ValueError(f"OUTPUT_MEANINGS names outputs no config exports: {stale}")
    rows = [
        "| Output | What it is | " + " | ".join(runs) + " |",
        "| --- | --- | " + " | ".join(":---:" for _ in runs) + " |",
    ]
    for name, meaning in OUTPUT_MEANINGS.items():
        marks = " | ".join("yes" if name in run.outputs else "" for run in runs.values())
        rows.append(f"| `{name}` | {meaning} | {marks} |")
    return "\n".join(rows) + "\n"


def dev_plan() -> report.OfflinePlan:
    """The offline plan of ``Pulumi.dev.yaml``, which the cost page shows."""
    return report.make_plan("dev", stack_file_config("dev"), DEFAULT_REGION)


def generated(dev: report.OfflinePlan) -> dict[GeneratedBlock, str]:
    """Every generated block and what it holds now (renders the program: a few seconds)."""
    return {
        report.COST_BLOCK: cost.markdown(dev.estimate),
        suites.EXCLUSIONS_BLOCK: suites.exclusion_table(),
        OUTPUTS_BLOCK: outputs_table(),
        CONFIGURATION_BLOCK: config_keys.reference_tables(config_tables.SECTIONS),
        broker_ceiling.CEILING_BLOCK: broker_ceiling.markdown_table(broker_ceiling.load_figures()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say which blocks are stale")
    args = parser.parse_args(argv)
    dev = dev_plan()
    blocks = generated(dev)
    if args.check:
        stale = [block for block, text in blocks.items() if block.content() != text]
        for block in stale:
            print(f"stale: {block.page.relative_to(DOCS.parent)} ({block.begin})", file=sys.stderr)
        return 1 if stale else 0
    report.write_docs(dev)  # the diagram, and the cost block again
    for block, text in blocks.items():
        block.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
