"""What every maintenance window is: its errors, its openings, and how they are found in a time zone.

A window opens on local calendar days of its IANA time zone (a weekly
window on its weekdays, a cron window on the days its fields match); each
subclass says only which :class:`Opening` starts on a given local day
(:meth:`MaintenanceWindow.openings_on`). Everything else (is it open at a
Unix time, when does it open next) is computed here, the same way for every
kind. Pure: no clock, no I/O; times are Unix seconds.

Local times become instants by :pep:`495`'s rule, as :mod:`zoneinfo` applies
it: a wall time that a daylight-saving change skips is moved forward by the
length of the skip (02:30 on a night that jumps from 02:00 to 03:00 is
03:30), and a wall time that happens twice (the night the clocks go back)
is its first occurrence. So a window from 02:00 to 04:00 lasts an hour
on the night the clocks jump from 02:00 to 03:00 (03:00 to 04:00) and three
hours on the night they go back; one that lies entirely inside the skipped
hour opens when the clocks jump, for its usual length.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fleet_server.errors import FleetError

__all__ = [
    "DAY_NAMES",
    "EmptyWindowError",
    "MaintenanceWindow",
    "Opening",
    "UnknownTimeZoneError",
    "WindowSpecError",
    "WindowSyntaxError",
    "checked_zone",
    "instant",
    "local_date",
]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
"""Weekday names, Monday first (``date.weekday()`` indexes them)."""


class WindowSpecError(FleetError):
    """A maintenance window spec cannot be used as written (the message names the part and why)."""


class WindowSyntaxError(WindowSpecError):
    """The spec's shape is wrong: an unknown weekday, a malformed time, a bad cron field."""


class UnknownTimeZoneError(WindowSpecError):
    """The spec names a time zone that is not in the IANA time zone database."""


class EmptyWindowError(WindowSpecError):
    """The spec is well formed but never opens (start equals end, a cron date that never exists)."""


@dataclass(frozen=True, order=True)
class Opening:
    """One time a window is open: from ``start`` (included) to ``end`` (excluded), Unix seconds."""

    start: float
    end: float


_NOT_ZONES = frozenset({"localtime", "factory", "posixrules"})
"""Files of some tz databases that are no place's zone (localtime is the server machine's)."""


@functools.lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """Every IANA zone name, keyed by its lower-case spelling."""
    return {n.lower(): n for n in available_timezones() if n.lower() not in _NOT_ZONES}


def checked_zone(name: str) -> str:
    """The IANA zone ``name`` in its canonical spelling (``utc`` -> ``UTC``); :class:`UnknownTimeZoneError`."""
    canonical = _zone_names().get(name.lower())
    if canonical is None:
        raise UnknownTimeZoneError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris, "
            "America/New_York or UTC"
        )
    try:
        ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # listed but unreadable: a broken tzdata
        raise UnknownTimeZoneError(f"time zone {canonical!r} cannot be loaded: {exc}") from exc
    return canonical


def instant(day: date, minute_of_day: int, zone: ZoneInfo) -> float:
    """The Unix time of ``minute_of_day`` (0 to 1440) on the local ``day`` in ``zone``.

    1440 is the next day's midnight; skipped and repeated wall times follow
    :pep:`495` (see the module's docstring).
    """
    if minute_of_day == 1440:
        day, minute_of_day = day + timedelta(days=1), 0
    hour, minute = divmod(minute_of_day, 60)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()


def local_date(at: float, zone: ZoneInfo) -> date:
    """The calendar day it is in ``zone`` at the Unix time ``at``."""
    return datetime.fromtimestamp(at, zone).date()


class MaintenanceWindow(ABC):
    """A recurring window in one time zone: is it open at a time, and when does it open next.

    Subclasses are frozen dataclasses (hashable: openings are cached per
    window and day) that give :attr:`text` (their canonical spelling), a
    ``zone_name`` field (a canonical IANA name), how many days an opening may reach back
    (:attr:`reach_days`), how far ahead :meth:`next_open` looks
    (:attr:`search_days`) and :meth:`openings_on`.
    """

    zone_name: str

    @property
    @abstractmethod
    def text(self) -> str:
        """The window's canonical spelling: what is stored and shown."""

    @property
    @abstractmethod
    def reach_days(self) -> int:
        """How many local days after the one it starts on an opening may still be open."""

    @property
    @abstractmethod
    def search_days(self) -> int:
        """How many local days ahead :meth:`next_open` looks before it says "never"."""

    @abstractmethod
    def openings_on(self, day: date) -> tuple[Opening, ...]:
        """The openings that start on the local ``day``, by start (each with ``end > start``)."""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_name)

    def opening_at(self, at: float) -> Opening | None:
        """The opening that contains ``at`` (the one that ends last, when several do), or None."""
        today = local_date(at, self.zone)
        found = [
            opening
            for back in range(self.reach_days, -1, -1)
            for opening in _openings(self, today - timedelta(days=back))
            if opening.start <= at < opening.end
        ]
        return max(found, key=lambda o: o.end) if found else None

    def is_open(self, at: float) -> bool:
        """Whether the window is open at the Unix time ``at``."""
        return self.opening_at(at) is not None

    def next_open(self, at: float) -> float | None:
        """``at`` when the window is open then, else the start of its next opening (None: none
        within :attr:`search_days`)."""
        if self.is_open(at):
            return at
        today = local_date(at, self.zone)
        for ahead in range(self.search_days + 1):
            day = today + timedelta(days=ahead)
            # the next day too: a skipped hour may move one day's opening past the next's
            later = [
                o.start
                for d in (day, day + timedelta(days=1))
                for o in _openings(self, d)
                if o.start > at
            ]
            if later:
                return min(later)
        return None

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=8192)
def _openings(window: MaintenanceWindow, day: date) -> tuple[Opening, ...]:
    return window.openings_on(day)
