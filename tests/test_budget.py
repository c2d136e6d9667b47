"""The timeout budget's invariants, over the whole supported input range.

Every worker number reaches the app through environment variables, so each property also
round-trips the budget's environment through ``celery_ecs.settings.Settings.from_env``: the app must
accept it and read back exactly the budget's numbers.
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_ecs import settings as env_names
from celery_ecs.settings import Settings
from infra.budget import (
    EXIT_MARGIN,
    FARGATE_STOP_TIMEOUT_CAP,
    MAX_TASK_TIMEOUT,
    MIN_VISIBILITY_MARGIN,
    SHORT_TASK_TIMEOUT,
    SPOT_INTERRUPTION_NOTICE,
    BudgetError,
    WorkerBudget,
    longest_warm_task_timeout,
    web_budget,
    worker_budget,
)

task_timeouts = st.integers(1, MAX_TASK_TIMEOUT)
max_stop_timeouts = st.integers(EXIT_MARGIN + 1, FARGATE_STOP_TIMEOUT_CAP)
prefetch_multipliers = st.integers(1, 8)
max_countdowns = st.integers(0, 3600)
#: Held per slot above the prefetch multiplier.
held_above_prefetch = st.integers(0, 16)
request_timeouts = st.integers(1, FARGATE_STOP_TIMEOUT_CAP - EXIT_MARGIN)


@st.composite
def budgets(draw: st.DrawFn) -> WorkerBudget:
    prefetch = draw(prefetch_multipliers)
    return worker_budget(
        draw(task_timeouts),
        max_stop_timeout=draw(max_stop_timeouts),
        prefetch_multiplier=prefetch,
        max_countdown=draw(max_countdowns),
        held_per_slot=prefetch + draw(held_above_prefetch),
    )


def assert_invariants(budget: WorkerBudget) -> None:
    hard = budget.time_limit
    assert budget.soft_time_limit == budget.task_timeout, "the longest task runs unhindered"
    assert 1 <= hard - budget.soft_time_limit <= 60, "cleanup grace after the soft limit"
    assert budget.stop_timeout <= budget.max_stop_timeout <= FARGATE_STOP_TIMEOUT_CAP

    if hard + EXIT_MARGIN <= budget.max_stop_timeout:
        assert budget.shutdown == "warm"
        # SIGTERM waits for running tasks; the hard limit ends them before SIGKILL.
        assert budget.stop_timeout >= hard + EXIT_MARGIN
        assert budget.soft_shutdown_timeout == 0
        assert not budget.task_protection
        assert env_names.REMAP_SIGTERM not in budget.environment()
    else:
        assert budget.shutdown == "cold"
        # The grace for short tasks, then cancelling and restoring, all before SIGKILL.
        assert budget.soft_shutdown_timeout >= 1
        assert budget.soft_shutdown_timeout + EXIT_MARGIN <= budget.stop_timeout
        assert budget.task_protection
        assert budget.environment()[env_names.REMAP_SIGTERM] == "SIGQUIT"

    assert budget.held_per_slot >= budget.prefetch_multiplier
    longest_unacked = budget.held_per_slot * hard + budget.max_countdown
    assert budget.longest_unacked == longest_unacked
    assert budget.visibility_timeout - longest_unacked >= MIN_VISIBILITY_MARGIN


def assert_app_reads_the_same_numbers(budget: WorkerBudget) -> None:
    env = {env_names.BROKER_URL: "redis://localhost:6379/0", **budget.environment()}
    app_settings = Settings.from_env(env)  # raises ConfigError if the app would refuse it
    assert app_settings.soft_time_limit == budget.soft_time_limit
    assert app_settings.time_limit == budget.time_limit
    assert app_settings.visibility_timeout == budget.visibility_timeout
    assert app_settings.prefetch_multiplier == budget.prefetch_multiplier
    assert app_settings.max_countdown == budget.max_countdown
    assert app_settings.held_per_slot == budget.held_per_slot
    assert app_settings.soft_shutdown_timeout == budget.soft_shutdown_timeout
    assert app_settings.task_protection is budget.task_protection
    config = app_settings.celery_config()
    assert config["broker_transport_options"]["visibility_timeout"] == budget.visibility_timeout
    assert config["result_backend_transport_options"] == {
        "visibility_timeout": budget.visibility_timeout
    }
    assert config["worker_soft_shutdown_timeout"] == budget.soft_shutdown_timeout
    assert config["task_time_limit"] == budget.time_limit


@settings(max_examples=1000)
@given(budget=budgets())
def test_invariants_hold_over_the_whole_input_range(budget: WorkerBudget) -> None:
    assert_invariants(budget)


@settings(max_examples=1000)
@given(budget=budgets())
def test_the_app_accepts_the_environment_and_reads_back_the_same_numbers(
    budget: WorkerBudget,
) -> None:
    assert_app_reads_the_same_numbers(budget)


def test_every_combination_around_the_warm_cold_boundary() -> None:
    # The mode flips where task_timeout + grace + EXIT_MARGIN crosses max_stop_timeout, so
    # every task timeout up to the cap is checked against every allowed stop timeout.
    for max_stop in range(EXIT_MARGIN + 1, FARGATE_STOP_TIMEOUT_CAP + 1):
        modes = []
        for task_timeout in range(1, FARGATE_STOP_TIMEOUT_CAP + 1):
            budget = worker_budget(task_timeout, max_stop_timeout=max_stop)
            assert_invariants(budget)
            assert_app_reads_the_same_numbers(budget)
            modes.append(budget.shutdown)
        # One boundary: warm for short tasks, cold from some length on.
        assert modes == sorted(modes, key=["warm", "cold"].index), max_stop


@given(
    shorter=task_timeouts,
    longer=task_timeouts,
    max_stop=max_stop_timeouts,
    prefetch=prefetch_multipliers,
    countdown=max_countdowns,
    held_above=held_above_prefetch,
)
def test_a_longer_task_timeout_never_shortens_a_limit(
    shorter: int, longer: int, max_stop: int, prefetch: int, countdown: int, held_above: int
) -> None:
    shorter, longer = sorted((shorter, longer))
    small, large = (
        worker_budget(t, max_stop_timeout=max_stop, prefetch_multiplier=prefetch,
                      max_countdown=countdown, held_per_slot=prefetch + held_above)
        for t in (shorter, longer)
    )  # fmt: skip
    assert small.soft_time_limit <= large.soft_time_limit
    assert small.time_limit <= large.time_limit
    assert small.visibility_timeout <= large.visibility_timeout
    assert small.stop_timeout <= large.stop_timeout
    # Once tasks are too long for a warm shutdown, longer ones are too.
    assert not (small.shutdown == "cold" and large.shutdown == "warm")


@given(
    budget=budgets(),
    extra_prefetch=st.integers(0, 7),
    extra_countdown=st.integers(0, 3600),
    extra_held=st.integers(0, 16),
)
def test_more_prefetch_countdown_or_held_never_shortens_the_visibility_timeout(
    budget: WorkerBudget, extra_prefetch: int, extra_countdown: int, extra_held: int
) -> None:
    prefetch = budget.prefetch_multiplier + extra_prefetch
    bigger = worker_budget(
        budget.task_timeout,
        max_stop_timeout=budget.max_stop_timeout,
        prefetch_multiplier=prefetch,
        max_countdown=budget.max_countdown + extra_countdown,
        held_per_slot=max(budget.held_per_slot, prefetch) + extra_held,
    )
    assert bigger.visibility_timeout >= budget.visibility_timeout


# --- The longest a message stays unacknowledged in a live worker -----------------------------


def longest_unacked_in_a_worker(
    slots: int, held: int, messages: list[tuple[float, float, float]]
) -> float:
    """The longest any message stays unacknowledged in one worker, simulated.

    ``messages``: (time queued, countdown, run time) each, in queue order. The worker takes the
    oldest queued message whenever it holds fewer than ``held`` (whatever Celery's prefetch
    count does, it never exceeds the limit); a message is handed to the pool when taken, or
    at its ETA (queued time + countdown); the pool runs ``slots`` tasks at a time, in the order
    handed over (prefork's "fair" scheduling); a message is acknowledged when its task ends.
    """
    queue = sorted(range(len(messages)), key=lambda i: messages[i][0])
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, message)
    order = 0
    holding = 0
    waiting_for_slot: list[int] = []
    free_slots = slots
    taken_at: dict[int, float] = {}
    longest = 0.0

    def push(at: float, kind: str, message: int) -> None:
        nonlocal order
        heapq.heappush(events, (at, order, kind, message))
        order += 1

    for index in queue:
        push(messages[index][0], "queued", index)
    backlog: list[int] = []
    while events:
        now, _, kind, message = heapq.heappop(events)
        if kind == "queued":
            backlog.append(message)
        elif kind == "due":
            waiting_for_slot.append(message)
        elif kind == "done":
            holding -= 1
            free_slots += 1
            longest = max(longest, now - taken_at[message])
        while backlog and holding < held:  # take what the limit allows
            taken = backlog.pop(0)
            holding += 1
            taken_at[taken] = now
            queued, countdown, _run = messages[taken]
            eta = queued + countdown
            if eta > now:
                push(eta, "due", taken)
            else:
                waiting_for_slot.append(taken)
        while waiting_for_slot and free_slots:  # first handed over, first started
            started = waiting_for_slot.pop(0)
            free_slots -= 1
            push(now + messages[started][2], "done", started)
    return longest


@st.composite
def worker_loads(draw: st.DrawFn) -> tuple[WorkerBudget, int, list[tuple[float, float, float]]]:
    """A budget with small numbers, a pool size and messages that respect the budget: each
    countdown within max_countdown, each run within the hard time limit."""
    prefetch = draw(st.integers(1, 3))
    budget = worker_budget(
        draw(st.integers(1, 20)),
        prefetch_multiplier=prefetch,
        max_countdown=draw(st.integers(0, 60)),
        held_per_slot=prefetch + draw(st.integers(0, 4)),
    )
    slots = draw(st.integers(1, 4))
    times = st.floats(0, 100, allow_nan=False)
    message = st.tuples(
        times,
        st.floats(0, budget.max_countdown, allow_nan=False),
        st.floats(0.001, budget.time_limit, allow_nan=False),
    )
    return budget, slots, draw(st.lists(message, min_size=1, max_size=60))


@settings(max_examples=500)
@given(load=worker_loads())
def test_no_message_stays_unacknowledged_longer_than_the_budget_says(
    load: tuple[WorkerBudget, int, list[tuple[float, float, float]]],
) -> None:
    budget, slots, messages = load
    held = budget.held_per_slot * slots  # Settings.eta_task_limit
    longest = longest_unacked_in_a_worker(slots, held, messages)
    assert longest <= budget.longest_unacked
    assert longest < budget.visibility_timeout - MIN_VISIBILITY_MARGIN


@pytest.mark.parametrize("slots", [1, 2, 3, 8])
@pytest.mark.parametrize("held_per_slot", [1, 2, 4])
def test_the_bound_is_reached_by_a_burst_due_at_once(slots: int, held_per_slot: int) -> None:
    """The worst case, exactly: the worker fills its limit with messages due at the end of the
    longest countdown, each then running the whole hard limit; the last one handed to the pool
    is acknowledged held per slot x hard limit after its ETA. So the bound cannot be lower."""
    budget = worker_budget(30, held_per_slot=held_per_slot, max_countdown=60)
    burst = [(0.0, float(budget.max_countdown), float(budget.time_limit))] * (
        held_per_slot * slots * 3
    )
    assert longest_unacked_in_a_worker(slots, held_per_slot * slots, burst) == pytest.approx(
        budget.longest_unacked
    )
    # Without the limit the same burst keeps its last message three times as long.
    unlimited = longest_unacked_in_a_worker(slots, len(burst), burst)
    assert unlimited == pytest.approx(
        budget.max_countdown + math.ceil(len(burst) / slots) * budget.time_limit
    )
    assert unlimited > budget.visibility_timeout


@pytest.mark.parametrize(
    ("task_timeout", "shutdown", "time_limit", "stop_timeout", "soft_shutdown", "visibility"),
    [
        # 1 s task: 1 s grace; visibility 4 held per slot x 2 + 300 countdown = 308, plus 25 %.
        (1, "warm", 2, 12, 0, 308 + 77),
        # The longest warm task under Fargate's cap: 100 + 10 grace + 10 exit = 120.
        (100, "warm", 110, 120, 0, 740 + 185),
        (101, "cold", 112, 120, 110, 748 + 187),
        # The defaults of celery_ecs.settings: 300 s soft, 330 s hard.
        (300, "cold", 330, 120, 110, 1620 + 405),
        # The grace is capped at 60 s.
        (3600, "cold", 3660, 120, 110, 14_940 + 3735),
        (MAX_TASK_TIMEOUT, "cold", MAX_TASK_TIMEOUT + 60, 120, 110, 346_140 + 86_535),
    ],
)
def test_worked_examples(
    task_timeout: int,
    shutdown: str,
    time_limit: int,
    stop_timeout: int,
    soft_shutdown: int,
    visibility: int,
) -> None:
    budget = worker_budget(task_timeout)
    assert (
        budget.shutdown,
        budget.time_limit,
        budget.stop_timeout,
        budget.soft_shutdown_timeout,
        budget.visibility_timeout,
    ) == (shutdown, time_limit, stop_timeout, soft_shutdown, visibility)


def test_a_lower_stop_cap_moves_the_boundary() -> None:
    # EC2 or a deliberate short stop: 30 s leaves room for 18 s tasks (18 + 2 grace + 10).
    assert worker_budget(18, max_stop_timeout=30).shutdown == "warm"
    assert worker_budget(19, max_stop_timeout=30).shutdown == "cold"
    assert worker_budget(19, max_stop_timeout=30).soft_shutdown_timeout == 20


def test_short_task_pools_prefetch_two_per_slot_and_long_ones_one() -> None:
    assert worker_budget(SHORT_TASK_TIMEOUT).prefetch_multiplier == 2
    assert worker_budget(SHORT_TASK_TIMEOUT + 1).prefetch_multiplier == 1
    # Never above what a worker may hold per slot, and a pool may choose its own.
    assert worker_budget(60, held_per_slot=1).prefetch_multiplier == 1
    assert worker_budget(3600, prefetch_multiplier=3).prefetch_multiplier == 3
    # The prefetch is held, not extra: the visibility timeout depends on heldPerSlot alone.
    single = worker_budget(60, prefetch_multiplier=1)
    assert worker_budget(60).visibility_timeout == single.visibility_timeout


def test_the_environment_is_exactly_the_worker_contract() -> None:
    assert worker_budget(60).environment() == {
        "CELERY_TASK_SOFT_TIME_LIMIT": "60",
        "CELERY_TASK_TIME_LIMIT": "66",
        "CELERY_VISIBILITY_TIMEOUT": str(564 + 141),
        "CELERY_PREFETCH_MULTIPLIER": "2",
        "CELERY_MAX_COUNTDOWN": "300",
        "CELERY_HELD_PER_SLOT": "4",
        "CELERY_SOFT_SHUTDOWN_TIMEOUT": "0",
        "CELERY_SOFT_SHUTDOWN_ON_IDLE": "false",
        "CELERY_TASK_PROTECTION": "false",
    }


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"task_timeout": 0}, "taskTimeout=0"),
        ({"task_timeout": -5}, "taskTimeout=-5"),
        ({"task_timeout": MAX_TASK_TIMEOUT + 1}, f"taskTimeout={MAX_TASK_TIMEOUT + 1}"),
        ({"task_timeout": 60, "max_stop_timeout": EXIT_MARGIN}, f"maxStopTimeout={EXIT_MARGIN}"),
        ({"task_timeout": 60, "max_stop_timeout": 0}, "maxStopTimeout=0"),
        ({"task_timeout": 60, "max_stop_timeout": 121}, "maxStopTimeout=121"),
        ({"task_timeout": 60, "prefetch_multiplier": 0}, "prefetchMultiplier=0"),
        ({"task_timeout": 60, "max_countdown": -1}, "maxCountdown=-1"),
        ({"task_timeout": 60, "held_per_slot": 0}, "heldPerSlot=0"),
        ({"task_timeout": 60, "prefetch_multiplier": 3, "held_per_slot": 2}, "heldPerSlot=2"),
    ],
)
def test_out_of_range_worker_inputs_name_the_key(kwargs: dict[str, int], key: str) -> None:
    with pytest.raises(BudgetError, match=key):
        worker_budget(**kwargs)


@given(request_timeout=request_timeouts)
def test_web_budget_invariants(request_timeout: int) -> None:
    budget = web_budget(request_timeout)
    # The load balancer waits for requests in flight before ECS sends SIGTERM ...
    assert budget.deregistration_delay > request_timeout
    # ... the server then finishes stragglers before Fargate's SIGKILL ...
    assert request_timeout + EXIT_MARGIN <= budget.stop_timeout <= FARGATE_STOP_TIMEOUT_CAP
    # ... and the load balancer never cuts a request the app may still be serving.
    assert budget.idle_timeout >= request_timeout
    assert budget.environment() == {env_names.WEB_REQUEST_TIMEOUT: str(request_timeout)}


@pytest.mark.parametrize("request_timeout", [0, -1, FARGATE_STOP_TIMEOUT_CAP - EXIT_MARGIN + 1])
def test_out_of_range_web_inputs_name_the_key(request_timeout: int) -> None:
    with pytest.raises(BudgetError, match=f"web.requestTimeout={request_timeout}"):
        web_budget(request_timeout)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"task_timeout": 1.5}, "taskTimeout=1.5"),
        ({"task_timeout": True}, "taskTimeout=True"),
        ({"task_timeout": 30, "max_stop_timeout": 60.0}, "maxStopTimeout=60.0"),
        ({"task_timeout": 30, "max_countdown": "300"}, "maxCountdown='300'"),
        ({"task_timeout": 30, "held_per_slot": 2.0}, "heldPerSlot=2.0"),
    ],
)
def test_non_whole_numbers_are_refused(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(BudgetError, match=f"{key}: must be a whole number"):
        worker_budget(**kwargs)  # type: ignore[arg-type]


@given(budgets())
def test_a_spot_interruption_is_an_ordinary_stop_within_the_notice(budget: WorkerBudget) -> None:
    """Fargate Spot's notice is a SIGTERM, then ``stopTimeout`` as for any stop, and the capacity
    is gone 120 s after the notice. Every budget's SIGKILL comes before that, so the worker's
    shutdown (warm or cold, both tested as ECS stops) always runs to its end: nothing is lost.
    Warm pools, the only ones allowed on Spot, also finish every running task: nothing runs
    twice."""
    assert budget.stop_timeout <= SPOT_INTERRUPTION_NOTICE
    if budget.finishes_within_spot_notice:
        assert budget.shutdown == "warm"
        assert budget.time_limit + EXIT_MARGIN <= budget.stop_timeout <= SPOT_INTERRUPTION_NOTICE
    else:
        # Cold: the unfinished tasks are requeued before SIGKILL, and start over elsewhere.
        assert budget.soft_shutdown_timeout + EXIT_MARGIN <= budget.stop_timeout
        assert budget.task_protection  # which Spot ignores: hence no Spot for these pools


@given(max_stop_timeouts)
def test_longest_warm_task_timeout_is_the_warm_cold_boundary(max_stop_timeout: int) -> None:
    longest = longest_warm_task_timeout(max_stop_timeout)
    first_cold = 1 if longest is None else longest + 1
    if longest is not None:
        assert worker_budget(longest, max_stop_timeout=max_stop_timeout).shutdown == "warm"
    assert worker_budget(first_cold, max_stop_timeout=max_stop_timeout).shutdown == "cold"


def test_longest_warm_task_timeout_for_fargates_cap() -> None:
    assert longest_warm_task_timeout() == 100
    assert longest_warm_task_timeout(12) == 1
    assert longest_warm_task_timeout(11) is None
