"""Translate schedule entries (``celery_ecs.schedule`` types, the stack's ``schedule``) into
EventBridge scheduled-rule expressions.

Pure logic, no Pulumi and no Celery: the Pulumi program imports it, and it must not need the
app's dependencies. It parses Celery's crontab field syntax itself; ``tests/test_schedule_expr.py``
proves the translation against Celery's own parser and scheduler.

Rules (EventBridge scheduled rules, all times UTC):

- ``Every(seconds)`` -> ``rate(N unit)``: whole minutes only, at least one; the largest unit that
  divides evenly (days, hours, minutes), singular for 1 (``rate(1 hour)``).
- ``Cron(...)`` -> ``cron(minute hour day-of-month month day-of-week year)``. Every field is
  expanded to the set of values Celery would fire on, then written out again, so Celery-only
  forms (wrapping ranges such as ``fri-mon``, steps over ranges, ``*/2`` in day_of_week) become
  plain lists. Day-of-week is written as names (``SUN``..``SAT``): Celery counts Sunday as 0,
  EventBridge as 1, and names cannot be off by one.
- Celery fires only on days that match day_of_month AND day_of_week; EventBridge needs one of
  the two to be ``?``. Both restricted therefore maps only when the day-of-week is a single day
  and the day-of-month one 7-day block (1-7, 8-14, 15-21, 22-28 or 29-31): the n-th such weekday
  of the month, ``D#n``. Anything else is a ``ScheduleError``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from celery_ecs.schedule import Cron, Every

_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # index = Celery's number
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_FULL_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_FULL_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip
#: EventBridge rate units, largest first; a rate uses the largest that divides evenly.
_RATE_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60))
#: Days in each month of a leap year: a day that exists in no month never fires.
_MAX_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: The 7-day blocks of a month that contain the n-th weekday (n = index + 1), for ``D#n``.
_WEEK_OF_MONTH_BLOCKS = tuple(
    frozenset(range(first, min(first + 7, 32))) for first in range(1, 32, 7)
)

# Celery's crontab grammar: a comma-separated list of ``*``, ``*/step``, ``value``,
# ``low-high`` or ``low-high/step``. Celery matches these as prefixes and ignores trailing
# junk (``1-5-7`` is 1-5); here the whole part must match.
_STAR = re.compile(r"\*(?:/(?P<step>\d+))?")
_VALUE_OR_RANGE = re.compile(
    r"(?P<low>[0-9A-Za-z]+)(?:-(?P<high>[0-9A-Za-z]+)(?:/(?P<step>\d+))?)?"
)


class ScheduleError(ValueError):
    """A schedule EventBridge cannot express exactly. The message names the schedule."""


@dataclass(frozen=True)
class _Field:
    """One crontab field: Celery's name for it, its inclusive range and its value names."""

    name: str
    low: int
    high: int
    names: Mapping[str, int]

    @property
    def all_values(self) -> frozenset[int]:
        return frozenset(range(self.low, self.high + 1))


def _names(*spellings: tuple[str, ...], first: int) -> dict[str, int]:
    return {name.lower(): first + index for names in spellings for index, name in enumerate(names)}


_MINUTE = _Field("minute", 0, 59, {})
_HOUR = _Field("hour", 0, 23, {})
_DAY_OF_MONTH = _Field("day_of_month", 1, 31, {})
_MONTH_OF_YEAR = _Field("month_of_year", 1, 12, _names(_MONTH_NAMES, _FULL_MONTH_NAMES, first=1))
# Celery: 0-6 = Sunday..Saturday (7 is refused, unlike Unix cron).
_DAY_OF_WEEK = _Field("day_of_week", 0, 6, _names(_DAY_NAMES, _FULL_DAY_NAMES, first=0))


