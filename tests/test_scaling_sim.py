"""The scaling simulator (``bench/scaling_sim.py``) reads the rendered policies and, for a burst,
takes the scale-out decision within a minute where target tracking alone takes about four."""

from __future__ import annotations

from bench.scaling_sim import SCENARIOS, Model, rendered_policies, simulate
from infra.scaling import (
    HIGH_RESOLUTION_PERIOD,
    SCALE_OUT_DATAPOINTS,
    SCALE_OUT_STEPS,
    SCALE_OUT_THRESHOLD,
    STEP_SCALE_OUT_COOLDOWN,
)


def test_the_simulator_reads_the_policies_the_program_renders() -> None:
    policies = rendered_policies()
    assert policies.target == 60  # maxQueueSeconds 60 x concurrency 2 / 1 s tasks / 2
    assert policies.step_threshold == SCALE_OUT_THRESHOLD * policies.target
    assert policies.step_period == HIGH_RESOLUTION_PERIOD
    assert policies.step_datapoints == SCALE_OUT_DATAPOINTS
    assert policies.step_cooldown == STEP_SCALE_OUT_COOLDOWN
    assert [s.percent for s in policies.steps] == [p for _, p in SCALE_OUT_STEPS]
    assert (policies.min_count, policies.max_count, policies.concurrency) == (1, 50, 2)


def test_a_burst_is_acted_on_within_a_minute() -> None:
    burst = SCENARIOS[0]
    policies, model = rendered_policies(), Model()
    ours = simulate(burst, policies, model, ours=True)
    alone = simulate(burst, policies, model, ours=False)
    assert ours.first_scale_out is not None and ours.first_scale_out <= 60
    assert alone.first_scale_out is not None and alone.first_scale_out >= 180
    assert ours.p95_wait < alone.p95_wait
    # Not bought with idle tasks: the burst costs no more task-minutes than the slow way.
    assert ours.task_minutes <= alone.task_minutes
