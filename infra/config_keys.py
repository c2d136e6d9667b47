"""The stack configuration's keys, declared once: the kinds of key, sections, and their reader.

A section (``Section``) is a table with one row per key: ``Integer``, ``Number``, ``Boolean``,
``Choice``, ``Text``, ``TextList``, ``Command``, or a nested ``Object``/``ObjectList``. A row
holds what the key is: its type, its default, its default in production, the values it allows
(one text, for the errors and the docs) and its meaning. ``infra.config`` declares the tables;
each row then drives

- which keys its section accepts (an unknown key fails, naming the section's keys),
- reading and checking the value (``Fields.integer("minCount")`` and so on), every error being
  ``<key path>: <problem>; allowed: <the row's allowed text>``,
- the reference page, ``docs/reference/configuration.md`` (``reference_tables``, written by
  ``python -m devtools.docs`` and checked current by ``tests/test_docs.py``).

Rules between keys (production requires a certificate, a Spot pool forces X86_64, memory
follows cpu...) stay code in ``infra.config``: a table could only name them.

Why a table of our own, not a schema library: jsonschema (which the app uses for task
arguments) is not in the Pulumi program's virtualenv (``requirements.txt``), its errors would
have to be translated back into this format, and most defaults here depend on ``production`` or
on another key, which a schema cannot compute; pydantic would be a new dependency of the
program for the same result. The readers below are the ones the program used before the table.

Pure logic, standard library only: no Pulumi.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid stack configuration. The message starts with the key path."""


def fail(path: str, problem: str, allowed: str) -> ConfigError:
    """The error of every invalid value: the key path, what is wrong, what is allowed."""
    return ConfigError(f"{path}: {problem}; allowed: {allowed}")


def describe(value: object) -> str:
    """A value as an error shows it: its JSON type and, for a scalar, the value."""
    if isinstance(value, (bool, int, float, str)):
        kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
        return f"{kind} {json.dumps(value)}"
    containers: dict[type[object], str] = {list: "a list", dict: "an object"}
    return containers.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    """A default as the reference shows it."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, tuple):
        return "`" + " ".join(map(str, value)) + "`"
    return str(value)


# ----------------------------------------------------------------------------------------------
# The kinds of key


@dataclass(frozen=True, kw_only=True)
class Key:
    """One row of a section's table: what every kind of key has."""

    name: str
    #: What the key does, as the reference page says it (Markdown; links relative to
    #: ``docs/reference/``).
    meaning: str
    #: The default as the reference shows it, when the row's default value does not say it
    #: (derived from another key, or required).
    default_text: str | None = None
    #: The default when ``production: true``, as the reference shows it, when it is not a value
    #: of the row (required, or derived).
    production_text: str | None = None
    #: Replaces the allowed values the kind would state (for errors and docs alike).
    allowed_text: str | None = None

    @property
    def type_text(self) -> str:
        raise NotImplementedError

    @property
    def allowed(self) -> str:
        """What the key allows: every error of the key ends with it, and the reference shows it."""
        return self.allowed_text if self.allowed_text is not None else self._allowed()

    def _allowed(self) -> str:
        raise NotImplementedError

    def _default_value(self) -> object:
        return None

    def _production_value(self) -> object:
        return None

    @property
    def default_shown(self) -> str:
        if self.default_text is not None:
            return self.default_text
        value = self._default_value()
        return "none" if value is None else _shown(value)

    @property
    def production_shown(self) -> str:
        """The default in production when it differs; empty when it is the same."""
        value = self._production_value()
        if value is not None:
            return _shown(value)
        return self.production_text or ""


@dataclass(frozen=True, kw_only=True)
class Integer(Key):
    """A whole number. ``default`` None: required, or derived by the loader (``default_text``
    says how)."""

    default: int | None = None
    production: int | None = None
    low: int | None = None
    high: int | None = None
    #: Unit or reason, in the allowed text's parentheses.
    why: str = ""
    #: The unit the reference's type column shows (s, days, %, MiB).
    unit: str = ""
    #: The only values allowed, when they are not a range; ``choices_are`` names them in the
    #: error ("10 is not a CloudWatch retention period").
    choices: tuple[int, ...] | None = None
    choices_are: str = ""

    @property
    def type_text(self) -> str:
        return f"int ({self.unit})" if self.unit else "int"

    def _allowed(self) -> str:
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        if self.low is None:
            allowed = "an integer"
        elif self.high is None:
            allowed = f"an integer >= {self.low}"
        else:
            allowed = f"an integer {self.low}..{self.high}"
        return f"{allowed} ({self.why})" if self.why else allowed

    def _default_value(self) -> object:
        return self.default

    def _production_value(self) -> object:
        return self.production