@dataclass(frozen=True)
class CronValues:
    """A ``Cron``'s fields expanded to the values Celery matches (``days_of_week``: 0 = Sunday).
    Celery runs an entry at every minute and hour listed, on days in both day sets."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]


def expand(spec: Cron) -> CronValues:
    """The values Celery's ``crontab`` expands ``spec`` to; ``ScheduleError`` names a field it
    would not read the same way."""
    return CronValues(
        minutes=_parse(spec, spec.minute, _MINUTE),
        hours=_parse(spec, spec.hour, _HOUR),
        days_of_month=_parse(spec, spec.day_of_month, _DAY_OF_MONTH),
        months=_parse(spec, spec.month_of_year, _MONTH_OF_YEAR),
        days_of_week=_parse(spec, spec.day_of_week, _DAY_OF_WEEK),
    )


def to_eventbridge_expression(schedule: Every | Cron) -> str:
    """The EventBridge ``ScheduleExpression`` that fires when Celery beat would run ``schedule``.

    Raises ``ScheduleError`` when EventBridge cannot express it exactly.
    """
    if isinstance(schedule, Every):
        return _rate_expression(schedule)
    if isinstance(schedule, Cron):
        # No need to check PutRule's 256-character limit: the longest possible result (30
        # isolated minutes, 12 hours, 16 days, 6 months) is under 200 characters.
        return _cron_expression(schedule)
    raise ScheduleError(f"{schedule!r}: not an celery_ecs.schedule.Every or Cron")


def shortest_gap(schedule: Every | Cron) -> int:
    """Seconds between the two closest consecutive fires of ``schedule`` (at most a day is
    reported for schedules that fire once a day or less: only closer fires matter to callers)."""
    day = 24 * 3600
    if isinstance(schedule, Every):
        return min(schedule.seconds, day)
    values = expand(schedule)
    times = sorted(hour * 3600 + minute * 60 for hour in values.hours for minute in values.minutes)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # The last fire of one day and the first of the next are closer still on schedules that fire
    # every day; on others the next firing day is further away.
    gaps.append(day - times[-1] + times[0])
    return min(gaps)


def _rate_expression(schedule: Every) -> str:
    seconds = schedule.seconds
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 60:
        raise ScheduleError(
            f"{schedule!r}: EventBridge rates are whole minutes, at least rate(1 minute)"
        )
    if seconds % 60:
        raise ScheduleError(
            f"{schedule!r}: {seconds} s is not a whole number of minutes; EventBridge rates "
            "count minutes, hours or days"
        )
    unit, size = next((unit, size) for unit, size in _RATE_UNITS if seconds % size == 0)
    count = seconds // size
    return f"rate({count} {unit}{'' if count == 1 else 's'})"


def _cron_expression(spec: Cron) -> str:
    values = expand(spec)
    minutes, hours, months = values.minutes, values.hours, values.months
    days_of_month, days_of_week = values.days_of_month, values.days_of_week

    if not any(day <= _MAX_DAYS_IN_MONTH[month - 1] for day in days_of_month for month in months):
        raise ScheduleError(
            f"{spec!r}: no month in month_of_year has any day in day_of_month, so Celery would "
            "never run it"
        )

    month_restricted = days_of_month != _DAY_OF_MONTH.all_values
    week_restricted = days_of_week != _DAY_OF_WEEK.all_values
    if month_restricted and week_restricted:
        dom_field, dow_field = "?", _nth_weekday(spec, days_of_month, days_of_week)
    elif week_restricted:
        dom_field = "?"
        dow_field = ",".join(
            _DAY_NAMES[low] if low == high else f"{_DAY_NAMES[low]}-{_DAY_NAMES[high]}"
            for low, high in _runs(days_of_week)
        )
    else:
        dom_field, dow_field = _render(days_of_month, _DAY_OF_MONTH), "?"
    fields = (
        _render(minutes, _MINUTE),
        _render(hours, _HOUR),
        dom_field,
        _render(months, _MONTH_OF_YEAR),
        dow_field,
        "*",
    )
    return f"cron({' '.join(fields)})"


def _nth_weekday(spec: Cron, days_of_month: frozenset[int], days_of_week: frozenset[int]) -> str:
    """``D#n`` when both day fields are restricted, or a ScheduleError explaining why not."""
    if len(days_of_week) == 1 and days_of_month in _WEEK_OF_MONTH_BLOCKS:
        (day,) = days_of_week
        week = _WEEK_OF_MONTH_BLOCKS.index(days_of_month) + 1
        # EventBridge documents ``#`` with numbers only (``3#2``): Sunday is 1.
        return f"{day + 1}#{week}"
    raise ScheduleError(
        f"{spec!r}: Celery runs it only on days matching both day_of_month and day_of_week, but "
        "an EventBridge cron expression restricts only one of them (the other must be '?'). "
        "The one combination it can express is a single weekday with one 7-day block of "
        "day_of_month (1-7, 8-14, 15-21, 22-28 or 29-31: the n-th weekday of the month); "
        "otherwise leave day_of_month or day_of_week as '*'"
    )


def _parse(spec: Cron, text: str, field: _Field) -> frozenset[int]:
    """The set of values Celery expands ``text`` to, for one field."""
    values: set[int] = set()
    for raw_part in str(text).split(","):
        part = raw_part.strip()
        if star := _STAR.fullmatch(part):
            candidates = list(range(field.low, field.high + 1))
            step = star["step"]
        elif value_or_range := _VALUE_OR_RANGE.fullmatch(part):
            low = _value(spec, field, value_or_range["low"])
            if value_or_range["high"] is None:
                candidates = [low]
            else:
                high = _value(spec, field, value_or_range["high"])
                # Celery wraps a descending range around the end of the field (fri-mon).
                if high >= low:
                    candidates = list(range(low, high + 1))
                else:
                    candidates = list(range(low, field.high + 1)) + list(range(field.low, high + 1))
            step = value_or_range["step"]
        else:
            raise ScheduleError(
                f"{spec!r}: {field.name}={text!r}: {part!r} is not '*', '*/step', a value, "
                "'low-high' or 'low-high/step'"
            )
        if step is not None:
            if int(step) < 1:
                raise ScheduleError(f"{spec!r}: {field.name}={text!r}: a step must be >= 1")
            # Celery steps through the expanded list (so 22-2/2 is 22, 0, 2).
            candidates = candidates[:: int(step)]
        values.update(candidates)
    return frozenset(values)


def _value(spec: Cron, field: _Field, token: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token.lower() in field.names:
        number = field.names[token.lower()]
    else:
        raise ScheduleError(f"{spec!r}: {field.name}: {token!r} is not a number or a name")
    if not field.low <= number <= field.high:
        raise ScheduleError(
            f"{spec!r}: {field.name}: {number} is outside {field.low}..{field.high}"
        )
    return number


def _runs(values: frozenset[int]) -> list[tuple[int, int]]:
    """Sorted values as maximal runs of consecutive numbers: {1, 2, 3, 7} -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for value in sorted(values):
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _render(values: frozenset[int], field: _Field) -> str:
    """A field's values in EventBridge syntax: ``*``, ``start/step`` or a list of ranges."""
    if values == field.all_values:
        return "*"
    ordered = sorted(values)
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        # ``start/step`` runs to the end of the field, so it only fits a progression that does.
        if step > 1 and ordered == list(range(ordered[0], field.high + 1, step)):
            return f"{ordered[0]}/{step}"
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in _runs(values))
