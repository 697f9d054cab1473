"""EventBridge schedule expressions: ``rate(...)``, ``cron(...)`` and ``at(...)``, all in UTC.

    schedule = parse_schedule("cron(0/15 8-17 ? * MON-FRI *)")
    schedule.next_fire(datetime.now(UTC))      # the first occurrence strictly after the argument

The syntax follows AWS (EventBridge rules and EventBridge Scheduler):

- ``rate(value unit)``: value a positive integer; unit ``minute``/``hour``/``day`` when the value is
  1, ``minutes``/``hours``/``days`` otherwise (``rate(1 minutes)`` and ``rate(5 hour)`` are
  refused, as AWS refuses them). AWS starts counting a rate when the rule is created; here every
  node must agree on the occurrences without talking to each other, so occurrences are the
  multiples of the period since the Unix epoch (``rate(5 minutes)`` fires at :00, :05, :10, ...).
- ``cron(Minutes Hours Day-of-month Month Day-of-week Year)``: six fields; ``,`` lists, ``-``
  ranges (a range may wrap, ``FRI-MON`` or ``22-2``, except in Year), ``*``, ``/`` steps (``0/15``,
  ``*/10``, ``10-40/10``), ``?`` in exactly one of Day-of-month and Day-of-week, month names
  JAN-DEC, day names SUN-SAT (SUN = 1 ... SAT = 7), years 1970-2199. Day-of-month also takes
  ``L`` (last day), ``LW`` (last weekday) and ``15W`` (the weekday nearest the 15th, never leaving
  the month); Day-of-week takes ``L`` (Saturday, the last day of the week), ``6L`` (the last
  Friday of the month) and ``6#3`` (the third Friday). ``L``, ``W`` and ``#`` stand alone in their
  field, as AWS requires for ``#``. Names and letters are case-insensitive, as in Quartz.
- ``at(yyyy-mm-ddThh:mm:ss)``: one occurrence (EventBridge Scheduler's one-time schedules).

Day-of-month values a month does not have (31 in April, ``30W`` in February) do not fire that
month. An expression that can never fire again (``cron(0 0 30 2 ? *)``, a past year) makes
``next_fire`` return None.

``parse_schedule(expression, allow_seconds=True)`` also accepts ``rate(N second(s))``; AWS has no
such unit, the gateway's own tests use it to watch many occurrences in a few seconds.
"""

from __future__ import annotations

import calendar
import re
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