@dataclass(frozen=True, kw_only=True)
class Number(Key):
    """An optional number (integer or decimal) above ``above`` and at most another key's value
    (``at_most_key``), which the loader passes in."""

    above: float
    at_most_key: str
    why: str
    unit: str = ""

    @property
    def type_text(self) -> str:
        return f"number ({self.unit})" if self.unit else "number"

    def _allowed(self) -> str:
        return f"a number > {self.above:g} and <= {self.at_most_key} ({self.why})"

    def allowed_at_most(self, at_most: float) -> str:
        """The allowed text with the other key's value in place of its name."""
        return f"a number > {self.above:g} and <= {at_most:g} ({self.why})"


@dataclass(frozen=True, kw_only=True)
class Boolean(Key):
    default: bool
    production: bool | None = None

    @property
    def type_text(self) -> str:
        return "bool"

    def _allowed(self) -> str:
        return "true, false"

    def _default_value(self) -> object:
        return self.default

    def _production_value(self) -> object:
        return self.production


@dataclass(frozen=True, kw_only=True)
class Choice(Key):
    """One of ``choices`` (strings). ``default`` None: required, or derived by the loader."""

    choices: tuple[str, ...]
    default: str | None = None
    production: str | None = None

    @property
    def type_text(self) -> str:
        return "string"

    def _allowed(self) -> str:
        return ", ".join(self.choices)

    def _default_value(self) -> object:
        return self.default

    def _production_value(self) -> object:
        return self.production


@dataclass(frozen=True, kw_only=True)
class Text(Key):
    """A non-empty string matching ``pattern`` (when given)."""

    pattern: re.Pattern[str] | None = None
    default: str | None = None
    type_name: str = "string"

    @property
    def type_text(self) -> str:
        return self.type_name

    def _allowed(self) -> str:
        return "a string"

    def _default_value(self) -> object:
        return self.default


@dataclass(frozen=True, kw_only=True)
class TextList(Key):
    """A list of distinct strings, each matching ``item``."""

    item: re.Pattern[str]
    allowed_text: str

    @property
    def type_text(self) -> str:
        return "list of strings"

    def _allowed(self) -> str:
        return self.allowed_text


@dataclass(frozen=True, kw_only=True)
class Command(Key):
    """A container command in exec form: a non-empty list of non-empty strings."""

    default: tuple[str, ...]
    #: Longest argument (ECS takes the whole container definition; this only catches values
    #: pasted by mistake).
    longest_argument: int = 4096

    @property
    def type_text(self) -> str:
        return "list of strings"

    def _allowed(self) -> str:
        return (
            'a non-empty list of arguments, e.g. ["gunicorn", "proj.wsgi"] (exec form: the '
            "process gets ECS's SIGTERM itself)"
        )

    def _default_value(self) -> object:
        return self.default


@dataclass(frozen=True, kw_only=True)
class Object(Key):
    """A nested section: an object whose keys are ``section``'s rows."""

    section: Section

    @property
    def type_text(self) -> str:
        return "object"

    def _allowed(self) -> str:
        return "an object"


@dataclass(frozen=True, kw_only=True)
class ObjectList(Key):
    """A list of objects whose keys are ``section``'s rows."""

    section: Section
    allowed_text: str

    @property
    def type_text(self) -> str:
        return "list"

    def _allowed(self) -> str:
        return self.allowed_text


@dataclass(frozen=True, kw_only=True)
class Described(Key):
    """A key another module reads and checks (``read_by`` names it), stated here for the
    reference only: ``allowed_text`` is that module's own text."""

    type_name: str
    allowed_text: str
    read_by: str

    @property
    def type_text(self) -> str:
        return self.type_name

    def _allowed(self) -> str:
        return self.allowed_text


