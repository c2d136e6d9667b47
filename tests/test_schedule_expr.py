"""The EventBridge translation of ``celery_ecs.schedule``, proven against Celery's own scheduler.

The property tests walk the fire times of a crontab with Celery's ``crontab.remaining_delta`` (what
beat uses) and the fire times of the produced ``cron(...)`` with the ECS twin's evaluator of
EventBridge's documented 6-field syntax (``devtools.twin.events``), written independently of
the translator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time

import pytest
from celery import Celery
from celery.schedules import crontab
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from celery_ecs.schedule import Cron, Every, PeriodicEntry
from devtools.twin.events import eventbridge_fire_times, eventbridge_matcher
from infra.config import load
from infra.schedule_expr import ScheduleError, shortest_gap, to_eventbridge_expression

# ---------------------------------------------------------------------------------------------
# Table-driven cases


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (Every(60), "rate(1 minute)"),
        (Every(300), "rate(5 minutes)"),
        (Every(5400), "rate(90 minutes)"),
        (Every(3600), "rate(1 hour)"),
        (Every(7200), "rate(2 hours)"),
        (Every(90_000), "rate(25 hours)"),
        (Every(86_400), "rate(1 day)"),
        (Every(7 * 86_400), "rate(7 days)"),
        (Cron(), "cron(* * * * ? *)"),
        (Cron(minute="30", hour="2"), "cron(30 2 * * ? *)"),
        (Cron(minute="*/15"), "cron(0/15 * * * ? *)"),
        (Cron(minute="5-59/10", hour="*/6"), "cron(5/10 0/6 * * ? *)"),
        (Cron(minute="0,30", hour="9-17"), "cron(0,30 9-17 * * ? *)"),
        (Cron(minute="0-30/10"), "cron(0,10,20,30 * * * ? *)"),
        # Celery wraps descending ranges and steps through the wrapped list.
        (Cron(minute="0", hour="22-2"), "cron(0 0-2,22-23 * * ? *)"),
        (Cron(minute="0", hour="22-2/2"), "cron(0 0,2,22 * * ? *)"),
        # Day of week: Celery 0 = Sunday, EventBridge 1 = SUN; names avoid the shift.
        (Cron(minute="0", hour="9", day_of_week="mon-fri"), "cron(0 9 ? * MON-FRI *)"),
        (Cron(minute="0", hour="9", day_of_week="1-5"), "cron(0 9 ? * MON-FRI *)"),
        (Cron(minute="0", hour="0", day_of_week="0"), "cron(0 0 ? * SUN *)"),
        (Cron(minute="0", hour="0", day_of_week="Saturday,sun"), "cron(0 0 ? * SUN,SAT *)"),
        (Cron(minute="0", hour="0", day_of_week="fri-mon"), "cron(0 0 ? * SUN-MON,FRI-SAT *)"),
        # '*/2' means "day number divisible by 2" in Celery, not every other day; and
        # EventBridge has no '/' in day-of-week, so it becomes a list.
        (Cron(minute="0", hour="0", day_of_week="*/2"), "cron(0 0 ? * SUN,TUE,THU,SAT *)"),
        (Cron(minute="0", hour="0", day_of_week="*/7"), "cron(0 0 ? * SUN *)"),
        # Every day of the week is no restriction at all.
        (Cron(minute="0", hour="0", day_of_week="0-6"), "cron(0 0 * * ? *)"),
        (Cron(minute="0", hour="0", day_of_month="1", month_of_year="jan,jul"),
         "cron(0 0 1 1,7 ? *)"),
        (Cron(minute="0", hour="0", day_of_month="*/3"), "cron(0 0 1/3 * ? *)"),
        (Cron(minute="0", hour="0", month_of_year="*/3"), "cron(0 0 * 1/3 ? *)"),
        # Leap day: fires every four years, in both.
        (Cron(minute="0", hour="0", day_of_month="29", month_of_year="feb"),
         "cron(0 0 29 2 ? *)"),
        (Cron(minute="0", hour="0", day_of_month="1-31", day_of_week="mon"),
         "cron(0 0 ? * MON *)"),
        # Both day fields restricted: Celery needs both to match, which is the n-th weekday.
        (Cron(minute="0", hour="9", day_of_month="1-7", day_of_week="mon"),
         "cron(0 9 ? * 2#1 *)"),
        (Cron(minute="0", hour="9", day_of_month="15-21", day_of_week="6"),
         "cron(0 9 ? * 7#3 *)"),
        (Cron(minute="0", hour="9", day_of_month="29,30,31", day_of_week="fri"),
         "cron(0 9 ? * 6#5 *)"),
    ],
)  # fmt: skip
def test_translation(schedule: Every | Cron, expected: str) -> None:
    assert to_eventbridge_expression(schedule) == expected


@pytest.mark.parametrize("entry", load({}).schedule, ids=lambda entry: entry.name)
def test_every_entry_of_the_default_schedule_translates(entry: PeriodicEntry) -> None:
    expression = to_eventbridge_expression(entry.schedule)
    assert re.fullmatch(r"rate\(\d+ \w+\)|cron\(\S+( \S+){5}\)", expression)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Every(0), "at least rate(1 minute)"),
        (Every(30), "at least rate(1 minute)"),
        (Every(59), "at least rate(1 minute)"),
        (Every(-60), "at least rate(1 minute)"),
        (Every(90), "not a whole number of minutes"),
        (Every(3601), "not a whole number of minutes"),
        (Cron(day_of_month="1", day_of_week="mon"), "both day_of_month and day_of_week"),
        (Cron(day_of_month="1-7", day_of_week="mon,fri"), "both day_of_month and day_of_week"),
        (Cron(day_of_month="2-8", day_of_week="mon"), "both day_of_month and day_of_week"),
        (Cron(day_of_month="30", month_of_year="2"), "never run"),
        (Cron(day_of_month="31", month_of_year="apr,jun,sep,nov"), "never run"),
        (Cron(minute="60"), "outside 0..59"),
        (Cron(hour="24"), "outside 0..23"),
        (Cron(day_of_month="0"), "outside 1..31"),
        (Cron(day_of_week="7"), "outside 0..6"),
        (Cron(minute="*/0"), "step must be >= 1"),
        (Cron(minute="5/2"), "is not '*'"),
        (Cron(minute="1-5-7"), "is not '*'"),
        (Cron(minute=""), "is not '*'"),
        (Cron(minute="1,,2"), "is not '*'"),
        # Celery would read 'jan' as 1 (Monday) and 'mon' as 1 (January): refused here.
        (Cron(day_of_week="jan"), "not a number or a name"),
        (Cron(month_of_year="mon"), "not a number or a name"),
        (Cron(minute="noon"), "not a number or a name"),
    ],
)
def test_untranslatable_schedules_are_refused(schedule: Every | Cron, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)) as raised:
        to_eventbridge_expression(schedule)
    assert repr(schedule) in str(raised.value), "the message names the schedule"


_CELERY = Celery("schedule-expr-tests", set_as_current=False)
_CELERY.conf.update(timezone="UTC", enable_utc=True)


def celery_fires(spec: Cron) -> Callable[[datetime], datetime]:
    """When beat runs ``spec`` next after a run at a given moment (beat's own arithmetic): one
    parse of the crontab for all the moments a property test asks about."""
    last_run = [datetime.min]
    schedule = crontab(
        minute=spec.minute,
        hour=spec.hour,
        day_of_month=spec.day_of_month,
        month_of_year=spec.month_of_year,
        day_of_week=spec.day_of_week,
        # "Now" is the last run, so the answer does not depend on the wall clock.
        nowfun=lambda: last_run[0],
        app=_CELERY,
    )

    def next_fire(last_run_at: datetime) -> datetime:
        last_run[0] = last_run_at
        start, delta, _ = schedule.remaining_delta(last_run_at)
        return start + delta

    return next_fire


def celery_next_fire(spec: Cron, last_run_at: datetime) -> datetime:
    """When beat runs ``spec`` next after a run at ``last_run_at`` (beat's own arithmetic)."""
    return celery_fires(spec)(last_run_at)


def assert_same_fire_times(spec: Cron, expression: str, start: datetime) -> None:
    """The next fire times agree, minute by minute and day by day."""
    celery_next = celery_fires(spec)
    # Consecutive fires: catches minute/hour differences (and day ones for sparse schedules).
    eventbridge = eventbridge_fire_times(expression, start)
    last = start
    for _ in range(40):
        expected = celery_next(last)
        assert next(eventbridge) == expected, (spec, expression, last)
        last = expected
    # The first fire of each following firing day: catches day-of-month/week/month differences
    # when a dense time-of-day pattern kept the walk above inside one day.
    last = start
    for _ in range(25):
        expected = celery_next(last)
        assert next(eventbridge_fire_times(expression, last)) == expected, (spec, expression, last)
        last = expected.replace(hour=23, minute=59, second=59)


def test_evaluator_reads_the_documented_examples() -> None:
    # From the EventBridge cron reference: 10:15 UTC on the last Friday... is 'L', not emitted;
    # these are the forms the translator emits.
    fires_on, times = eventbridge_matcher("cron(0/15 12-13 ? * MON-FRI *)")
    assert times[:3] == [time(12, 0), time(12, 15), time(12, 30)] and len(times) == 8
    assert fires_on(date(2026, 3, 2)) and not fires_on(date(2026, 3, 1))  # Monday, Sunday
    fires_on, _ = eventbridge_matcher("cron(0 9 ? * 3#2 *)")  # second Tuesday
    assert [d.day for d in (date(2026, 3, n) for n in range(1, 32)) if fires_on(d)] == [10]


# ---------------------------------------------------------------------------------------------
# Properties


def _token(value: int, names: tuple[str, ...], first: int) -> st.SearchStrategy[str]:
    spellings = [str(value), f"{value:02d}"]
    if names:
        name = names[value - first]
        spellings += [name, name.upper(), name.capitalize()]
    return st.sampled_from(spellings)


def field_texts(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Celery field strings: lists of '*', '*/n', values, (wrapping) ranges, ranges with steps."""
    token = st.integers(low, high).flatmap(lambda value: _token(value, names, low))
    step = st.integers(1, high - low + 1)
    part = st.one_of(
        st.just("*"),
        step.map(lambda n: f"*/{n}"),
        token,
        st.tuples(token, token).map(lambda pair: "-".join(pair)),
        st.tuples(token, token, step).map(lambda parts: f"{parts[0]}-{parts[1]}/{parts[2]}"),
    )
    return st.lists(part, min_size=1, max_size=3).map(",".join)


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FULL_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

minutes = field_texts(0, 59)
hours = field_texts(0, 23)
days_of_month = field_texts(1, 31)
months = field_texts(1, 12, _MONTHS)
days_of_week = st.one_of(field_texts(0, 6, _DAYS), field_texts(0, 6, _FULL_DAYS))
every_day_of_week = st.sampled_from(["*", "0-6", "sun-sat", "*/1", "mon-sun", "0,1-6"])
every_day_of_month = st.sampled_from(["*", "1-31", "*/1", "1-15,16-31"])
week_of_month_blocks = st.sampled_from(
    ["1-7", "8-14", "15-21", "22-28", "29-31", "29,30,31", "1,2,3,4,5,6,7", "8-10,11-14"]
)
starts = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))


@st.composite
def mappable_crontabs(draw: st.DrawFn) -> Cron:
    """Crontabs EventBridge can express: at most one day field restricted, or the n-th weekday."""
    kind = draw(st.sampled_from(["day_of_month", "day_of_week", "nth_weekday"]))
    if kind == "day_of_month":
        day_of_month, day_of_week = draw(days_of_month), draw(every_day_of_week)
    elif kind == "day_of_week":
        day_of_month, day_of_week = draw(every_day_of_month), draw(days_of_week)
    else:
        day_of_month = draw(week_of_month_blocks)
        day_of_week = draw(st.integers(0, 6).flatmap(lambda value: _token(value, _DAYS, 0)))
    return Cron(
        minute=draw(minutes),
        hour=draw(hours),
        day_of_month=day_of_month,
        month_of_year=draw(months),
        day_of_week=day_of_week,
    )


def _never_fires(spec: Cron) -> bool:
    """Celery's own parse: no month of the schedule has any of its days."""
    parsed = crontab(day_of_month=spec.day_of_month, month_of_year=spec.month_of_year)
    days_in = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return not any(
        day <= days_in[month - 1] for month in parsed.month_of_year for day in parsed.day_of_month
    )


_PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_PROPERTY_SETTINGS
@given(spec=mappable_crontabs(), start=starts)
def test_mappable_crontabs_fire_exactly_when_celery_would(spec: Cron, start: datetime) -> None:
    if _never_fires(spec):
        # Celery gives up looking for a next run; the translation refuses it up front.
        with pytest.raises(ScheduleError, match="never run"):
            to_eventbridge_expression(spec)
        with pytest.raises(RuntimeError, match="unable to rollover"):
            celery_next_fire(spec, start)
        return
    expression = to_eventbridge_expression(spec)
    assert len(expression) <= 256, "PutRule's ScheduleExpression limit"
    assert_same_fire_times(spec, expression, start)


@_PROPERTY_SETTINGS
@given(
    spec=st.builds(
        Cron, minute=st.just("0"), hour=st.just("12"),
        day_of_month=days_of_month | week_of_month_blocks, month_of_year=months,
        day_of_week=days_of_week | st.integers(0, 6).map(str),
    ),
    start=starts,
)  # fmt: skip
def test_any_crontab_is_either_refused_or_translated_exactly(spec: Cron, start: datetime) -> None:
    # Both day fields restricted at random: most are refused, and nothing refused is wrong.
    try:
        expression = to_eventbridge_expression(spec)
    except ScheduleError:
        event("refused")
        return
    event("translated")
    assert_same_fire_times(spec, expression, start)


@pytest.mark.parametrize(
    ("schedule", "gap"),
    [
        (Every(seconds=3600), 3600),
        (Every(seconds=7 * 24 * 3600), 24 * 3600),  # only closer fires matter: capped at a day
        (Cron(minute="30", hour="2"), 24 * 3600),
        (Cron(minute="0,30", hour="*"), 1800),
        (Cron(minute="0", hour="0,23"), 3600),  # 23:00 then 00:00 the next day
        (Cron(minute="*/15", hour="9-17", day_of_week="mon-fri"), 900),
    ],
)
def test_shortest_gap_between_fires(schedule: Every | Cron, gap: int) -> None:
    assert shortest_gap(schedule) == gap


@given(mappable_crontabs())
@settings(max_examples=200, deadline=None)
def test_a_cron_string_has_celery_s_field_order(spec: Cron) -> None:
    """The ``schedule[].cron`` text (``Cron.from_string``) reads its five fields in the order of
    Celery's own ``crontab.from_string``: minute, hour, day of month, month, day of week."""
    text = spec.to_string()
    assert Cron.from_string(text) == spec
    ours = crontab(minute=spec.minute, hour=spec.hour, day_of_month=spec.day_of_month,
                   month_of_year=spec.month_of_year, day_of_week=spec.day_of_week)  # fmt: skip
    celerys = crontab.from_string(text)
    for field in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"):
        assert getattr(celerys, field) == getattr(ours, field), (text, field)
