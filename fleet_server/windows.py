"""Maintenance windows: when a device group may change models, parsed from text and evaluated at a time.

A recycling line must not change its model mid-shift, so each device group
(a tag) may have maintenance windows, and a rollout sends a device its new
bundle only while it is inside them (in the manner of Eclipse hawkBit's
maintenance windows). A spec is one line of text, in one of two forms::

    [DAYS] HH:MM-HH:MM ZONE
    cron MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK DURATION ZONE

* ``DAYS``: weekdays (``Mon`` ... ``Sun``, or full names, any case), lists
  (``Sat,Sun``) and ranges (``Mon-Fri``; ``Fri-Mon`` wraps over the week
  end); ``daily`` or ``*`` (the default) for every day. The window opens on
  each of these days at the first time.
* ``HH:MM-HH:MM``: a 24-hour clock; an end at or before the start runs past
  midnight into the next day (``Mon-Fri 22:00-06:00``); ``24:00`` ends at
  midnight; start and end may not be equal.
* ``ZONE``: an IANA time zone (``Europe/Paris``, ``UTC``), required: the
  window follows the zone's daylight-saving changes (see
  :mod:`fleet_server.window_base` for the skipped and repeated hours).
* ``cron``: the five fields of a crontab line, each opening the window for
  ``DURATION`` (``90m``, ``2h``, ``1h30m``, ``1d``, at most 7 days), e.g.
  ``cron 0 2 * * Sun 2h Europe/Paris`` (:mod:`fleet_server.window_cron`).

A device may carry several tags with windows: it may change models only
when every one of those tags has one of its windows open
(:class:`Schedule`). Every spec that cannot be used raises a
:class:`WindowSpecError` subclass naming the part at fault. Pure: no clock,
no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from fleet_server.errors import RolloutPlanError
from fleet_server.window_base import (
    DAY_NAMES,
    EmptyWindowError,
    MaintenanceWindow,
    Opening,
    UnknownTimeZoneError,
    WindowSpecError,
    WindowSyntaxError,
    checked_zone,
    instant,
)
from fleet_server.window_cron import CronWindow, parse_cron

__all__ = [
    "MAX_SPEC_CHARS",
    "CronWindow",
    "EmptyWindowError",
    "MaintenanceWindow",
    "Opening",
    "Schedule",
    "UnknownTimeZoneError",
    "WeeklyWindow",
    "WindowSpecError",
    "WindowSyntaxError",
    "WindowsNeverOpenError",
    "describe_time",
    "parse_window",
]

MAX_SPEC_CHARS = 200
_EXAMPLE = "'Sun 02:00-04:00 Europe/Paris'"
_DAY_INDEX = {
    **{name.lower(): i for i, name in enumerate(DAY_NAMES)},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_EVERY_DAY = frozenset({"daily", "*"})
_TIMES = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_LOOKS_LIKE_TIMES = re.compile(r"^\d{1,2}:\d{2}(-|$)")


class WindowsNeverOpenError(RolloutPlanError):
    """A device's tags each have windows, but they never open at the same time: it would wait forever."""


@dataclass(frozen=True)
class WeeklyWindow(MaintenanceWindow):
    """Open on ``days`` (0 is Monday) from ``start`` to ``end`` (minutes of the local day).

    An ``end`` at or before ``start`` runs into the next day; 1440 is midnight.
    """

    days: tuple[int, ...]
    start: int
    end: int
    zone_name: str

    @property
    def text(self) -> str:
        return f"{_days_text(self.days)} {_hhmm(self.start)}-{_hhmm(self.end)} {self.zone_name}"

    @property
    def reach_days(self) -> int:
        return 2  # an opening ends the next day at the latest (plus a daylight-saving hour)

    @property
    def search_days(self) -> int:
        return 8  # every opening of a week, and a day to spare

    def openings_on(self, day: date) -> tuple[Opening, ...]:
        if day.weekday() not in self.days:
            return ()
        zone = ZoneInfo(self.zone_name)
        start = instant(day, self.start, zone)
        end_day = day if self.end > self.start else date.fromordinal(day.toordinal() + 1)
        end = instant(end_day, self.end, zone)
        if end <= start:  # inside a skipped hour: it opens when the clocks jump, for its length
            end = start + 60.0 * ((self.end - self.start) % 1440)
        return (Opening(start, end),)


@functools.lru_cache(maxsize=1024)
def parse_window(text: str) -> MaintenanceWindow:
    """The window ``text`` describes (see the module's docstring); :class:`WindowSpecError` if none.

    The result's :attr:`~MaintenanceWindow.text` is the canonical spelling
    (``sat, sun 2:00 - 4:00 utc`` is ``Sat,Sun 02:00-04:00 UTC``).
    """
    if not isinstance(text, str):
        raise WindowSyntaxError(f"a maintenance window is text such as {_EXAMPLE}, not {text!r}")
    if len(text) > MAX_SPEC_CHARS:
        raise WindowSyntaxError(
            f"maintenance window spec is {len(text)} characters; at most {MAX_SPEC_CHARS}"
        )
    words = text.split()
    if not words:
        raise WindowSyntaxError(f"empty maintenance window: write one such as {_EXAMPLE}")
    if words[0].lower() == "cron":
        return parse_cron(words[1:])
    return _parse_weekly(text)