__all__ = [
    "AtSchedule",
    "CronSchedule",
    "RateSchedule",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_YEAR = 1970
MAX_YEAR = 2199
_ONE_MINUTE = timedelta(minutes=1)


class ScheduleError(ValueError):
    """An invalid schedule expression; the message names the expression and what is wrong."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f'invalid schedule expression "{expression}": {reason}')
        self.expression = expression
        self.reason = reason


class Schedule(ABC):
    """When a trigger fires: occurrences are instants in UTC."""

    expression: str

    @abstractmethod
    def next_fire(self, after: datetime) -> datetime | None:
        """The first occurrence strictly after `after` (an aware datetime), in UTC; None if none."""


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a schedule needs an aware datetime (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


# --- rate ------------------------------------------------------------------------------------------

_RATE_UNITS: dict[str, tuple[timedelta, bool]] = {
    "minute": (timedelta(minutes=1), False),
    "hour": (timedelta(hours=1), False),
    "day": (timedelta(days=1), False),
    "second": (timedelta(seconds=1), True),  # not AWS: only with allow_seconds
}
_RATE_BODY = re.compile(r"(\S+) +(\S+)")


@dataclass(frozen=True)
class RateSchedule(Schedule):
    """Every `period`, at the instants anchor + k * period (anchor: the Unix epoch)."""

    period: timedelta
    expression: str = ""
    anchor: datetime = EPOCH

    def __post_init__(self) -> None:
        if self.period <= timedelta(0):
            raise ValueError(f"a rate's period must be positive, got {self.period}")
        if not self.expression:
            object.__setattr__(self, "expression", f"rate({self.period})")

    def next_fire(self, after: datetime) -> datetime | None:
        # Whole microseconds, so no floating-point rounding can land an occurrence at or before `after`.
        elapsed = _microseconds(_utc(after) - _utc(self.anchor))
        period = _microseconds(self.period)
        periods = elapsed // period + 1
        try:
            return _utc(self.anchor) + timedelta(microseconds=periods * period)
        except OverflowError:
            return None


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _parse_rate(expression: str, body: str, allow_seconds: bool) -> RateSchedule:
    match = _RATE_BODY.fullmatch(body.strip())
    if match is None:
        raise ScheduleError(expression, 'expected "rate(value unit)", for example "rate(5 minutes)"')
    value_text, unit = match.groups()
    if not value_text.isdigit() or int(value_text) == 0:
        raise ScheduleError(expression, f'the rate value must be a positive integer, got "{value_text}"')
    value = int(value_text)
    singular = unit[:-1] if unit.endswith("s") else unit
    known = _RATE_UNITS.get(singular)
    if known is None or (known[1] and not allow_seconds):
        raise ScheduleError(
            expression, f'unknown rate unit "{unit}" (minute, minutes, hour, hours, day or days)'
        )
    if value == 1 and unit != singular:
        raise ScheduleError(expression, f'a rate of 1 takes the singular unit: "rate(1 {singular})"')
    if value > 1 and unit == singular:
        raise ScheduleError(expression, f'a rate above 1 takes the plural unit: "rate({value} {singular}s)"')
    try:
        period = known[0] * value
    except OverflowError:
        raise ScheduleError(expression, f"the rate value {value} is too large") from None
    return RateSchedule(period=period, expression=expression)


# --- at --------------------------------------------------------------------------------------------

_AT_BODY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


@dataclass(frozen=True)
class AtSchedule(Schedule):
    """One occurrence at `moment`."""

    moment: datetime
    expression: str = ""

    def next_fire(self, after: datetime) -> datetime | None:
        return self.moment if _utc(after) < self.moment else None


def _parse_at(expression: str, body: str) -> AtSchedule:
    if _AT_BODY.fullmatch(body) is None:
        raise ScheduleError(
            expression, 'expected "at(yyyy-mm-ddThh:mm:ss)", for example "at(2030-01-31T08:00:00)"'
        )
    try:
        moment = datetime.fromisoformat(body).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ScheduleError(expression, f"not a valid date and time: {exc}") from None
    return AtSchedule(moment=moment, expression=expression)


# --- cron ------------------------------------------------------------------------------------------

_MONTH_NAMES = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
)}  # fmt: skip
_DAY_NAMES = {name: number for number, name in enumerate(
    ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1
)}  # fmt: skip
_SATURDAY = 7


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)
    wraps: bool = True


_MINUTES = _FieldSpec("Minutes", 0, 59)
_HOURS = _FieldSpec("Hours", 0, 23)
_DAY_OF_MONTH = _FieldSpec("Day-of-month", 1, 31)
_MONTH = _FieldSpec("Month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _FieldSpec("Day-of-week", 1, 7, _DAY_NAMES)
_YEAR = _FieldSpec("Year", MIN_YEAR, MAX_YEAR, wraps=False)
_FIELD_ORDER = "Minutes Hours Day-of-month Month Day-of-week Year"


class _FieldError(Exception):
    pass


def _aws_weekday(day: date) -> int:
    """SUN = 1 ... SAT = 7, as cron's Day-of-week counts (Python counts MON = 0 ... SUN = 6)."""
    return (day.weekday() + 1) % 7 + 1


# A day rule answers: which days of this month match? (sorted)
DayRule = Callable[[int, int], Sequence[int]]


def _month_length(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _days_of_month(days: frozenset[int]) -> DayRule:
    ordered = sorted(days)

    def rule(year: int, month: int) -> Sequence[int]:
        length = _month_length(year, month)
        return [day for day in ordered if day <= length]

    return rule


def _last_day_of_month(year: int, month: int) -> Sequence[int]:
    return [_month_length(year, month)]


def _last_weekday_of_month(year: int, month: int) -> Sequence[int]:
    day = _month_length(year, month)
    while _aws_weekday(date(year, month, day)) in (1, _SATURDAY):
        day -= 1
    return [day]


def _nearest_weekday(target: int) -> DayRule:
    def rule(year: int, month: int) -> Sequence[int]:
        length = _month_length(year, month)
        if target > length:
            return []
        weekday = _aws_weekday(date(year, month, target))
        if weekday == _SATURDAY:  # Friday before, unless that leaves the month: then Monday after
            return [target - 1] if target > 1 else [target + 2]
        if weekday == 1:  # Sunday: Monday after, unless that leaves the month: then Friday before
            return [target + 1] if target < length else [target - 2]
        return [target]

    return rule


def _days_of_week(weekdays: frozenset[int]) -> DayRule:
    def rule(year: int, month: int) -> Sequence[int]:
        first = _aws_weekday(date(year, month, 1))
        return [
            day for day in range(1, _month_length(year, month) + 1) if (first + day - 2) % 7 + 1 in weekdays
        ]

    return rule


def _last_weekday_in_month(weekday: int) -> DayRule:
    def rule(year: int, month: int) -> Sequence[int]:
        last = _month_length(year, month)
        back = (_aws_weekday(date(year, month, last)) - weekday) % 7
        return [last - back]

    return rule


def _nth_weekday_in_month(weekday: int, nth: int) -> DayRule:
    def rule(year: int, month: int) -> Sequence[int]:
        first = (weekday - _aws_weekday(date(year, month, 1))) % 7 + 1
        day = first + 7 * (nth - 1)
        return [day] if day <= _month_length(year, month) else []

    return rule


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A parsed ``cron(...)``; build it with parse_schedule."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...]
    days: DayRule

    def next_fire(self, after: datetime) -> datetime | None:
        moment = _utc(after)
        if moment.year > MAX_YEAR:
            return None
        start = moment.replace(second=0, microsecond=0) + _ONE_MINUTE
        year0, month0, day0, hour0, minute0 = start.year, start.month, start.day, start.hour, start.minute
        # Walk the fields from the largest: while a field sits at the start's own value the smaller
        # fields must not go below the start's; once it is past, they begin at their lowest.
        for year in _at_least(self.years, year0):
            same_year = year == year0
            for month in _at_least(self.months, month0 if same_year else 1):
                same_month = same_year and month == month0
                for day in _at_least(self.days(year, month), day0 if same_month else 1):
                    same_day = same_month and day == day0
                    for hour in _at_least(self.hours, hour0 if same_day else 0):
                        same_hour = same_day and hour == hour0
                        for minute in _at_least(self.minutes, minute0 if same_hour else 0):
                            return datetime(year, month, day, hour, minute, tzinfo=UTC)
        return None


def _at_least(values: Sequence[int], low: int) -> Iterator[int]:
    for index in range(bisect_left(values, low), len(values)):
        yield values[index]


def _value(spec: _FieldSpec, text: str) -> int:
    number = spec.names.get(text) if spec.names else None
    if number is not None:
        return number
    if not text.isdigit():
        names = f" or a name {next(iter(spec.names))}-{list(spec.names)[-1]}" if spec.names else ""
        raise _FieldError(f'"{text}" is not a number {spec.low}-{spec.high}{names}')
    number = int(text)
    if not spec.low <= number <= spec.high:
        raise _FieldError(f"{number} is out of range {spec.low}-{spec.high}")
    return number


def _values(spec: _FieldSpec, text: str) -> frozenset[int]:
    """The values of a plain field: a list of *, n, a-b, each with an optional /step."""
    chosen: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _FieldError(f'empty list item in "{text}"')
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not 1 <= int(step_text) <= spec.high - spec.low + 1:
                span = spec.high - spec.low + 1
                raise _FieldError(f'the step in "{item}" must be a whole number from 1 to {span}')
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(spec, first), _value(spec, last)
            if high < low and not spec.wraps:
                raise _FieldError(f'the range "{base}" runs backwards')
        else:
            low = _value(spec, base)
            high = spec.high if slash else low  # "5/15": from 5 to the end, every 15
        span = (high - low) % (spec.high - spec.low + 1) if high < low else high - low
        for offset in range(0, span + 1, step):
            chosen.add(spec.low + (low - spec.low + offset) % (spec.high - spec.low + 1))
    return frozenset(chosen)


def _sorted_values(spec: _FieldSpec, text: str) -> tuple[int, ...]:
    _reject_day_only_syntax(spec, text)
    return tuple(sorted(_values(spec, text)))


def _reject_day_only_syntax(spec: _FieldSpec, text: str) -> None:
    letters = text
    for name in spec.names:  # "JUL" holds an L that is no "L" wildcard
        letters = letters.replace(name, "")
    for symbol, fields in (("?", "Day-of-month or Day-of-week"), ("L", "Day-of-month or Day-of-week"),
                           ("W", "Day-of-month"), ("#", "Day-of-week")):  # fmt: skip
        if symbol in letters:
            raise _FieldError(f'"{symbol}" is only allowed in {fields}')


def _day_of_month_rule(text: str) -> DayRule:
    if text == "L":
        return _last_day_of_month
    if text == "LW":
        return _last_weekday_of_month
    if "L" in text:
        raise _FieldError('"L" must stand alone ("L" or "LW")')
    if "#" in text:
        raise _FieldError('"#" is only allowed in Day-of-week')
    if "W" in text:
        target = text[:-1]
        if not text.endswith("W") or not target.isdigit() or "," in text:
            raise _FieldError(f'"W" must follow a single day, as in "15W", got "{text}"')
        return _nearest_weekday(_value(_DAY_OF_MONTH, target))
    return _days_of_month(_values(_DAY_OF_MONTH, text))


def _day_of_week_rule(text: str) -> DayRule:
    if "#" in text:
        weekday_text, _, nth_text = text.partition("#")
        if "," in text or not nth_text.isdigit() or not 1 <= int(nth_text) <= 5:
            raise _FieldError(f'"#" takes one day and an occurrence 1-5, as in "6#3", got "{text}"')
        return _nth_weekday_in_month(_value(_DAY_OF_WEEK, weekday_text), int(nth_text))
    if text == "L":
        return _days_of_week(frozenset({_SATURDAY}))
    if text.endswith("L"):
        weekday_text = text[:-1]
        if "," in text or "-" in text or "/" in text or "L" in weekday_text:
            raise _FieldError(f'"L" takes one day, as in "6L", got "{text}"')
        return _last_weekday_in_month(_value(_DAY_OF_WEEK, weekday_text))
    if "L" in text:
        raise _FieldError(f'"L" takes one day, as in "6L", got "{text}"')
    if "W" in text.replace("WED", ""):
        raise _FieldError('"W" is only allowed in Day-of-month')
    return _days_of_week(_values(_DAY_OF_WEEK, text))


def _parse_cron(expression: str, body: str) -> CronSchedule:
    fields = body.upper().split()
    if len(fields) != 6:
        raise ScheduleError(expression, f"cron takes 6 fields ({_FIELD_ORDER}), got {len(fields)}")
    minutes, hours, day_of_month, month, day_of_week, year = fields
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ScheduleError(
            expression, 'exactly one of Day-of-month and Day-of-week must be "?" (the other sets the days)'
        )
    current = _MINUTES
    try:
        minute_values = _sorted_values(_MINUTES, minutes)
        current = _HOURS
        hour_values = _sorted_values(_HOURS, hours)
        current = _MONTH
        month_values = _sorted_values(_MONTH, month)
        current = _YEAR
        year_values = _sorted_values(_YEAR, year)
        if day_of_week == "?":
            current = _DAY_OF_MONTH
            days = _day_of_month_rule(day_of_month)
        else:
            current = _DAY_OF_WEEK
            days = _day_of_week_rule(day_of_week)
    except _FieldError as exc:
        raise ScheduleError(expression, f"{current.name} field: {exc}") from None
    return CronSchedule(
        expression=expression,
        minutes=minute_values,
        hours=hour_values,
        months=month_values,
        years=year_values,
        days=days,
    )


# --- entry point -----------------------------------------------------------------------------------

_EXPRESSION = re.compile(r"(rate|cron|at)\((.*)\)", re.DOTALL)


def parse_schedule(expression: str, *, allow_seconds: bool = False) -> Schedule:
    """Parse an EventBridge schedule expression; raises ScheduleError with a precise message."""
    match = _EXPRESSION.fullmatch(expression.strip())
    if match is None:
        raise ScheduleError(
            expression, 'expected "rate(value unit)", "cron(fields)" or "at(yyyy-mm-ddThh:mm:ss)"'
        )
    kind, body = match.groups()
    if kind == "rate":
        return _parse_rate(expression, body, allow_seconds)
    if kind == "at":
        return _parse_at(expression, body)
    return _parse_cron(expression, body)