@dataclass(frozen=True)
class Section:
    """The table of one config object: its path (``web``, ``workers[]``; "" at the top), a
    heading and a sentence for the reference, and its rows, in the order errors list them."""

    path: str
    intro: str
    rows: tuple[Key, ...]

    def __post_init__(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"section {self.path or 'top level'} declares a key twice: {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(row.name for row in self.rows)

    def row(self, name: str) -> Key:
        return self.only((name,))[0]

    def only(self, names: Sequence[str]) -> tuple[Key, ...]:
        """The rows named ``names``, in that order (a section read in one of its forms)."""
        by_name = {row.name: row for row in self.rows}
        return tuple(by_name[name] for name in names)

    def key_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


# ----------------------------------------------------------------------------------------------
# Reading a section


R = TypeVar("R", bound=Key)


class Fields:
    """The members of one config object, each read and checked by its row, with the object's
    path in every error.

    ``production`` picks each row's production default. ``strings_are_text`` marks the top
    level: the Pulumi CLI hands the program every top-level value as a string (numbers and
    booleans included, objects as JSON).
    """

    def __init__(
        self,
        raw: object,
        path: str,
        rows: Sequence[Key],
        *,
        production: bool = False,
        strings_are_text: bool = False,
    ) -> None:
        if strings_are_text:
            raw = parse_json_text(raw, path)
        if not isinstance(raw, Mapping):
            raise fail(path or "config", f"expected an object, got {describe(raw)}", "an object")
        self.path = path
        self.rows = {row.name: row for row in rows}
        unknown = sorted(str(key) for key in raw if key not in self.rows)
        if unknown:
            raise fail(self.key_path(unknown[0]), "unknown key", ", ".join(self.rows))
        self.raw: Mapping[str, object] = raw
        self.production = production
        self.strings_are_text = strings_are_text

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.raw.get(self.row(key, Key).name) is not None

    def value(self, key: str) -> object:
        """The raw value (top-level text parsed as the CLI means it); None when absent."""
        value = self.raw.get(self.row(key, Key).name)
        if self.strings_are_text and isinstance(value, str):
            return _parse_scalar_text(value)
        return value

    def allowed(self, key: str) -> str:
        """The row's allowed text, for the errors of a rule the loader checks itself."""
        return self.row(key, Key).allowed

    def row(self, key: str, kind: type[R]) -> R:
        """The row of ``key``, which must be of ``kind``."""
        row = self.rows[key]
        if not isinstance(row, kind):
            # A loader reading a key as another kind than its row declares: a bug, not config.
            raise TypeError(
                f"{self.key_path(key)} is declared {type(row).__name__}, read as {kind.__name__}"
            )
        return row

    def integer(self, key: str, *, default: int | None = None) -> int:
        """An integer member; absent, ``default`` if given (derived by the loader), else the
        row's default (its production one in production), else "required"."""
        row = self.row(key, Integer)
        path = self.key_path(key)
        value = self.value(key)
        if value is None:
            if default is None:
                default = row.production if self.production and row.production is not None else (
                    row.default
                )
            if default is None:
                raise fail(path, "required", row.allowed)
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, f"expected an integer, got {describe(value)}", row.allowed)
        if row.choices is not None and value not in row.choices:
            raise fail(path, f"{value} is not {row.choices_are}", row.allowed)
        if (row.low is not None and value < row.low) or (row.high is not None and value > row.high):
            raise fail(path, f"{value} is out of range", row.allowed)
        return value

    def number(self, key: str, *, at_most: float) -> float | None:
        """An optional number in ``(above, at_most]``; None when absent."""
        row = self.row(key, Number)
        path = self.key_path(key)
        value = self.value(key)
        if value is None:
            return None
        allowed = row.allowed_at_most(at_most)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(path, f"expected a number, got {describe(value)}", allowed)
        if not row.above < value <= at_most:
            raise fail(path, f"{value:g} is out of range", allowed)
        return float(value)

    def boolean(self, key: str, *, default: bool | None = None) -> bool:
        row = self.row(key, Boolean)
        value = self.value(key)
        if value is None:
            if default is not None:
                return default
            return row.production if self.production and row.production is not None else (
                row.default
            )
        if not isinstance(value, bool):
            raise fail(self.key_path(key), f"expected a boolean, got {describe(value)}",
                       row.allowed)  # fmt: skip
        return value

    def text(self, key: str) -> str | None:
        """A string member matching the row's pattern; absent, the row's default (or None)."""
        row = self.row(key, Text)
        path = self.key_path(key)
        value = self.raw.get(key)
        if value is None:
            return row.default
        if not isinstance(value, str) or not value.strip():
            raise fail(path, f"expected a non-empty string, got {describe(value)}", row.allowed)
        if row.pattern is not None and not row.pattern.match(value):
            raise fail(path, f"{value!r} is not valid", row.allowed)
        return value

    def text_or_default(self, key: str) -> str:
        """``text`` of a row that has a default."""
        value = self.text(key)
        if value is None:
            raise TypeError(f"{self.key_path(key)} has no default")
        return value

    def choice(self, key: str, choices: Sequence[T], *, default: T | None = None) -> T:
        """One of the row's choices. ``choices`` is the typed tuple the row was declared with
        (it gives the value its type); absent, ``default`` if given, else the row's."""
        row = self.row(key, Choice)
        if tuple(map(str, choices)) != row.choices:
            raise TypeError(f"{self.key_path(key)} is read with other choices than its row's")
        by_text = {str(choice): choice for choice in choices}
        value = self.raw.get(key)
        if value is None:
            if default is not None:
                return default
            fallback = row.production if self.production and row.production else row.default
            if fallback is None:
                raise fail(self.key_path(key), "required", row.allowed)
            return by_text[fallback]
        if not isinstance(value, str) or value not in by_text:
            raise fail(self.key_path(key), f"unknown value {value!r}", row.allowed)
        return by_text[value]

    def text_list(self, key: str) -> tuple[str, ...] | None:
        row = self.row(key, TextList)
        path = self.key_path(key)
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise fail(path, f"expected a list, got {describe(value)}", row.allowed)
        for index, entry in enumerate(value):
            if not isinstance(entry, str) or not row.item.match(entry):
                raise fail(f"{path}[{index}]", f"{entry!r} is not valid", row.allowed)
        if len(set(value)) != len(value):
            raise fail(path, "duplicate entries", row.allowed)
        return tuple(value)

    def command(self, key: str) -> tuple[str, ...]:
        """A container command in exec form. Whether the image can run it cannot be known
        offline (the image may not exist yet): the twin runs it."""
        row = self.row(key, Command)
        path = self.key_path(key)
        value = self.value(key)
        if value is None:
            return row.default
        if not isinstance(value, list) or not value:
            raise fail(path, f"expected a non-empty list, got {describe(value)}", row.allowed)
        for index, argument in enumerate(value):
            if not isinstance(argument, str) or not argument.strip():
                raise fail(f"{path}[{index}]",
                           f"expected a non-empty string, got {describe(argument)}",
                           row.allowed)  # fmt: skip
            if "\0" in argument or len(argument) > row.longest_argument:
                raise fail(f"{path}[{index}]", "a NUL character or longer than "
                           f"{row.longest_argument} characters", row.allowed)  # fmt: skip
        return tuple(value)

    def nested(self, key: str) -> object:
        """The raw value of an ``Object`` or ``ObjectList`` member (JSON text parsed), for its
        own section's reader; None when absent."""
        row = self.rows[key]
        if not isinstance(row, (Object, ObjectList, Described)):
            raise TypeError(f"{self.key_path(key)} is declared {type(row).__name__}, not nested")
        return parse_json_text(self.raw.get(key), self.key_path(key))


