"""NCRONTAB schedules, read as the Functions host reads ``EXPORT_SCHEDULE``; croniter computes the times.

The host's timer trigger parses its schedule with the NCrontab library (six fields, seconds first:
``{second} {minute} {hour} {day} {month} {day-of-week}``), in UTC unless ``WEBSITE_TIME_ZONE`` is set.
croniter reads a wider grammar with other meanings in places, so an expression is checked against
NCrontab's rules first and handed to croniter only in a form both read alike:

- values: seconds and minutes 0-59, hours 0-23, days 1-31, months 1-12, days of the week 0-6
  (0 is Sunday; NCrontab refuses 7, where croniter would take it as Sunday);
- ``*``, ``a-b``, lists ``a,b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (``a`` to the field's last value);
  a range written backwards (``Fri-Mon``) is read as NCrontab reads it, the same range forwards
  (``Mon-Fri``), not as croniter's wrap-around;
- months and days of the week by English name, case-insensitive, whole or any leading part of it
  (``January``, ``Jan``, ``Monday``, ``Mon``; the first name that starts with it wins);
- a day and a day of the week both given must both match (NCrontab), not either (croniter's default,
  classic cron's rule): ``0 0 0 13 * Fri`` fires on Friday the 13th only;
- nothing else: croniter's ``?``, ``L``, ``W`` (nearest weekday), ``#`` and ``H`` are refused, as NCrontab
  refuses them (``W`` alone in the day-of-week field is Wednesday's first letter, as in NCrontab).

An expression that parses but never fires (``0 0 0 31 2 *``) is refused as well: the host accepts
it and never runs the timer, which is never what was meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from croniter import croniter
from croniter.croniter import CroniterError

EXAMPLE = "0 */15 * * * *"  # every 15 minutes, at second 0
FORM = "{second} {minute} {hour} {day} {month} {day-of-week}"

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_FIELDS = (_Field("second", 0, 59), _Field("minute", 0, 59), _Field("hour", 0, 23), _Field("day", 1, 31),
           _Field("month", 1, 12, _MONTHS), _Field("day-of-week", 0, 6, _DAYS))
_PART = re.compile(r"(?P<range>[^/]+)(?:/(?P<step>\d+))?")


class ScheduleError(ValueError):
    """The expression is not a schedule the Functions host would run; the message says what is wrong."""


@dataclass(frozen=True)
class Schedule:
    expression: str  # as written
    normalized: str  # what croniter reads: numbers only, every range forwards

    def next_after(self, after: datetime) -> datetime:
        """The first time after ``after`` (not ``after`` itself) the schedule fires, in UTC."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=timezone.utc)
        try:
            found = croniter(self.normalized, after.astimezone(timezone.utc), second_at_beginning=True,
                             day_or=False).get_next(datetime)
        except CroniterError as e:
            raise ScheduleError(f"schedule {self.expression!r} never fires ({e})") from None
        return found.astimezone(timezone.utc)


def parse(expression: str) -> Schedule:
    """The schedule of an NCRONTAB expression; ScheduleError (saying which field and why) when the
    Functions host would refuse it or it never fires."""
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ScheduleError(f"an NCRONTAB schedule has six fields, {FORM}; {expression!r} has {len(fields)}")
    schedule = Schedule(expression, " ".join(_normalize(text, spec) for text, spec in zip(fields, _FIELDS)))
    try:
        croniter(schedule.normalized, second_at_beginning=True, day_or=False)
    except CroniterError as e:  # not expected once normalized: said plainly all the same
        raise ScheduleError(f"schedule {expression!r}: {e}") from None
    schedule.next_after(datetime.now(timezone.utc))  # refuses a schedule that never fires
    return schedule


def _normalize(text: str, spec: _Field) -> str:
    return ",".join(_normalize_part(part, text, spec) for part in text.split(","))


def _normalize_part(part: str, text: str, spec: _Field) -> str:
    m = _PART.fullmatch(part)
    if m is None:
        raise ScheduleError(_bad(text, spec, f"{part!r} is not a value, a range or a step"))
    rng, step = m.group("range"), m.group("step")
    step_text = f"/{int(step)}" if step is not None and int(step) > 1 else ""  # NCrontab reads a step of 0 as 1
    if rng == "*":
        return "*" + step_text
    if "-" in rng:
        first_text, _, last_text = rng.partition("-")
        first, last = _value(first_text, text, spec), _value(last_text, text, spec)
        first, last = min(first, last), max(first, last)  # NCrontab reads 5-1 as 1-5
        return f"{first}-{last}{step_text}"
    value = _value(rng, text, spec)
    return f"{value}-{spec.high}{step_text}" if step is not None else str(value)


def _value(word: str, text: str, spec: _Field) -> int:
    if word.isdigit():
        value = int(word)
        if not spec.low <= value <= spec.high:
            hint = " (0 is Sunday; NCRONTAB does not accept 7)" if spec.name == "day-of-week" and value == 7 else ""
            raise ScheduleError(_bad(text, spec, f"{value} is outside {spec.low}-{spec.high}{hint}"))
        return value
    if word.isalpha() and spec.names:
        for index, name in enumerate(spec.names):
            if name.lower().startswith(word.lower()):
                return spec.low + index
        raise ScheduleError(_bad(text, spec, f"{word!r} is not the name of a {spec.name.replace('-of-week', '')}"
                                 f" ({', '.join(n[:3] for n in spec.names)})"))
    what = "a number or an English name" if spec.names else "a number"
    raise ScheduleError(_bad(text, spec, f"{word!r} is not {what}"))


def _bad(text: str, spec: _Field, why: str) -> str:
    return f"the {spec.name} field {text!r} is not valid: {why}"
