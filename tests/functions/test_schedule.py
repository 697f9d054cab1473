"""EventBridge schedule expressions: next fire times checked against hand-computed calendars,
exact error messages, and a property test against an independent per-minute matcher."""

# ruff: noqa: E501  (the tables read best one case per line)

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.functions.schedule import (
    CronSchedule,
    RateSchedule,
    ScheduleError,
    parse_schedule,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, after: datetime, count: int) -> list[datetime | None]:
    """The next `count` occurrences, chained; a None (the schedule ended) stops the list."""
    schedule = parse_schedule(expression)
    found: list[datetime | None] = []
    moment: datetime | None = after
    while moment is not None and len(found) < count:
        moment = schedule.next_fire(moment)
        found.append(moment)
    return found


# (expression, after, the next occurrences; "END" = next_fire returns None there)
# Worked out with a printed calendar of each month: 2024-01-01 is a Monday, 2024 is a leap year.
NEXT_FIRES: list[tuple[str, str, list[str]]] = [
    # rates are aligned to the Unix epoch, and "after" is strict
    ("rate(5 minutes)", "2024-01-01T00:07:30", ["2024-01-01T00:10", "2024-01-01T00:15", "2024-01-01T00:20"]),
    ("rate(1 minute)", "2024-01-01T00:00:59.999999", ["2024-01-01T00:01", "2024-01-01T00:02"]),
    ("rate(1 hour)", "2024-01-01T01:00:00", ["2024-01-01T02:00", "2024-01-01T03:00"]),
    ("rate(1 day)", "2024-02-28T12:00:00", ["2024-02-29T00:00", "2024-03-01T00:00"]),
    ("rate(90 minutes)", "1970-01-01T02:00:00", ["1970-01-01T03:00", "1970-01-01T04:30"]),
    ("rate(7 days)", "1970-01-01T00:00:00", ["1970-01-08T00:00", "1970-01-15T00:00"]),
    # plain fields
    ("cron(0 2 * * ? *)", "2024-03-10T01:59:59", ["2024-03-10T02:00", "2024-03-11T02:00"]),
    ("cron(1/10 * * * ? *)", "2024-01-01T00:00", ["2024-01-01T00:01", "2024-01-01T00:11", "2024-01-01T00:21"]),
    ("cron(*/20 * * * ? *)", "2024-01-01T00:59", ["2024-01-01T01:00", "2024-01-01T01:20"]),
    ("cron(10-40/15 3 * * ? *)", "2024-01-01T03:10", ["2024-01-01T03:25", "2024-01-01T03:40", "2024-01-02T03:10"]),
    ("cron(0,30 9 1,15 * ? *)", "2024-01-01T09:30", ["2024-01-15T09:00", "2024-01-15T09:30", "2024-02-01T09:00"]),
    # Friday 17:50 -> Monday 08:00 (2024-03-08 is a Friday)
    ("cron(0/15 8-17 ? * MON-FRI *)", "2024-03-08T17:50", ["2024-03-11T08:00", "2024-03-11T08:15"]),
    ("cron(30 23 31 12 ? *)", "2024-12-31T23:30", ["2025-12-31T23:30", "2026-12-31T23:30"]),
    ("cron(0 0 31 * ? *)", "2024-04-01T00:00", ["2024-05-31T00:00", "2024-07-31T00:00", "2024-08-31T00:00"]),
    ("cron(0 0 29 2 ? *)", "2024-03-01T00:00", ["2028-02-29T00:00", "2032-02-29T00:00"]),
    # names, any case; Mondays in January and July 2024/2025
    ("cron(0 9 ? jan,jul mon 2024-2025)", "2024-01-15T09:00", ["2024-01-22T09:00", "2024-01-29T09:00", "2024-07-01T09:00"]),
    ("cron(0 0 1 JUL ? *)", "2024-01-01T00:00", ["2024-07-01T00:00", "2025-07-01T00:00"]),
    # ranges that wrap: hours 22,23,0,1,2 on Fridays to Mondays (2024-03-07 is a Thursday)
    ("cron(0 22-2 ? * FRI-MON *)", "2024-03-07T12:00", [
        "2024-03-08T00:00", "2024-03-08T01:00", "2024-03-08T02:00", "2024-03-08T22:00", "2024-03-08T23:00",
        "2024-03-09T00:00",
    ]),
    # L: last day of the month; LW: last weekday (2024-03-31 is a Sunday, 2024-08-31 a Saturday)
    ("cron(0 12 L * ? *)", "2024-02-01T00:00", ["2024-02-29T12:00", "2024-03-31T12:00", "2024-04-30T12:00"]),
    ("cron(0 12 LW * ? *)", "2024-03-01T00:00", ["2024-03-29T12:00", "2024-04-30T12:00", "2024-05-31T12:00"]),
    ("cron(0 12 LW * ? *)", "2024-08-01T00:00", ["2024-08-30T12:00"]),
    # W: the nearest weekday, never leaving the month
    ("cron(0 9 1W * ? *)", "2024-05-31T00:00", ["2024-06-03T09:00", "2024-07-01T09:00", "2024-08-01T09:00"]),
    ("cron(0 9 1W * ? *)", "2024-08-02T00:00", ["2024-09-02T09:00"]),  # Sunday the 1st -> Monday
    ("cron(0 9 31W * ? *)", "2024-03-01T00:00", ["2024-03-29T09:00", "2024-05-31T09:00"]),  # no April 31
    ("cron(0 9 15W * ? *)", "2024-06-01T00:00", ["2024-06-14T09:00", "2024-07-15T09:00", "2024-08-15T09:00"]),
    ("cron(0 9 15W * ? *)", "2024-09-01T00:00", ["2024-09-16T09:00"]),  # Sunday the 15th -> Monday
    # Day-of-week L: Saturday; 6L: the last Friday; 3#2: the second Tuesday; MON#5: fifth Monday
    ("cron(0 0 ? * L *)", "2024-01-01T00:00", ["2024-01-06T00:00", "2024-01-13T00:00"]),
    ("cron(0 9 ? * 6L *)", "2024-01-01T00:00", ["2024-01-26T09:00", "2024-02-23T09:00", "2024-03-29T09:00"]),
    ("cron(0 9 ? * 3#2 *)", "2024-01-01T00:00", ["2024-01-09T09:00", "2024-02-13T09:00", "2024-03-12T09:00"]),
    ("cron(0 0 ? * MON#5 *)", "2024-01-01T00:00", ["2024-01-29T00:00", "2024-04-29T00:00", "2024-07-29T00:00"]),
    ("cron(0 0 ? * 1 *)", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),  # 1 = Sunday
    ("cron(0 0 ? * 7 *)", "2024-01-01T00:00", ["2024-01-06T00:00"]),  # 7 = Saturday
    # schedules that end
    ("cron(0 0 1 1 ? 2199)", "2199-01-01T00:00", ["END"]),
    ("cron(0 0 1 1 ? 2020)", "2024-01-01T00:00", ["END"]),
    ("cron(0 0 30 2 ? *)", "2024-01-01T00:00", ["END"]),
    ("cron(59 23 31 12 ? 2199)", "2199-12-31T23:58", ["2199-12-31T23:59", "END"]),
    ("at(2030-01-31T08:00:00)", "2024-01-01T00:00", ["2030-01-31T08:00", "END"]),
    ("at(2030-01-31T08:00:00)", "2030-01-31T08:00", ["END"]),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "after", "expected"), NEXT_FIRES)
