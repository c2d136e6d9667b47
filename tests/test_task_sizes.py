"""The default task sizes against what the services use (``bench.task_sizes``): the rule that
picks the smallest Fargate size, and a short run of the real processes that must fit the
defaults."""

from __future__ import annotations

import pytest

from bench.task_sizes import SERVICES, Measured, measure
from infra.budget import EXIT_MARGIN
from infra.config import load
from infra.config_tables import TASK_CPU_HEADROOM, TASK_MEMORY_HEADROOM

IDLE = Measured("idle", peak_memory_mib=50, peak_rss_sum_mib=60, mean_cpu=0.01, start_cpu=1,
                health_cpu=0.1, exit_cpu=0.2)  # fmt: skip


def with_(**changes: float) -> Measured:
    return Measured(**{**IDLE.__dict__, **changes})  # type: ignore[arg-type]


def test_a_small_service_gets_fargates_smallest_size() -> None:
    assert IDLE.smallest_fit() == (256, 512)


@pytest.mark.parametrize(
    ("measured", "fit"),
    [
        # Memory: the peak x the headroom must fit, or the task is killed.
        (with_(peak_memory_mib=512 / TASK_MEMORY_HEADROOM + 1), (256, 1024)),
        (with_(peak_memory_mib=2048 / TASK_MEMORY_HEADROOM + 1), (512, 3072)),
        # CPU: the load's mean x the headroom within the size's share of a vCPU.
        (with_(mean_cpu=0.25 / TASK_CPU_HEADROOM + 0.01), (512, 1024)),
        # The exit within the budget's margin at the size's share.
        (with_(exit_cpu=EXIT_MARGIN * 0.25 / TASK_CPU_HEADROOM + 0.1), (512, 1024)),
        # A health check within its 5 s timeout.
        (with_(health_cpu=5 * 0.25 / TASK_CPU_HEADROOM + 0.1), (512, 1024)),
        # The start within the 60 s start period.
        (with_(start_cpu=60 * 0.25 / TASK_CPU_HEADROOM + 1), (512, 1024)),
    ],
)
def test_each_figure_can_call_for_a_larger_size(measured: Measured, fit: tuple[int, int]) -> None:
    assert measured.smallest_fit() == fit


@pytest.mark.redis
def test_the_services_fit_their_default_sizes() -> None:
    """The rendered web, worker and beat, under a short load, need no more than the defaults
    (a growing import or a leak per task that outgrows them fails here)."""
    config = load({})
    (pool,) = config.workers
    defaults = {
        "web": (config.web.cpu, config.web.memory),
        "worker-default": (pool.cpu, pool.memory),
        "beat": (256, 512),  # infra.beat_service.BeatArgs' own default
    }
    measured, ok, sent = measure(seconds=5, rate=5)
    assert ok == sent > 0
    assert {item.name for item in measured} == set(SERVICES)
    for item in measured:
        cpu, memory = defaults[item.name]
        assert item.fits(cpu, memory), item
