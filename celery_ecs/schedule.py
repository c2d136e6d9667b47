"""Periodic schedule entries as plain data, and their JSON codec.

The stack's ``schedule`` configuration holds the entries (``infra/config.py`` reads them with
``entry_from_mapping``). Beat gets them in its environment (``CELERY_BEAT_SCHEDULE_JSON``, written
by ``entries_to_json``, read by ``entries_from_json`` when beat starts: ``celery_ecs.beat``); with
``scheduler: eventbridge`` each entry becomes a rule whose enqueue command carries the entry's
task, queue and arguments. It imports nothing outside the standard library, so the Pulumi program
can read it without the app's dependencies. All times are UTC.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

#: Entry names: beat's key in Redis and, with EventBridge, part of a rule's name (rule names are
#: at most 64 characters; the component's name and a suffix take the rest).
ENTRY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
ENTRY_NAME_ALLOWED = "1-40 letters, digits, '.', '_' or '-'"
#: Registered Celery task names as Python projects spell them (``proj.tasks.send_email``).
TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
TASK_NAME_ALLOWED = (
    "a task name such as proj.tasks.send_email (letters, digits, '_', '.', ':', '-')"
)
#: Queue names a worker's ``--queues a,b`` list, a Redis key and a CloudWatch dimension all take.
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
QUEUE_NAME_ALLOWED = "1-80 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
#: The keys of one entry, in the configuration and in the JSON.
ENTRY_KEYS = ("name", "task", "cron", "every", "queue", "args", "kwargs")
CRON_ALLOWED = (
    'five crontab fields "minute hour day_of_month month_of_year day_of_week" as Celery\'s '
    'crontab.from_string reads them, e.g. "30 2 * * *"'
)
#: Longest interval of an ``every`` entry (seconds): a year.
MAX_EVERY_SECONDS = 366 * 86_400
EVERY_ALLOWED = f"an integer 1..{MAX_EVERY_SECONDS} (seconds)"
ARGS_ALLOWED = "a JSON list of positional arguments"
KWARGS_ALLOWED = "a JSON object of keyword arguments"


class ScheduleFormatError(ValueError):
    """An entry that cannot be read: ``key`` is its path inside the list (``[1].cron``)."""

    def __init__(self, key: str, problem: str, allowed: str) -> None:
        super().__init__(f"{key}: {problem}; allowed: {allowed}")
        self.key = key
        self.problem = problem
        self.allowed = allowed


@dataclass(frozen=True)
class Every:
    """A fixed interval, in whole seconds."""

    seconds: int


@dataclass(frozen=True)
class Cron:
    """A crontab in Celery's fields (day_of_week: 0-6 = Sunday-Saturday, or names)."""

    minute: str = "*"
    hour: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    day_of_week: str = "*"

    @classmethod
    def from_string(cls, text: str) -> Cron:
        """Five whitespace-separated fields in the order of Celery's ``crontab.from_string``
        (celery/schedules.py): minute, hour, day of month, month, day of week. The fields'
        contents are checked where they are used (``infra.schedule_expr.expand``; Celery's
        ``crontab`` in beat)."""
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"{text!r} has {len(fields)} fields, not 5")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_month, month_of_year, day_of_week)

    def to_string(self) -> str:
        return " ".join(
            (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        )


@dataclass(frozen=True)
class PeriodicEntry:
    name: str
    task: str
    schedule: Every | Cron
    args: tuple[object, ...] = ()
    kwargs: dict[str, object] = field(default_factory=dict)
    queue: str = "default"


def entry_to_mapping(entry: PeriodicEntry) -> dict[str, object]:
    """The entry in the configuration's and the JSON's shape."""
    timing: dict[str, object] = (
        {"every": entry.schedule.seconds}
        if isinstance(entry.schedule, Every)
        else {"cron": entry.schedule.to_string()}
    )
    return {
        "name": entry.name,
        "task": entry.task,
        **timing,
        "queue": entry.queue,
        "args": list(entry.args),
        "kwargs": dict(entry.kwargs),
    }


def entry_from_mapping(raw: object, path: str = "") -> PeriodicEntry:
    """Read one entry ({name, task, cron | every, queue, args, kwargs}); ``path`` prefixes the
    key in errors. Raises ``ScheduleFormatError``."""

    def key(name: str) -> str:
        return f"{path}.{name}" if path else name

    if not isinstance(raw, Mapping):
        raise ScheduleFormatError(path or "entry", f"expected an object, got {_kind(raw)}",
                                  "an object with " + ", ".join(ENTRY_KEYS))  # fmt: skip
    unknown = sorted(str(name) for name in raw if name not in ENTRY_KEYS)
    if unknown:
        raise ScheduleFormatError(key(unknown[0]), "unknown key", ", ".join(ENTRY_KEYS))
    name = _text(raw, "name", key, ENTRY_NAME, ENTRY_NAME_ALLOWED)
    task = _text(raw, "task", key, TASK_NAME, TASK_NAME_ALLOWED)
    queue = _text(raw, "queue", key, QUEUE_NAME, QUEUE_NAME_ALLOWED)
    timing_allowed = f'either cron ({CRON_ALLOWED}) or every (seconds, 1..{MAX_EVERY_SECONDS})'
    if (raw.get("cron") is None) == (raw.get("every") is None):
        problem = "both cron and every" if raw.get("cron") is not None else "neither cron nor every"
        raise ScheduleFormatError(key("cron"), problem, timing_allowed)
    schedule: Every | Cron
    if raw.get("every") is not None:
        seconds = raw["every"]
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ScheduleFormatError(key("every"), f"expected an integer, got {_kind(seconds)}",
                                      EVERY_ALLOWED)  # fmt: skip
        if not 1 <= seconds <= MAX_EVERY_SECONDS:
            raise ScheduleFormatError(key("every"), f"{seconds} is out of range", EVERY_ALLOWED)
        schedule = Every(seconds)
    else:
        text = raw["cron"]
        if not isinstance(text, str):
            raise ScheduleFormatError(key("cron"), f"expected a string, got {_kind(text)}",
                                      CRON_ALLOWED)  # fmt: skip
        try:
            schedule = Cron.from_string(text)
        except ValueError as error:
            raise ScheduleFormatError(key("cron"), str(error), CRON_ALLOWED) from None
    args = raw.get("args")
    if args is None:
        args = []
    if not isinstance(args, list):
        raise ScheduleFormatError(key("args"), f"expected a list, got {_kind(args)}",
                                  ARGS_ALLOWED)  # fmt: skip
    kwargs = raw.get("kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ScheduleFormatError(key("kwargs"), f"expected an object, got {_kind(kwargs)}",
                                  KWARGS_ALLOWED)  # fmt: skip
    for name_of, value in (("args", args), ("kwargs", kwargs)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ScheduleFormatError(key(name_of), f"not JSON ({error})",
                                      "JSON values only (tasks take JSON)") from None  # fmt: skip
    return PeriodicEntry(name, task, schedule, tuple(args), dict(kwargs), queue)


def entries_from_mappings(raw: object, path: str = "") -> tuple[PeriodicEntry, ...]:
    """A list of entries with unique names; errors name ``<path>[index].<key>``."""
    if not isinstance(raw, list):
        raise ScheduleFormatError(path or "schedule", f"expected a list, got {_kind(raw)}",
                                  "a list of schedule entries")  # fmt: skip
    entries = tuple(entry_from_mapping(item, f"{path}[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.name in seen:
            raise ScheduleFormatError(f"{path}[{index}].name", f"duplicate name {entry.name!r}",
                                      "a name used by no other entry")  # fmt: skip
        seen.add(entry.name)
    return entries


def entries_to_json(entries: Iterable[PeriodicEntry]) -> str:
    """The entries as a JSON list (compact: it travels in an environment variable)."""
    return json.dumps([entry_to_mapping(entry) for entry in entries], separators=(",", ":"))


def entries_from_json(text: str) -> tuple[PeriodicEntry, ...]:
    """Read what ``entries_to_json`` wrote. Raises ``ScheduleFormatError``."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScheduleFormatError("schedule", f"not valid JSON ({error.msg})",
                                  "a JSON list of schedule entries") from None  # fmt: skip
    return entries_from_mappings(raw)


def _text(raw: Mapping[str, object], name: str, key: Callable[[str], str],
          pattern: re.Pattern[str], allowed: str) -> str:  # fmt: skip
    path = key(name)
    value = raw.get(name)
    if value is None:
        raise ScheduleFormatError(path, "required", allowed)
    if not isinstance(value, str):
        raise ScheduleFormatError(path, f"expected a string, got {_kind(value)}", allowed)
    if not pattern.match(value):
        raise ScheduleFormatError(path, f"{value!r} is not valid", allowed)
    return value


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, (int, float, str)):
        kind = {int: "integer", float: "number", str: "string"}[type(value)]
        return f"{kind} {json.dumps(value)}"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__