def test_next_fires(expression: str, after: str, expected: list[str]) -> None:
    assert fires(expression, utc(after), len(expected)) == [
        None if text == "END" else utc(text) for text in expected
    ]


def test_times_are_utc_whatever_the_zone_of_after() -> None:
    new_york = ZoneInfo("America/New_York")
    # 2024-03-10 00:00 EST is 05:00Z: the 02:00Z fire of that day has passed (and 02:00 New York
    # time does not exist that day: it does not matter, the schedule is UTC).
    after = datetime(2024, 3, 10, 0, 0, tzinfo=new_york)
    assert fires("cron(0 2 * * ? *)", after, 2) == [utc("2024-03-11T02:00"), utc("2024-03-12T02:00")]
    # Across the November change the fires stay 24 hours apart in UTC.
    after = datetime(2024, 11, 3, 1, 30, tzinfo=new_york, fold=0)  # 05:30Z
    result = fires("cron(30 6 * * ? *)", after, 2)
    assert result == [utc("2024-11-03T06:30"), utc("2024-11-04T06:30")]
    assert all(moment is not None and moment.tzinfo is UTC for moment in result)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        parse_schedule("rate(5 minutes)").next_fire(datetime(2024, 1, 1))


def test_seconds_only_when_allowed() -> None:
    schedule = parse_schedule("rate(2 seconds)", allow_seconds=True)
    assert isinstance(schedule, RateSchedule)
    assert schedule.period == timedelta(seconds=2)
    assert schedule.next_fire(utc("2024-01-01T00:00:01")) == utc("2024-01-01T00:00:02")
    assert parse_schedule("rate(1 second)", allow_seconds=True).next_fire(
        utc("2024-01-01T00:00:00.5")
    ) == utc("2024-01-01T00:00:01")
    with pytest.raises(ScheduleError):
        parse_schedule("rate(1 seconds)", allow_seconds=True)
    with pytest.raises(ScheduleError):
        parse_schedule("rate(2 seconds)")


