"""Maintenance window specs: parsing with typed errors, evaluation across midnight and DST, schedules.

Times are built from wall-clock dates in named zones, so each expectation
reads as an operator would state it; Hypothesis checks the evaluation
against a brute-force reading of the local clock.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_server.errors import FleetError, RolloutPlanError
from fleet_server.windows import (
    CronWindow,
    EmptyWindowError,
    Schedule,
    UnknownTimeZoneError,
    WeeklyWindow,
    WindowsNeverOpenError,
    WindowSpecError,
    WindowSyntaxError,
    describe_time,
    parse_window,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def at(  # noqa: PLR0917 - a date and a time, as datetime() takes them
    zone: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0
) -> float:
    """The Unix time of a wall-clock time in ``zone``."""
    return datetime(y, mo, d, h, mi, tzinfo=zone, fold=fold).timestamp()


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp()


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Sun 02:00-04:00 Europe/Paris", "Sun 02:00-04:00 Europe/Paris"),
        ("sat , sun 2:00 - 4:00 utc", "Sat,Sun 02:00-04:00 UTC"),
        ("Sat Sun 02:00-04:00 UTC", "Sat,Sun 02:00-04:00 UTC"),
        ("monday-friday 22:00-06:00 Europe/Paris", "Mon-Fri 22:00-06:00 Europe/Paris"),
        ("Fri-Mon 22:00-06:00 europe/paris", "Mon,Fri-Sun 22:00-06:00 Europe/Paris"),
        ("Mon,Wed,Fri 12:00-13:00 Asia/Tokyo", "Mon,Wed,Fri 12:00-13:00 Asia/Tokyo"),
        ("Mon-Wed,Sat 01:00-02:00 UTC", "Mon-Wed,Sat 01:00-02:00 UTC"),
        ("00:00-24:00 UTC", "daily 00:00-24:00 UTC"),
        ("daily 23:30-00:15 America/New_York", "daily 23:30-00:15 America/New_York"),
        ("* 1:05-2:00 UTC", "daily 01:05-02:00 UTC"),
        ("cron 0 2 * * sun 2h Europe/Paris", "cron 0 2 * * Sun 2h Europe/Paris"),
        (
            "CRON */15 8-17 1,15 jan-mar mon-fri 90m UTC",
            "cron */15 8-17 1,15 Jan-Mar Mon-Fri 1h30m UTC",
        ),
        ("cron 0 0 29 2 * 1d UTC", "cron 0 0 29 2 * 1d UTC"),
        ("cron 30 22 * * 1-5 1d2h3m UTC", "cron 30 22 * * 1-5 1d2h3m UTC"),
    ],
)
def test_specs_parse_to_their_canonical_spelling(text: str, canonical: str) -> None:
    window = parse_window(text)
    assert window.text == canonical == str(window)
    assert parse_window(canonical) == window


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("", WindowSyntaxError, "empty maintenance window"),
        ("   ", WindowSyntaxError, "empty maintenance window"),
        ("Sun 02:00-04:00", WindowSyntaxError, "has no time zone"),
        ("02:00-04:00", WindowSyntaxError, "has no time zone"),
        ("Europe/Paris", WindowSyntaxError, "is not '[DAYS] HH:MM-HH:MM ZONE'"),
        ("Sun 02:00-04:00 Mars/Olympus", UnknownTimeZoneError, "unknown time zone 'Mars/Olympus'"),
        ("Sun 02:00-04:00 localtime", UnknownTimeZoneError, "unknown time zone 'localtime'"),
        ("Sun 02:00-04:00 ../../etc/passwd", UnknownTimeZoneError, "unknown time zone"),
        ("Son 02:00-04:00 UTC", WindowSyntaxError, "unknown weekday 'Son'"),
        ("Mon-Fri-Sat 02:00-04:00 UTC", WindowSyntaxError, "is not a weekday or a range"),
        ("Mon,,Tue 02:00-04:00 UTC", WindowSyntaxError, "is not a weekday or a range"),
        ("Sun 2-4 UTC", WindowSyntaxError, "are not HH:MM-HH:MM"),
        ("Sun 02:00 UTC", WindowSyntaxError, "times '02:00' are not HH:MM-HH:MM"),
        ("Sun 02:00-04:00pm UTC", WindowSyntaxError, "are not HH:MM-HH:MM"),
        ("Sun 25:00-04:00 UTC", WindowSyntaxError, "start time in '25:00-04:00': hour 25"),
        ("Sun 02:00-04:60 UTC", WindowSyntaxError, "end time in '02:00-04:60': minute 60"),
        ("Sun 24:00-02:00 UTC", WindowSyntaxError, "24:00 may only end a window"),
        ("Sun 02:00-24:30 UTC", WindowSyntaxError, "hour 24 is not 00-23"),
        ("Sun 02:00-02:00 UTC", EmptyWindowError, "starts and ends at 02:00"),
        ("Sun 02:00-04:00 UTC " + "x" * 200, WindowSyntaxError, "at most 200"),
        ("cron 0 2 * * Sun 2h", WindowSyntaxError, "no time zone"),
        ("cron 0 2 * * 2h UTC", WindowSyntaxError, "got 6 words after 'cron'"),
        ("cron 60 2 * * Sun 2h UTC", WindowSyntaxError, "cron minute '60': 60 is not 0-59"),
        ("cron 0 24 * * Sun 2h UTC", WindowSyntaxError, "cron hour '24'"),
        ("cron 0 2 0 * * 2h UTC", WindowSyntaxError, "cron day of month '0'"),
        ("cron 0 2 * 13 * 2h UTC", WindowSyntaxError, "cron month '13'"),
        ("cron 0 2 * foo * 2h UTC", WindowSyntaxError, "'foo' is not a number 1-12 or a name"),
        ("cron 0 2 * * 8 2h UTC", WindowSyntaxError, "cron day of week '8'"),
        ("cron 0 2 * * Sat-Sun 2h UTC", WindowSyntaxError, "runs backwards"),
        ("cron */0 2 * * * 2h UTC", WindowSyntaxError, "a step must be at least 1"),
        ("cron 0 2 * * ? 2h UTC", WindowSyntaxError, "is not a number, a name"),
        ("cron 0 2 * * * 2x UTC", WindowSyntaxError, "is not a duration"),
        ("cron 0 2 * * * 0h UTC", EmptyWindowError, "must be 1 minute to 7 days"),
        ("cron 0 2 * * * 8d UTC", WindowSyntaxError, "must be 1 minute to 7 days"),
        ("cron 0 0 30 2 * 1h UTC", EmptyWindowError, "never opens: day 30 of month 2"),
        ("cron 0 0 31 4,6,9,11 * 1h UTC", EmptyWindowError, "never opens"),
        ("cron 0 2 * * Sun 2h Nowhere/Land", UnknownTimeZoneError, "Nowhere/Land"),
    ],
)
def test_bad_specs_raise_typed_errors_naming_the_part(
    text: str, error: type[WindowSpecError], words: str
) -> None:
    with pytest.raises(error) as caught:
        parse_window(text)
    assert words in str(caught.value)
    assert isinstance(caught.value, FleetError)  # a 400 at the API, "error: ..." at the CLI


def test_not_a_string_is_a_syntax_error() -> None:
    with pytest.raises(WindowSyntaxError, match="is text such as"):
        parse_window(42)


def test_feb_30_with_a_weekday_opens_on_the_weekday_as_cron_does() -> None:
    window = parse_window("cron 0 0 30 2 Mon 1h UTC")  # either field: February's Mondays
    assert isinstance(window, CronWindow)
    assert window.is_open(utc(2027, 2, 1, 0, 30))  # a Monday in February
    assert not window.is_open(utc(2027, 2, 2, 0, 30))
    assert not window.is_open(utc(2026, 12, 7, 0, 30))  # a Monday in December


# --- weekly windows -----------------------------------------------------------------


def test_a_sunday_night_window_in_paris() -> None:
    window = parse_window("Sun 02:00-04:00 Europe/Paris")
    assert window.is_open(at(PARIS, 2026, 12, 6, 2, 0))  # Sunday 02:00: opens (included)
    assert window.is_open(at(PARIS, 2026, 12, 6, 3, 59))
    assert not window.is_open(at(PARIS, 2026, 12, 6, 4, 0))  # the end is excluded
    assert not window.is_open(at(PARIS, 2026, 12, 6, 1, 59))
    assert not window.is_open(at(PARIS, 2026, 12, 7, 3, 0))  # Monday
    # Saturday noon: the next opening is Sunday 02:00 Paris time, 01:00 UTC in winter
    assert window.next_open(at(PARIS, 2026, 12, 5, 12)) == utc(2026, 12, 6, 1, 0)
    # inside it, it is open now
    inside = at(PARIS, 2026, 12, 6, 3)
    assert window.next_open(inside) == inside
    opening = window.opening_at(inside)
    assert opening is not None and (opening.start, opening.end) == (
        at(PARIS, 2026, 12, 6, 2),
        at(PARIS, 2026, 12, 6, 4),
    )
    # just after it closes, the next is a week later
    assert window.next_open(at(PARIS, 2026, 12, 6, 4)) == at(PARIS, 2026, 12, 13, 2)


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    window = parse_window("Fri 22:00-06:00 UTC")
    assert window.is_open(utc(2026, 12, 4, 23))  # Friday night
    assert window.is_open(utc(2026, 12, 5, 5, 59))  # Saturday morning, same opening
    assert not window.is_open(utc(2026, 12, 5, 6))
    assert not window.is_open(utc(2026, 12, 4, 5))  # Friday morning: Thursday has no window
    assert not window.is_open(utc(2026, 12, 5, 23))  # Saturday night


def test_midnight_and_whole_days() -> None:
    to_midnight = parse_window("Sat 20:00-24:00 UTC")
    assert to_midnight.is_open(utc(2026, 12, 5, 23, 59))
    assert not to_midnight.is_open(utc(2026, 12, 6, 0, 0))
    also_to_midnight = parse_window("Sat 20:00-00:00 UTC")
    assert also_to_midnight.openings_on(date(2026, 12, 5)) == to_midnight.openings_on(
        date(2026, 12, 5)
    )
    weekend = parse_window("Sat,Sun 00:00-24:00 UTC")
    assert weekend.is_open(utc(2026, 12, 5, 0, 0)) and weekend.is_open(utc(2026, 12, 6, 23, 59))
    assert not weekend.is_open(utc(2026, 12, 7, 0, 0))
    always = parse_window("00:00-24:00 UTC")
    for hours in range(0, 24 * 8, 7):
        assert always.is_open(utc(2026, 12, 1) + hours * 3600.0)


def test_wrapping_weekday_ranges() -> None:
    window = parse_window("Fri-Mon 12:00-13:00 UTC")
    assert isinstance(window, WeeklyWindow) and window.days == (0, 4, 5, 6)
    open_days = {d for d in range(1, 8) if window.is_open(utc(2026, 12, d, 12, 30))}
    assert open_days == {4, 5, 6, 7}  # 2026-12-04 is a Friday ... 2026-12-07 a Monday


def test_spring_forward_in_paris() -> None:
    """29 March 2026: Paris jumps from 02:00 to 03:00."""
    two_to_four = parse_window("Sun 02:00-04:00 Europe/Paris")
    opening = two_to_four.opening_at(at(PARIS, 2026, 3, 29, 3, 30))
    assert opening is not None
    assert opening.start == at(PARIS, 2026, 3, 29, 3, 0) == utc(2026, 3, 29, 1, 0)
    assert opening.end - opening.start == 3600.0  # an hour that night
    # a window inside the skipped hour opens when the clocks jump, for its usual length
    skipped = parse_window("Sun 02:15-02:45 Europe/Paris")
    (inside,) = skipped.openings_on(date(2026, 3, 29))
    assert inside.end - inside.start == 30 * 60.0
    assert inside.start >= at(PARIS, 2026, 3, 29, 3, 0)
    ends_in_gap = parse_window("Sun 02:30-03:00 Europe/Paris")
    (jumped,) = ends_in_gap.openings_on(date(2026, 3, 29))
    assert jumped.end - jumped.start == 30 * 60.0
    # the other Sundays keep their two hours
    (normal,) = two_to_four.openings_on(date(2026, 4, 5))
    assert normal.end - normal.start == 7200.0


def test_fall_back_in_new_york() -> None:
    """1 November 2026: New York goes back from 02:00 to 01:00; 01:30 happens twice."""
    window = parse_window("Sun 01:00-03:00 America/New_York")
    (opening,) = window.openings_on(date(2026, 11, 1))
    assert opening.start == at(NEW_YORK, 2026, 11, 1, 1, 0)  # the first 01:00 (EDT)
    assert opening.end - opening.start == 3 * 3600.0  # three hours that night
    assert window.is_open(at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1))  # the second 01:30
    assert window.next_open(utc(2026, 10, 31, 12)) == utc(2026, 11, 1, 5, 0)  # 01:00 EDT


def test_daily_window_follows_the_zone_across_dst() -> None:
    window = parse_window("daily 12:00-13:00 Europe/Paris")
    assert window.next_open(utc(2026, 3, 28, 12, 30)) == utc(2026, 3, 29, 10, 0)  # CEST now
    assert window.is_open(utc(2026, 3, 28, 11, 30))  # CET: 12:30 Paris


# --- cron windows -------------------------------------------------------------------


def test_cron_every_sunday_at_two_for_two_hours() -> None:
    window = parse_window("cron 0 2 * * Sun 2h Europe/Paris")
    weekly = parse_window("Sun 02:00-04:00 Europe/Paris")
    for hours in range(0, 24 * 15, 5):
        t = at(PARIS, 2026, 12, 1) + hours * 3600.0 + 1234.0
        assert window.is_open(t) == weekly.is_open(t)
        assert window.next_open(t) == weekly.next_open(t)


def test_cron_fields_steps_lists_and_both_day_fields() -> None:
    window = parse_window("cron */20 9,17 1 * Wed 10m UTC")
    assert isinstance(window, CronWindow)
    assert window.minutes == (0, 20, 40) and window.hours == (9, 17)
    assert window.day_rule_or  # the 1st of the month or a Wednesday
    assert window.is_open(utc(2026, 12, 1, 9, 25))  # Tuesday the 1st
    assert window.is_open(utc(2026, 12, 2, 17, 45))  # a Wednesday
    assert not window.is_open(utc(2026, 12, 3, 9, 5))  # Thursday the 3rd
    assert not window.is_open(utc(2026, 12, 2, 9, 15))  # between openings
    step_from = parse_window("cron 5/20 * * * * 1m UTC")
    assert isinstance(step_from, CronWindow) and step_from.minutes == (5, 25, 45)
    sunday_as_seven = parse_window("cron 0 0 * * 7 1h UTC")
    sunday_as_zero = parse_window("cron 0 0 * * 0 1h UTC")
    assert isinstance(sunday_as_seven, CronWindow) and isinstance(sunday_as_zero, CronWindow)
    assert sunday_as_seven.weekdays == sunday_as_zero.weekdays == (6,)


def test_cron_windows_may_overlap_and_span_days() -> None:
    hourly_two_hours = parse_window("cron 0 * * * * 2h UTC")
    opening = hourly_two_hours.opening_at(utc(2026, 12, 1, 10, 30))
    assert opening is not None and opening.end == utc(2026, 12, 1, 12, 0)  # the 10:00 one
    weekend = parse_window("cron 0 18 * * Fri 2d12h UTC")  # Friday 18:00 to Monday 06:00
    assert weekend.is_open(utc(2026, 12, 7, 5, 59))
    assert not weekend.is_open(utc(2026, 12, 7, 6, 0))


def test_cron_29_february_is_found_years_ahead() -> None:
    window = parse_window("cron 0 0 29 2 * 1d UTC")
    assert window.next_open(utc(2026, 12, 1)) == utc(2028, 2, 29)
    assert window.next_open(utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is no leap year


# --- schedules ----------------------------------------------------------------------


def test_a_schedule_needs_every_tag_open() -> None:
    nights = {"line-3": ("daily 22:00-06:00 UTC",), "plant": ("Sun 00:00-24:00 UTC",)}
    schedule = Schedule.of(["plant", "line-3", "no-windows"], nights)
    assert [tag for tag, _ in schedule.groups] == ["line-3", "plant"]
    assert schedule.is_open(utc(2026, 12, 6, 3))  # Sunday 03:00
    assert not schedule.is_open(utc(2026, 12, 6, 12))  # Sunday noon: line-3 is closed
    assert not schedule.is_open(utc(2026, 12, 5, 23))  # Saturday night: plant is closed
    assert schedule.next_open(utc(2026, 12, 5, 23)) == utc(2026, 12, 6, 0, 0)
    assert schedule.next_open(utc(2026, 12, 6, 12)) == utc(2026, 12, 6, 22)
    assert str(schedule) == "line-3: daily 22:00-06:00 UTC; plant: Sun 00:00-24:00 UTC"


def test_a_tag_with_several_windows_opens_in_any() -> None:
    schedule = Schedule.of(["line-3"], {"line-3": ("Sat 02:00-03:00 UTC", "Wed 14:00-15:00 UTC")})
    assert schedule.is_open(utc(2026, 12, 2, 14, 30)) and schedule.is_open(utc(2026, 12, 5, 2))
    assert schedule.next_open(utc(2026, 12, 2, 16)) == utc(2026, 12, 5, 2)


def test_windows_that_never_overlap_never_open_together() -> None:
    schedule = Schedule.of(
        ["a", "b"], {"a": ("Mon 01:00-02:00 UTC",), "b": ("Tue 01:00-02:00 UTC",)}
    )
    assert schedule.next_open(utc(2026, 12, 1)) is None
    assert issubclass(WindowsNeverOpenError, RolloutPlanError)  # a 400 at rollout creation


def test_zones_apart_meet_where_they_overlap() -> None:
    paris_night = "daily 01:00-03:00 Europe/Paris"
    new_york_evening = "daily 19:00-21:00 America/New_York"  # 01:00-03:00 Paris, mostly
    schedule = Schedule.of(["eu", "us"], {"eu": (paris_night,), "us": (new_york_evening,)})
    t = schedule.next_open(utc(2026, 12, 1, 12))
    assert t == utc(2026, 12, 2, 0, 0)  # 01:00 Paris = 19:00 New York in December
    # 15 March 2026: New York already on summer time, Paris not yet: they overlap an hour
    assert schedule.next_open(utc(2026, 3, 15, 12)) == utc(2026, 3, 16, 0, 0)


def test_zones_that_meet_only_between_their_daylight_saving_dates_are_found() -> None:
    """Paris at midnight and New York at 19:00 are the same instant only in the weeks when New
    York already keeps summer time and Paris does not (14 to 28 March 2027)."""
    schedule = Schedule.of(
        ["eu", "us"],
        {"eu": ("daily 00:00-00:30 Europe/Paris",), "us": ("daily 19:00-19:30 America/New_York",)},
    )
    assert (
        schedule.next_open(utc(2026, 12, 1))
        == datetime(2027, 3, 14, 23, 0, tzinfo=timezone.utc).timestamp()
    )


def test_an_unconstrained_schedule_is_always_open() -> None:
    schedule = Schedule.of(["line-1"], {"line-2": ("Sun 02:00-04:00 UTC",)})
    assert schedule.groups == () and schedule.is_open(0.0) and schedule.next_open(5.0) == 5.0


def test_describe_time_in_the_windows_zone() -> None:
    now = utc(2026, 12, 5, 12)  # Saturday
    assert describe_time(utc(2026, 12, 6, 1), "Europe/Paris", now) == "Sun 02:00 Europe/Paris"
    later = describe_time(utc(2028, 2, 29), "UTC", now)
    assert later == "Tue 2028-02-29 00:00 UTC"


# --- properties against a brute-force reading of the local clock ----------------------

# zones without daylight saving: every local minute exists exactly once
_STEADY_ZONES = ("UTC", "Asia/Kolkata", "Asia/Tokyo", "America/Sao_Paulo", "Etc/GMT+11")
_DST_ZONES = ("Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago")
_TIMES = st.floats(min_value=utc(2020, 1, 1), max_value=utc(2035, 1, 1)).map(
    lambda t: float(int(t))
)
_weekly = st.builds(
    lambda days, start, length, zone: (days, start, (start + length) % 1440 or 1440, zone),
    st.sets(st.integers(0, 6), min_size=1),
    st.integers(0, 1439),
    st.integers(1, 1439),
    st.sampled_from(_STEADY_ZONES + _DST_ZONES),
)


def _weekly_text(days: set[int], start: int, end: int, zone: str) -> str:
    names = ",".join(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[d] for d in sorted(days))
    return f"{names} {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d} {zone}"


@settings(max_examples=300, deadline=None)
@given(_weekly.filter(lambda spec: spec[3] in _STEADY_ZONES), _TIMES)
def test_weekly_is_open_matches_the_local_clock(
    spec: tuple[set[int], int, int, str], t: float
) -> None:
    days, start, end, zone = spec
    window = parse_window(_weekly_text(days, start, end, zone))
    local = datetime.fromtimestamp(t, ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    yesterday = (local.weekday() - 1) % 7
    if end > start:
        expected = local.weekday() in days and start <= minute < end
    else:  # runs past midnight
        expected = (local.weekday() in days and minute >= start) or (
            yesterday in days and minute < end
        )
    assert window.is_open(t) == expected


@settings(max_examples=200, deadline=None)
@given(_weekly, _TIMES, st.lists(st.floats(0.0, 1.0), min_size=20, max_size=20))
def test_next_open_is_the_first_open_moment(
    spec: tuple[set[int], int, int, str], t: float, fractions: list[float]
) -> None:
    """In any zone, daylight saving included: open at next_open, closed at every sampled moment
    before it, and openings are never empty."""
    window = parse_window(_weekly_text(*spec))
    nxt = window.next_open(t)
    assert nxt is not None and t <= nxt <= t + 8 * 86400
    assert window.is_open(nxt)
    for f in fractions:
        probe = t + f * (nxt - t)
        if probe < nxt:
            assert not window.is_open(probe)
    if nxt > t:
        assert not window.is_open(nxt - 1.0)
    opening = window.opening_at(nxt)
    assert opening is not None and opening.end > opening.start


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_STEADY_ZONES),
    st.sets(st.integers(0, 59), min_size=1, max_size=3),
    st.sets(st.integers(0, 23), min_size=1, max_size=3),
    st.sets(st.integers(0, 6), min_size=1, max_size=3),
    st.integers(1, 240),
    _TIMES,
)
def test_cron_is_open_matches_a_minute_by_minute_reading(  # noqa: PLR0917 - Hypothesis's draws
    zone: str, minutes: set[int], hours: set[int], weekdays: set[int], duration: int, t: float
) -> None:
    text = (
        f"cron {','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * "
        f"{','.join(map(str, sorted(weekdays)))} {duration}m {zone}"
    )
    window = parse_window(text)
    tz = ZoneInfo(zone)
    base = datetime.fromtimestamp(t, tz).replace(second=0)
    # open when it matched at one of the last ``duration`` whole minutes up to t
    # (cron's weekday 0 is Sunday, Python's 6)
    starts = [base - timedelta(minutes=back) for back in range(duration)]
    expected = any(
        s.minute in minutes and s.hour in hours and (s.weekday() + 1) % 7 in weekdays
        for s in starts
    )
    assert window.is_open(t) == expected


@settings(max_examples=100, deadline=None)
@given(_weekly, _weekly, _TIMES)
def test_a_schedule_opens_only_when_all_its_tags_do(
    a: tuple[set[int], int, int, str], b: tuple[set[int], int, int, str], t: float
) -> None:
    windows = {"a": (_weekly_text(*a),), "b": (_weekly_text(*b),)}
    schedule = Schedule.of(["a", "b"], windows)
    nxt = schedule.next_open(t)
    if nxt is None:
        return
    assert nxt >= t and schedule.is_open(nxt)
    assert all(parse_window(w[0]).is_open(nxt) for w in windows.values())
    if nxt > t:
        assert not schedule.is_open(nxt - 1.0)


@settings(max_examples=200, deadline=None)
@given(_weekly)
def test_canonical_text_round_trips(spec: tuple[set[int], int, int, str]) -> None:
    window = parse_window(_weekly_text(*spec))
    assert parse_window(window.text) == window
    assert parse_window(window.text.lower()) == window
