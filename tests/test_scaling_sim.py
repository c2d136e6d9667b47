"""The scaling simulator (``bench/scaling_sim.py``) reads the rendered policies and, for a burst,
takes the scale-out decision within a minute where target tracking alone takes about four, with
the metrics' real path to the alarm: PutMetricData, bounded by the publisher's own timeouts. On
the log path (EMF) the minute would rest on an extraction delay AWS does not document."""

from __future__ import annotations

import dataclasses
import math
from functools import cache

import pytest

from bench.scaling_sim import (
    EMF_PATH,
    PUT_METRIC_DATA_PATH,
    PUT_METRIC_DATA_VISIBLE_ASSUMED,
    SCENARIOS,
    Model,
    emf_extraction_budget,
    emf_path,
    first_burst_decision,
    path_delay,
    rendered_policies,
    simulate,
)
from celery_ecs.cloudwatch import CLOUDWATCH_TIMEOUT_SECONDS
from infra.scaling import (
    HIGH_RESOLUTION_PERIOD,
    SCALE_OUT_DATAPOINTS,
    SCALE_OUT_STEPS,
    SCALE_OUT_THRESHOLD,
    STEP_SCALE_OUT_COOLDOWN,
)

#: The program's scaling policies, rendered once per test process for each setting (a frozen
#: dataclass: the tests share it as is).
policies_once = cache(rendered_policies)


def test_the_simulator_reads_the_policies_the_program_renders() -> None:
    policies = policies_once()
    assert policies.target == 60  # maxQueueSeconds 60 x concurrency 2 / 1 s tasks / 2
    assert policies.step_threshold == SCALE_OUT_THRESHOLD * policies.target
    assert policies.step_period == HIGH_RESOLUTION_PERIOD
    assert policies.step_datapoints == SCALE_OUT_DATAPOINTS
    assert policies.step_cooldown == STEP_SCALE_OUT_COOLDOWN
    assert [s.percent for s in policies.steps] == [p for _, p in SCALE_OUT_STEPS]
    assert (policies.min_count, policies.max_count, policies.concurrency) == (1, 50, 2)


def test_a_burst_is_acted_on_within_a_minute() -> None:
    burst = SCENARIOS[0]
    policies, model = policies_once(), Model()
    ours = simulate(burst, policies, model, ours=True)
    alone = simulate(burst, policies, model, ours=False)
    assert ours.first_scale_out is not None and ours.first_scale_out <= 60
    assert alone.first_scale_out is not None and alone.first_scale_out >= 180
    assert ours.p95_wait < alone.p95_wait
    # Not bought with idle tasks: the burst costs no more task-minutes than the slow way.
    assert ours.task_minutes <= alone.task_minutes


def test_the_metrics_path_is_bounded_by_the_publishers_timeouts() -> None:
    """The model's delay is PutMetricData's: the call at its timeouts (a slower round is
    dropped), then the one undocumented stage, stated as an assumption."""
    model = Model()
    assert model.metric_path == PUT_METRIC_DATA_PATH
    call, visible = PUT_METRIC_DATA_PATH
    assert call.documented and call.seconds == math.ceil(CLOUDWATCH_TIMEOUT_SECONDS)
    assert not visible.documented and visible.seconds == PUT_METRIC_DATA_VISIBLE_ASSUMED
    assert model.delivery == path_delay(PUT_METRIC_DATA_PATH) == call.seconds + visible.seconds
    # Publisher timeouts slow enough to lose the minute would fail the burst test above.
    slow_call = dataclasses.replace(call, seconds=60)
    slow = Model(metric_path=(slow_call, visible))
    decision = first_burst_decision(policies_once(), slow)
    assert decision is not None and decision > 60


def test_on_the_log_path_the_minute_rests_on_an_undocumented_extraction() -> None:
    policies = policies_once()
    (extraction,) = [stage for stage in EMF_PATH if "extracts" in stage.what]
    assert not extraction.documented
    budget = emf_extraction_budget(policies)
    assert 0 <= budget < 60
    within = first_burst_decision(policies, Model(metric_path=emf_path(budget)))
    beyond = first_burst_decision(policies, Model(metric_path=emf_path(budget + 1)))
    assert within is not None and within <= 60
    assert beyond is not None and beyond > 60


def test_target_tracking_divides_by_the_desired_count_only_with_container_insights() -> None:
    """Without Container Insights, target tracking divides by the running workers: the same
    waits, a few more task-minutes while tasks start (docs/explanation/autoscaling.md)."""
    plain, insights = policies_once(), policies_once(container_insights=True)
    assert (plain.per_desired, insights.per_desired) == (False, True)
    ramp, model = SCENARIOS[1], Model()
    over_workers = simulate(ramp, plain, model, ours=True)
    over_desired = simulate(ramp, insights, model, ours=True)
    assert over_workers.first_scale_out == over_desired.first_scale_out
    assert over_workers.p95_wait == pytest.approx(over_desired.p95_wait, rel=0.05)
    assert over_desired.task_minutes < over_workers.task_minutes <= 1.05 * over_desired.task_minutes