def test_sub_minute_rate_object() -> None:
    schedule = RateSchedule(period=timedelta(milliseconds=250))
    assert schedule.next_fire(utc("2024-01-01T00:00:00.100")) == utc("2024-01-01T00:00:00.250")
    assert schedule.next_fire(utc("2024-01-01T00:00:00.250")) == utc("2024-01-01T00:00:00.500")
    with pytest.raises(ValueError, match="positive"):
        RateSchedule(period=timedelta(0))


def _err(expression: str, reason: str) -> tuple[str, str]:
    return expression, f'invalid schedule expression "{expression}": {reason}'


INVALID: list[tuple[str, str]] = [
    _err("every 5 minutes", 'expected "rate(value unit)", "cron(fields)" or "at(yyyy-mm-ddThh:mm:ss)"'),
    _err("cron 0 2 * * ? *", 'expected "rate(value unit)", "cron(fields)" or "at(yyyy-mm-ddThh:mm:ss)"'),
    _err("rate(1 minutes)", 'a rate of 1 takes the singular unit: "rate(1 minute)"'),
    _err("rate(1 hours)", 'a rate of 1 takes the singular unit: "rate(1 hour)"'),
    _err("rate(5 hour)", 'a rate above 1 takes the plural unit: "rate(5 hours)"'),
    _err("rate(2 day)", 'a rate above 1 takes the plural unit: "rate(2 days)"'),
    _err("rate(0 minutes)", 'the rate value must be a positive integer, got "0"'),
    _err("rate(-5 minutes)", 'the rate value must be a positive integer, got "-5"'),
    _err("rate(1.5 hours)", 'the rate value must be a positive integer, got "1.5"'),
    _err("rate(5 weeks)", 'unknown rate unit "weeks" (minute, minutes, hour, hours, day or days)'),
    _err("rate(30 seconds)", 'unknown rate unit "seconds" (minute, minutes, hour, hours, day or days)'),
    _err("rate(5)", 'expected "rate(value unit)", for example "rate(5 minutes)"'),
    _err("cron(0 * * * ?)", "cron takes 6 fields (Minutes Hours Day-of-month Month Day-of-week Year), got 5"),
    _err("cron(0 0 * * ? * *)", "cron takes 6 fields (Minutes Hours Day-of-month Month Day-of-week Year), got 7"),
    _err("cron(0 2 * * * *)", 'exactly one of Day-of-month and Day-of-week must be "?" (the other sets the days)'),
    _err("cron(0 2 ? * ? *)", 'exactly one of Day-of-month and Day-of-week must be "?" (the other sets the days)'),
    _err("cron(0 2 1 * MON *)", 'exactly one of Day-of-month and Day-of-week must be "?" (the other sets the days)'),
    _err("cron(60 * * * ? *)", "Minutes field: 60 is out of range 0-59"),
    _err("cron(0 24 * * ? *)", "Hours field: 24 is out of range 0-23"),
    _err("cron(0 0 32 * ? *)", "Day-of-month field: 32 is out of range 1-31"),
    _err("cron(0 0 0 * ? *)", "Day-of-month field: 0 is out of range 1-31"),
    _err("cron(0 0 1 13 ? *)", "Month field: 13 is out of range 1-12"),
    _err("cron(0 0 ? * 8 *)", "Day-of-week field: 8 is out of range 1-7"),
    _err("cron(0 0 ? * 0 *)", "Day-of-week field: 0 is out of range 1-7"),
    _err("cron(0 0 * * ? 1969)", "Year field: 1969 is out of range 1970-2199"),
    _err("cron(0 0 * * ? 2200)", "Year field: 2200 is out of range 1970-2199"),
    _err("cron(0 0 * * ? 2199-2000)", 'Year field: the range "2199-2000" runs backwards'),
    _err("cron(0 0 * FOO ? *)", 'Month field: "FOO" is not a number 1-12 or a name JAN-DEC'),
    _err("cron(0 0 ? * FUN *)", 'Day-of-week field: "FUN" is not a number 1-7 or a name SUN-SAT'),
    _err("cron(x 0 * * ? *)", 'Minutes field: "X" is not a number 0-59'),
    _err("cron(0 0 1- * ? *)", 'Day-of-month field: "" is not a number 1-31'),
    _err("cron(0 0 1,,2 * ? *)", 'Day-of-month field: empty list item in "1,,2"'),
    _err("cron(*/0 * * * ? *)", 'Minutes field: the step in "*/0" must be a whole number from 1 to 60'),
    _err("cron(0/61 * * * ? *)", 'Minutes field: the step in "0/61" must be a whole number from 1 to 60'),
    _err("cron(0 */x * * ? *)", 'Hours field: the step in "*/X" must be a whole number from 1 to 24'),
    _err("cron(? 0 * * ? *)", 'Minutes field: "?" is only allowed in Day-of-month or Day-of-week'),
    _err("cron(0 L * * ? *)", 'Hours field: "L" is only allowed in Day-of-month or Day-of-week'),
    _err("cron(0 0 * 5W ? *)", 'Month field: "W" is only allowed in Day-of-month'),
    _err("cron(0 0 * * ? 2#2)", 'Year field: "#" is only allowed in Day-of-week'),
    _err("cron(0 0 ? * 1W *)", 'Day-of-week field: "W" is only allowed in Day-of-month'),
    _err("cron(0 0 1#2 * ? *)", 'Day-of-month field: "#" is only allowed in Day-of-week'),
    _err("cron(0 0 L-3 * ? *)", 'Day-of-month field: "L" must stand alone ("L" or "LW")'),
    _err("cron(0 0 1,15W * ? *)", 'Day-of-month field: "W" must follow a single day, as in "15W", got "1,15W"'),
    _err("cron(0 0 W * ? *)", 'Day-of-month field: "W" must follow a single day, as in "15W", got "W"'),
    _err("cron(0 0 32W * ? *)", "Day-of-month field: 32 is out of range 1-31"),
    _err("cron(0 0 ? * 3#1,6#3 *)", 'Day-of-week field: "#" takes one day and an occurrence 1-5, as in "6#3", got "3#1,6#3"'),
    _err("cron(0 0 ? * 2#6 *)", 'Day-of-week field: "#" takes one day and an occurrence 1-5, as in "6#3", got "2#6"'),
    _err("cron(0 0 ? * 2#0 *)", 'Day-of-week field: "#" takes one day and an occurrence 1-5, as in "6#3", got "2#0"'),
    _err("cron(0 0 ? * 9#1 *)", "Day-of-week field: 9 is out of range 1-7"),
    _err("cron(0 0 ? * 2L,3L *)", 'Day-of-week field: "L" takes one day, as in "6L", got "2L,3L"'),
    _err("cron(0 0 ? * 2-6L *)", 'Day-of-week field: "L" takes one day, as in "6L", got "2-6L"'),
    _err("at(2030-01-31)", 'expected "at(yyyy-mm-ddThh:mm:ss)", for example "at(2030-01-31T08:00:00)"'),
    _err("at(2030-02-30T00:00:00)", "not a valid date and time: day is out of range for month"),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "message"), INVALID)
