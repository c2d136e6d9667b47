"""The pull request comment: ``pulumi preview``'s output when there is one, then the offline
plan, what changes against the base branch, then the whole plan.

    python -m devtools.plan.comment --stack dev --head head.txt [--base base.txt] --status N
        [--errors head.err] [--preview preview.txt]

The workflow (.github/workflows/pulumi.yml) runs ``make plan`` on the pull request and on its
base (job ``offline-plan``). The ``preview`` job adds its preview's output and posts the one
comment; a pull request from a fork gets no preview, so ``offline-plan`` posts the plan alone.
Either replaces the pull request's previous comment (found by ``MARKER``,
``scripts/pr-comment``). Plans are byte-stable, so the diff shows exactly what the change does.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path

MARKER = "<!-- celery-ecs offline plan -->"
#: GitHub refuses comments over 65,536 characters; the plan is cut to stay below.
LIMIT = 60_000


def comment(
    stack: str,
    head: str,
    base: str | None,
    status: int,
    errors: str = "",
    preview: str | None = None,
) -> str:
    """``preview``: the output of ``pulumi preview``; "" when it gave none (it failed before
    printing), None when there was no preview (a pull request from a fork)."""
    verdict = {
        0: "**Valid**: every API request and IAM policy follows AWS's rules.",
        1: "**Refused**: the config is invalid or breaks an AWS rule (see the plan).",
    }.get(status, f"**No plan**: `make plan` exited with status {status}.")
    parts = [MARKER]
    if preview is not None:
        parts += [f"### `pulumi preview` of stack `{stack}`", ""]
        if preview.strip():
            # Cut like the plan below: the two share GitHub's limit.
            shown = preview if len(preview) <= LIMIT // 2 else (
                preview[: LIMIT // 2] + "\n[... cut here: the whole preview is in the job's log]\n"
            )
            parts += ["<details><summary>Preview</summary>", "", "```text", shown.rstrip(),
                      "```", "</details>", ""]  # fmt: skip
        else:
            parts += ["The preview printed nothing: see the `preview` job's log.", ""]
    parts += [f"### Offline plan of stack `{stack}`", "", verdict, ""]
    if errors.strip():
        parts += ["```text", errors.strip(), "```", ""]
    if base is None:
        parts.append("The base branch has no plan to compare with.")
    elif base == head:
        parts.append("No change against the base branch.")
    else:
        diff = difflib.unified_diff(
            base.splitlines(), head.splitlines(), "base", "pull request", n=2, lineterm=""
        )
        parts += ["Changes against the base branch:", "", "```diff", *diff, "```"]
    body = "\n".join(parts)
    room = LIMIT - len(body)
    if len(head) > room:
        head = head[: max(0, room - 100)] + "\n[... cut here: the whole plan is an artifact]\n"
    details = f"<details><summary>The whole plan</summary>\n\n```text\n{head}```\n</details>"
    return f"{body}\n\n{details}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.plan.comment")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--head", type=Path, required=True, help="the pull request's plan")
    parser.add_argument("--base", type=Path, help="the base branch's plan, if it has one")
    parser.add_argument("--status", type=int, required=True, help="exit status of the plan")
    parser.add_argument("--errors", type=Path, help="what the plan wrote to stderr")
    parser.add_argument("--preview", type=Path, help="the output of pulumi preview")
    args = parser.parse_args(argv)
    base = args.base.read_text() if args.base and args.base.is_file() else None
    errors = args.errors.read_text() if args.errors and args.errors.is_file() else ""
    preview = None
    if args.preview is not None:
        preview = args.preview.read_text() if args.preview.is_file() else ""
    text = comment(args.stack, args.head.read_text(), base or None, args.status, errors, preview)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