def parse_json_text(value: object, path: str) -> object:
    """An object or list the CLI handed over as JSON text, parsed; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise fail(path, f"not valid JSON ({error.msg})", "a JSON object or list") from None


def _parse_scalar_text(value: str) -> object:
    """'300' -> 300, 'true' -> True; anything else stays the string it is."""
    if re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if value.strip() in ("true", "false"):
        return value.strip() == "true"
    return value


# ----------------------------------------------------------------------------------------------
# The reference page


def _cell(text: str) -> str:
    """Text in a Markdown table cell: a pipe would end the cell."""
    return text.replace("|", "\\|")


def _plain(text: str) -> str:
    """An error's text in Markdown: its characters shown as they are, never as emphasis."""
    return _cell(re.sub(r"([\\*_`])", r"\\\1", text))


def reference_tables(sections: Sequence[Section]) -> str:
    """The reference page's tables: a heading, a sentence and a table per section, a row per
    key (nested sections are tables of their own, so their rows are left out of their parent's).
    """
    parts: list[str] = []
    for section in sections:
        heading = f"`{section.path}`" if section.path else "Top level"
        parts.append(f"## {heading}\n\n{section.intro}\n")
        lines = [
            "| Key | Type | Default | In production | Allowed | Meaning |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in section.rows:
            if isinstance(row, Object):
                continue
            lines.append(
                f"| `{section.key_path(row.name)}` | {row.type_text} | "
                f"{_cell(row.default_shown)} | {_cell(row.production_shown)} | "
                f"{_plain(row.allowed)} | {_cell(row.meaning)} |"
            )
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