def test_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression)
    assert str(caught.value) == message
    assert caught.value.expression == expression


# --- property: next_fire against an independent matcher ------------------------------------------


@dataclass(frozen=True)
class CronSpec:
    """A cron expression drawn as values, with its text rendered from them."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    years: frozenset[int]
    day_text: str  # the Day-of-month or Day-of-week item, interpreted by day_matches


def _field_items(draw: st.DrawFn, low: int, high: int) -> tuple[str, frozenset[int]]:
    """A list field: each item a value, a range, a start/step or a */step, with its value set."""
    texts: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "range", "start-step", "star-step", "star"]))
        a = draw(st.integers(low, high))
        if kind == "value":
            texts.append(str(a))
            values.add(a)
        elif kind == "range":
            b = draw(st.integers(a, high))
            texts.append(f"{a}-{b}")
            values.update(range(a, b + 1))
        elif kind == "start-step":
            step = draw(st.integers(1, high - low + 1))
            texts.append(f"{a}/{step}")
            values.update(range(a, high + 1, step))
        elif kind == "star-step":
            step = draw(st.integers(1, high - low + 1))
            texts.append(f"*/{step}")
            values.update(range(low, high + 1, step))
        else:
            texts.append("*")
            values.update(range(low, high + 1))
    return ",".join(texts), frozenset(values)


DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@st.composite
def cron_specs(draw: st.DrawFn) -> CronSpec:
    minute_text, minutes = _field_items(draw, 0, 59)
    hour_text, hours = _field_items(draw, 0, 23)
    month_text, months = _field_items(draw, 1, 12)
    if draw(st.booleans()):
        year_text, years = "*", frozenset(range(1970, 2200))
    else:
        first = draw(st.integers(1970, 2190))
        last = draw(st.integers(first, 2199))
        year_text, years = f"{first}-{last}", frozenset(range(first, last + 1))
    day_kind = draw(st.sampled_from(["dom", "L", "LW", "W", "dow", "downame", "nL", "#"]))
    if day_kind == "dom":
        dom, _ = _field_items(draw, 1, 31)
        day_fields, day_text = f"{dom} {month_text} ?", f"dom:{dom}"
    elif day_kind in ("L", "LW"):
        day_fields, day_text = f"{day_kind} {month_text} ?", day_kind
    elif day_kind == "W":
        target = draw(st.integers(1, 31))
        day_fields, day_text = f"{target}W {month_text} ?", f"W:{target}"
    elif day_kind == "dow":
        dow, _ = _field_items(draw, 1, 7)
        day_fields, day_text = f"? {month_text} {dow}", f"dow:{dow}"
    elif day_kind == "downame":
        a, b = sorted((draw(st.integers(1, 7)), draw(st.integers(1, 7))))
        day_fields, day_text = f"? {month_text} {DAY_NAMES[a - 1]}-{DAY_NAMES[b - 1]}", f"dow:{a}-{b}"
    elif day_kind == "nL":
        weekday = draw(st.integers(1, 7))
        day_fields, day_text = f"? {month_text} {weekday}L", f"nL:{weekday}"
    else:
        weekday, nth = draw(st.integers(1, 7)), draw(st.integers(1, 5))
        day_fields, day_text = f"? {month_text} {weekday}#{nth}", f"#:{weekday}:{nth}"
    text = f"cron({minute_text} {hour_text} {day_fields} {year_text})"
    return CronSpec(text, minutes, hours, months, years, day_text)


def _list_values(text: str, low: int, high: int) -> set[int]:
    """The oracle's own reading of a plain list field (the generator only makes these forms)."""
    values: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        first, last = (low, high) if base == "*" else (int(base.split("-")[0]), int(base.split("-")[-1]))
        if step:
            last = high if "-" not in base else last
        values.update(range(first, last + 1, int(step or 1)))
    return values