def _parse_weekly(text: str) -> WeeklyWindow:
    compact = re.sub(r"\s*,\s*", ",", re.sub(r"\s*-\s*", "-", text.strip()))
    words = compact.split()
    if _LOOKS_LIKE_TIMES.match(words[-1]):
        raise WindowSyntaxError(
            f"maintenance window {text.strip()!r} has no time zone: end it with an IANA zone, "
            f"e.g. {text.strip() + ' Europe/Paris'!r} or {text.strip() + ' UTC'!r}"
        )
    if len(words) < 2:
        raise WindowSyntaxError(
            f"maintenance window {text.strip()!r} is not '[DAYS] HH:MM-HH:MM ZONE' "
            f"(e.g. {_EXAMPLE}) nor 'cron M H DOM MON DOW DURATION ZONE'"
        )
    zone = checked_zone(words[-1])
    start, end = _parse_times(words[-2])
    days = _parse_days(",".join(words[:-2])) if len(words) > 2 else tuple(range(7))
    if start == end:
        raise EmptyWindowError(
            f"maintenance window {text.strip()!r} starts and ends at {_hhmm(start)}: give it a "
            "length (00:00-24:00 is a whole day)"
        )
    return WeeklyWindow(days=days, start=start, end=end, zone_name=zone)


def _parse_times(word: str) -> tuple[int, int]:
    match = _TIMES.match(word)
    if match is None:
        raise WindowSyntaxError(
            f"times {word!r} are not HH:MM-HH:MM on a 24-hour clock (e.g. 22:00-06:00)"
        )
    hour1, minute1, hour2, minute2 = (int(g) for g in match.groups())
    for hour, minute, which in ((hour1, minute1, "start"), (hour2, minute2, "end")):
        if minute > 59:
            raise WindowSyntaxError(f"{which} time in {word!r}: minute {minute:02d} is not 00-59")
        if hour > 24 or (hour == 24 and (minute or which == "start")):
            raise WindowSyntaxError(
                f"{which} time in {word!r}: hour {hour} is not 00-23"
                + (" (24:00 may only end a window)" if hour == 24 else "")
            )
    return hour1 * 60 + minute1, hour2 * 60 + minute2


def _parse_days(spec: str) -> tuple[int, ...]:
    if spec.lower() in _EVERY_DAY:
        return tuple(range(7))
    chosen: set[int] = set()
    for item in spec.split(","):
        ends = item.split("-")
        if len(ends) > 2 or not all(ends):
            raise WindowSyntaxError(f"weekdays {spec!r}: {item!r} is not a weekday or a range")
        first, last = (_day(name) for name in (ends[0], ends[-1]))
        chosen.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return tuple(sorted(chosen))


def _day(name: str) -> int:
    index = _DAY_INDEX.get(name.lower())
    if index is None:
        raise WindowSyntaxError(
            f"unknown weekday {name!r}: use {', '.join(DAY_NAMES)} "
            "(lists such as Sat,Sun and ranges such as Mon-Fri), or daily"
        )
    return index


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_text(days: tuple[int, ...]) -> str:
    """Monday-first runs: (0, 1, 2, 3, 4) is Mon-Fri, (5, 6) is Sat,Sun, all seven is daily."""
    if len(days) == 7:
        return "daily"
    runs: list[list[int]] = []
    for d in days:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts = []
    for run in runs:
        names = [DAY_NAMES[d] for d in run]
        parts.append(f"{names[0]}-{names[-1]}" if len(run) >= 3 else ",".join(names))
    return ",".join(parts)


def describe_time(at: float, zone_name: str, now: float) -> str:
    """``at`` as an operator reads it in ``zone_name``: ``Sun 02:00 Europe/Paris`` within the
    coming week, with the date further ahead (``Sun 2027-02-28 02:00 Europe/Paris``)."""
    local = datetime.fromtimestamp(at, ZoneInfo(zone_name))
    day = DAY_NAMES[local.weekday()]
    when = f"{local:%H:%M}" if at - now < 6 * 86400 else f"{local:%Y-%m-%d %H:%M}"
    return f"{day} {when} {zone_name}"


@dataclass(frozen=True)
class Schedule:
    """When one device may change models: every group (tag) with windows has one of them open.

    ``groups`` pairs each such tag with its windows; a schedule without
    groups is always open (the device's tags have no windows).
    """

    groups: tuple[tuple[str, tuple[MaintenanceWindow, ...]], ...] = ()

    @classmethod
    def of(cls, tags: Iterable[str], windows: Mapping[str, Sequence[str]]) -> Schedule:
        """The schedule of a device carrying ``tags``, from each tag's window specs."""
        return cls(
            tuple(
                (tag, tuple(parse_window(spec) for spec in windows[tag]))
                for tag in sorted(set(tags))
                if windows.get(tag)
            )
        )

    @property
    def zone_name(self) -> str:
        """The zone times are shown in: the first window's."""
        return self.groups[0][1][0].zone_name if self.groups else "UTC"

    def is_open(self, at: float) -> bool:
        """Whether the device may change models at ``at``."""
        return all(any(w.is_open(at) for w in windows) for _, windows in self.groups)

    def next_open(self, at: float) -> float | None:
        """``at`` when open then, else the first time after it when every group is open (None:
        they never are within a year, or within the cron windows' eight years)."""
        if not self.groups:
            return at
        days = max(w.search_days for _, ws in self.groups for w in ws)
        # groups in zones with different daylight-saving dates may meet only some weeks a year
        horizon = at + 86400.0 * (max(days, 366) if len(self.groups) > 1 else days)
        t = at
        for _ in range(10_000):
            waits = [_group_next(windows, t) for _, windows in self.groups]
            if any(w is None for w in waits):
                return None
            latest = max(w for w in waits if w is not None)
            if latest == t:
                return t
            if latest > horizon:
                return None
            t = latest  # no group-wide opening before the last group to open: skip to it
        return None

    def __str__(self) -> str:
        return "; ".join(f"{tag}: {', '.join(w.text for w in ws)}" for tag, ws in self.groups)


def _group_next(windows: tuple[MaintenanceWindow, ...], at: float) -> float | None:
    found = [t for t in (w.next_open(at) for w in windows) if t is not None]
    return min(found) if found else None
