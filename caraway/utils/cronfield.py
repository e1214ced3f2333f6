"""The grammar of one crontab field, as Celery's ``crontab`` reads it.

A field is ``*``, a number, a name (``mon``, ``jan``), a range ``a-b``, any of those with a
step (``*/15``, ``9-17/2``), or a comma-separated list of them; a Python int or an iterable
of ints is taken as the set it names. A range whose end is below its start wraps around
(``fri-mon``, ``22-2``). Errors name the field and the value, so the fix is obvious.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FIELDS", "Field", "ParseException", "parse_field"]

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_PART = re.compile(r"^(?P<base>\*|\w+(?:-\w+)?)(?:/(?P<step>\w*))?$")


class ParseException(ValueError):
    """A crontab field that cannot be read; the message names the field and the value."""


@dataclass(frozen=True)
class Field:
    """A field's name and bounds; ``names`` are the words it accepts (index + ``first``)."""

    name: str
    first: int
    last: int
    names: tuple[str, ...] = ()
    #: A number accepted and read as another (day_of_week 7 is Sunday, as in cron).
    alias: tuple[int, int] | None = None

    @property
    def values(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def describe(self) -> str:
        words = f" or a name ({', '.join(self.names)})" if self.names else ""
        top = self.alias[0] if self.alias else self.last
        return f"a number {self.first}-{top}{words}"


FIELDS = {
    "minute": Field("minute", 0, 59),
    "hour": Field("hour", 0, 23),
    "day_of_week": Field("day_of_week", 0, 6, DAY_NAMES, alias=(7, 0)),
    "day_of_month": Field("day_of_month", 1, 31),
    "month_of_year": Field("month_of_year", 1, 12, MONTH_NAMES),
}


def parse_field(name: str, spec: object) -> frozenset[int]:
    """The set of values ``spec`` selects in field ``name`` (a key of :data:`FIELDS`)."""
    field = FIELDS[name]
    if isinstance(spec, bool):
        raise ParseException(f"crontab {name}: {spec!r} is not {field.describe()}")
    if isinstance(spec, int):
        return frozenset({_number(field, spec, spec)})
    if isinstance(spec, str):
        return _parse_text(field, spec)
    if isinstance(spec, Iterable):
        values: set[int] = set()
        for item in spec:
            values |= parse_field(name, item)
        if not values:
            raise ParseException(f"crontab {name}: an empty list selects no time")
        return frozenset(values)
    raise ParseException(f"crontab {name}: {spec!r} is not a string, a number or a list of numbers")


def _parse_text(field: Field, spec: str) -> frozenset[int]:
    text = spec.strip().lower()
    if not text:
        raise ParseException(f"crontab {field.name}: empty value; use '*' for every value")
    values: set[int] = set()
    for part in text.split(","):
        values.update(_parse_part(field, part.strip(), spec))
    return frozenset(values)


def _parse_part(field: Field, part: str, spec: str) -> list[int]:
    match = _PART.match(part)
    if match is None:
        raise ParseException(
            f"crontab {field.name}: cannot read {part!r} in {spec!r}; expected '*', "
            f"{field.describe()}, a range 'a-b' or a step '*/n'"
        )
    base, step_text = match.group("base"), match.group("step")
    if base == "*":
        selected = field.values
    else:
        start_text, _, end_text = base.partition("-")
        start = _value(field, start_text, spec)
        if not end_text:
            selected = [start] if step_text is None else list(range(start, field.last + 1))
        else:
            selected = _range(field, start, _value(field, end_text, spec))
    if step_text is None:
        return selected
    if not step_text.isdigit() or int(step_text) == 0:
        raise ParseException(
            f"crontab {field.name}: the step in {part!r} must be a whole number above 0"
        )
    return selected[:: int(step_text)]


def _range(field: Field, start: int, end: int) -> list[int]:
    if end >= start:
        return list(range(start, end + 1))
    # A range that wraps around: 'fri-mon' is fri, sat, sun, mon.
    return list(range(start, field.last + 1)) + list(range(field.first, end + 1))


def _value(field: Field, text: str, spec: str) -> int:
    if text.isdigit():
        return _number(field, int(text), spec)
    for index, word in enumerate(field.names):
        if text == word or (len(text) > 3 and word == text[:3] and _full(text)):
            return index + field.first
    raise ParseException(f"crontab {field.name}: {text!r} in {spec!r} is not {field.describe()}")


def _full(text: str) -> bool:
    """Whole English names are accepted too: 'monday', 'january'."""
    return text in _FULL_NAMES


_FULL_NAMES = frozenset({
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "january", "february", "march", "april", "june", "july", "august", "september",
    "october", "november", "december",
})  # fmt: skip


def _number(field: Field, value: int, spec: object) -> int:
    if field.alias is not None and value == field.alias[0]:
        return field.alias[1]
    if not field.first <= value <= field.last:
        raise ParseException(
            f"crontab {field.name}: {value} (in {spec!r}) is out of range; "
            f"expected {field.describe()}"
        )
    return value