def _sunday_one(day: date) -> int:
    return {6: 1, 0: 2, 1: 3, 2: 4, 3: 5, 4: 6, 5: 7}[day.weekday()]


def day_matches(day_text: str, day: date) -> bool:
    """Whether `day` is one of the days the Day-of-month/Day-of-week item selects (by definition)."""
    length = calendar.monthrange(day.year, day.month)[1]
    kind, _, rest = day_text.partition(":")
    if kind == "dom":
        return day.day in _list_values(rest, 1, 31)
    if kind == "L":
        return day.day == length
    if kind == "LW":
        later_weekdays = [
            d for d in range(day.day + 1, length + 1) if date(day.year, day.month, d).weekday() < 5
        ]
        return day.weekday() < 5 and not later_weekdays
    if kind == "W":
        target = int(rest)
        if target > length or day.weekday() >= 5:
            return False
        # The weekday closest to the target within the month (ties cannot happen within a month).
        weekdays = [d for d in range(1, length + 1) if date(day.year, day.month, d).weekday() < 5]
        return day.day == min(weekdays, key=lambda d: (abs(d - target), d))
    if kind == "dow":
        return _sunday_one(day) in _list_values(rest, 1, 7)
    if kind == "nL":
        return _sunday_one(day) == int(rest) and day.day + 7 > length
    weekday, nth = (int(part) for part in rest.split(":"))
    return _sunday_one(day) == weekday and (day.day - 1) // 7 + 1 == nth


