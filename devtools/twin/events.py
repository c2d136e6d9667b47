"""EventBridge scheduled rules of the twin: when each fires, and what its ECS target runs.

A rule's schedule is ``rate(N unit[s])`` or a 6-field ``cron(...)`` (EventBridge User Guide,
"Schedule expressions for rules"; UTC). The evaluator below reads the syntax the program emits:
``,``, ``-``, ``*``, ``/``, ``?`` and ``#`` (``L`` and ``W`` are never emitted), written
independently of the translator (``infra.schedule_expr``), which the tests compare with Celery.

A target's input transformer (``inputPaths`` + ``inputTemplate``) turns the scheduled event
into the RunTask overrides: ``<time>`` becomes the event's ``time`` (the slot, ISO 8601 UTC)
where it stands inside a JSON string. EventBridge delivers at least once, so a slot may start
its task twice: ``Rule.fire(slot, times=2)`` does that on purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

_EB_DAY_NAMES = {name: number for number, name in enumerate(
    ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)}  # fmt: skip
_EB_MONTH_NAMES = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    start=1)}  # fmt: skip
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class ExpressionError(ValueError):
    """A schedule expression outside the syntax EventBridge documents."""


def _eb_values(text: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    def number(token: str) -> int:
        value = names[token] if token in names else int(token)
        if not low <= value <= high:
            raise ExpressionError(f"{token} outside {low}..{high}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        if item == "*":
            values.update(range(low, high + 1))
        elif "/" in item:
            start, step = item.split("/")
            values.update(range(number(start), high + 1, int(step)))
        elif "-" in item:
            first, last = (number(token) for token in item.split("-"))
            if first > last:
                raise ExpressionError(f"descending range {item}")
            values.update(range(first, last + 1))
        else:
            values.add(number(item))
    return values


def eventbridge_matcher(expression: str) -> tuple[Callable[[date], bool], list[time]]:
    """(does the ``cron(...)`` rule fire on this UTC date?, the times of day it fires at)."""
    match = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expression)
    if not match:
        raise ExpressionError(f"{expression}: not a 6-field cron(...) expression")
    minute, hour, dom, month, dow, year = match.groups()
    if year != "*":
        raise ExpressionError(f"{expression}: the twin fires every year only")
    if (dom == "?") == (dow == "?"):
        raise ExpressionError(f"{expression}: exactly one day field must be '?'")
    minutes = _eb_values(minute, 0, 59, {})
    hours = _eb_values(hour, 0, 23, {})
    months = _eb_values(month, 1, 12, _EB_MONTH_NAMES)
    nth: tuple[int, int] | None = None
    if dow == "?":
        days_of_month, days_of_week = _eb_values(dom, 1, 31, {}), set(range(1, 8))
    else:
        days_of_month = set(range(1, 32))
        if "#" in dow:
            weekday, occurrence = dow.split("#")
            nth = (int(weekday), int(occurrence))
            days_of_week = {int(weekday)}
        else:
            if "/" in dow:
                raise ExpressionError(f"{expression}: EventBridge has no '/' in day-of-week")
            days_of_week = _eb_values(dow, 1, 7, _EB_DAY_NAMES)

    def fires_on(day: date) -> bool:
        weekday = day.isoweekday() % 7 + 1  # EventBridge: SUN = 1 .. SAT = 7
        return (
            day.month in months
            and day.day in days_of_month
            and weekday in days_of_week
            and (nth is None or (day.day - 1) // 7 + 1 == nth[1])
        )

    return fires_on, [time(h, m) for h in sorted(hours) for m in sorted(minutes)]


def eventbridge_fire_times(
    expression: str, after: datetime, created: datetime | None = None
) -> Iterator[datetime]:
    """Fire times strictly after ``after``, in order.

    ``rate(...)`` counts from the rule's creation (``created``, default ``after``), as
    EventBridge does. For ``cron(...)`` the calendar repeats every 400 years, so a rule that has
    not fired for 400 years never will: that raises ``ExpressionError``.
    """
    rate = _RATE.fullmatch(expression)
    if rate:
        period = timedelta(seconds=int(rate[1]) * _UNIT_SECONDS[rate[2].rstrip("s")])
        moment = created or after
        while True:
            moment += period
            if moment > after:
                yield moment
    fires_on, times = eventbridge_matcher(expression)
    day = after.date()
    last_fire = day
    while day.year < last_fire.year + 400:
        if fires_on(day):
            for at in times:
                moment = datetime.combine(day, at, tzinfo=UTC)
                if moment > after:
                    last_fire = day
                    yield moment
        day += timedelta(days=1)
    raise ExpressionError(f"{expression} has not fired for 400 years after {last_fire}")


@dataclass(frozen=True)
class Rule:
    """A scheduled rule and its ECS target, as the program registers them."""

    name: str
    expression: str
    task_definition_arn: str
    input_paths: dict[str, str]
    input_template: str

    @staticmethod
    def of(rule_inputs: dict[str, Any], target_inputs: dict[str, Any], name: str) -> Rule:
        transformer = target_inputs["inputTransformer"]
        return Rule(
            name=name,
            expression=rule_inputs["scheduleExpression"],
            task_definition_arn=target_inputs["ecsTarget"]["taskDefinitionArn"],
            input_paths=dict(transformer["inputPaths"]),
            input_template=transformer["inputTemplate"],
        )

    def overrides(self, slot: datetime) -> dict[str, Any]:
        """The RunTask overrides the target sends for the event of ``slot``."""
        if self.input_paths != {"time": "$.time"}:
            raise ExpressionError(f"{self.name}: the twin substitutes the event's time only")
        event_time = slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return dict(json.loads(self.input_template.replace("<time>", event_time)))

    def command(self, slot: datetime) -> list[str]:
        """The container command of the RunTask for ``slot`` (one container override)."""
        (override,) = self.overrides(slot)["containerOverrides"]
        return list(override["command"])
