"""Time the offline plan of the dev stack: render, validate, draw, price.

    python -m bench.plan_timing        (``make bench-plan``)

``make plan`` starts a fresh interpreter every time, so the figure that matters is the wall
time of ``python -m devtools.plan --stack dev`` from start to exit: it is measured five times,
each in a new process, and the median printed. Then one in-process run is broken down by phase
(its imports already paid) to show where the time goes.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools import render
from devtools.plan import aws_rules, cost
from devtools.plan import diagram as drawing
from infra.config import load

ROUNDS = 5


def wall_times(diagram: Path) -> list[float]:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "devtools.plan", "--stack", "dev", "--diagram", str(diagram)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
    return times


def phases(diagram: Path) -> dict[str, float]:
    stack = render.read_stack_file("dev")
    timings = {}
    started = time.perf_counter()
    run = render.run_program(stack.config, stack="dev", region=stack.region or "us-east-1")
    timings["render under mocks"] = time.perf_counter() - started
    started = time.perf_counter()
    aws_rules.check_against_aws(run)
    timings["validate (botocore, parliament)"] = time.perf_counter() - started
    started = time.perf_counter()
    config = load(stack.config)
    cost.estimate(run, config, stack.region or "us-east-1")
    timings["cost"] = time.perf_counter() - started
    started = time.perf_counter()
    drawing.write_png(run, config, "dev", diagram)
    timings["diagram (Graphviz)"] = time.perf_counter() - started
    return timings


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        diagram = Path(directory) / "dev.png"
        times = wall_times(diagram)
        breakdown = phases(diagram)
    print(
        f"Offline plan of Pulumi.dev.yaml ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()})"
    )
    print(
        f"  make plan, wall time from start to exit: median {statistics.median(times):.1f} s "
        f"(rounds: {', '.join(f'{t:.1f}' for t in times)})"
    )
    print("  one in-process run, by phase (imports loaded, first call of each):")
    for phase, seconds in breakdown.items():
        print(f"    {phase:34} {seconds:5.2f} s")


if __name__ == "__main__":
    main()