def minute_matches(spec: CronSpec, moment: datetime) -> bool:
    return (
        moment.second == 0
        and moment.microsecond == 0
        and moment.minute in spec.minutes
        and moment.hour in spec.hours
        and date_matches(spec, moment.date())
    )


def date_matches(spec: CronSpec, day: date) -> bool:
    return day.year in spec.years and day.month in spec.months and day_matches(spec.day_text, day)


moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(spec=cron_specs(), after=moments)
def test_cron_next_fire_is_the_first_matching_minute_after(spec: CronSpec, after: datetime) -> None:
    schedule = parse_schedule(spec.text)
    assert isinstance(schedule, CronSchedule)
    result = schedule.next_fire(after)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if result is not None:
        assert result > after
        assert minute_matches(spec, result)
    # No earlier matching minute (none at all if the result is None): minute by minute on the
    # first and the last day, date by date in between (every matching date has a matching minute).
    last_day = date(2199, 12, 31) if result is None else result.date()
    if start.date() == last_day and result is not None:
        _assert_no_matching_minute(spec, start, result)
        return
    _assert_no_matching_minute(spec, start, _midnight(start.date() + timedelta(days=1)))
    _assert_no_matching_date(spec, start.date() + timedelta(days=1), last_day - timedelta(days=1))
    if result is not None:
        _assert_no_matching_minute(spec, _midnight(result.date()), result)
    elif start.date() < last_day:
        _assert_no_matching_date(spec, last_day, last_day)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _assert_no_matching_minute(spec: CronSpec, start: datetime, end: datetime) -> None:
    if not date_matches(spec, start.date()):
        return
    moment = start
    while moment < end:
        assert not minute_matches(spec, moment), f"{spec.text} matches {moment} before the result"
        moment += timedelta(minutes=1)


def _assert_no_matching_date(spec: CronSpec, first: date, last: date) -> None:
    # Whole years and months that are not selected are skipped: the rest is checked day by day.
    day = first
    while day <= last:
        if day.year not in spec.years:
            day = date(day.year + 1, 1, 1)
            continue
        if day.month not in spec.months:
            day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
            continue
        assert not day_matches(spec.day_text, day), f"{spec.text} matches {day} before the result"
        day += timedelta(days=1)


@settings(max_examples=300, deadline=None)
@given(
    value=st.integers(1, 10_000),
    unit=st.sampled_from(["minute", "hour", "day"]),
    after=moments,
)
def test_rate_next_fire_is_the_next_multiple_of_the_period(value: int, unit: str, after: datetime) -> None:
    expression = f"rate({value} {unit}{'s' if value > 1 else ''})"
    result = parse_schedule(expression).next_fire(after)
    period = timedelta(**{f"{unit}s": value})
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert result is not None
    assert after < result <= after + period
    assert (result - epoch) % period == timedelta(0)
