"""Cron maintenance windows: ``cron MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK DURATION ZONE``.

The five fields are a crontab line's (as in Vixie cron and ``crontab(5)``):
numbers, ``*``, lists (``1,15``), ranges (``1-5``), steps (``*/15``,
``0-30/10``, ``5/20``), month names (``Jan`` ... ``Dec``) and weekday names
(``Sun`` ... ``Sat``; 0 and 7 are both Sunday). When both the day of the
month and the day of the week are restricted (neither starts with ``*``),
a day matches either, as in cron. Each match opens the window for
``DURATION`` (``90m``, ``2h``, ``1h30m``, ``1d``; one minute to seven days)
in the zone ``ZONE``. Example: ``cron 0 2 * * Sun 2h Europe/Paris`` opens
every Sunday from 02:00 to 04:00 Paris time.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from fleet_server.window_base import (
    EmptyWindowError,
    MaintenanceWindow,
    Opening,
    WindowSyntaxError,
    checked_zone,
    instant,
)

__all__ = ["MAX_DURATION_MINUTES", "CronWindow", "parse_cron"]

MAX_DURATION_MINUTES = 7 * 1440
_EXAMPLE = "'cron 0 2 * * Sun 2h Europe/Paris'"
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),
)


@dataclass(frozen=True)
class CronWindow(MaintenanceWindow):
    """Open for ``duration`` minutes from each time the five crontab fields match."""

    fields: tuple[str, ...]
    """The five fields as written (names in their canonical case): the spelling shown."""
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    """Python weekdays, 0 is Monday."""
    day_rule_or: bool
    """Both day fields restricted: a day matches either (cron's rule); else it must match both."""
    duration: int
    zone_name: str

    @property
    def text(self) -> str:
        return f"cron {' '.join(self.fields)} {_duration_text(self.duration)} {self.zone_name}"

    @property
    def reach_days(self) -> int:
        return math.ceil(self.duration / 1440) + 1

    @property
    def search_days(self) -> int:
        return 8 * 366 + 1  # a 29 February comes within eight years (none in 2100)

    def matches(self, day: date) -> bool:
        """Whether the local ``day`` is one of the window's days."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days_of_month
        by_weekday = day.weekday() in self.weekdays
        return (by_date or by_weekday) if self.day_rule_or else (by_date and by_weekday)

    def openings_on(self, day: date) -> tuple[Opening, ...]:
        if not self.matches(day):
            return ()
        zone = ZoneInfo(self.zone_name)
        starts = sorted({instant(day, h * 60 + m, zone) for h in self.hours for m in self.minutes})
        return tuple(Opening(s, s + self.duration * 60.0) for s in starts)


def parse_cron(words: list[str]) -> CronWindow:
    """A cron window from the words after ``cron``; :class:`WindowSpecError` naming the bad part."""
    if len(words) != 7:
        hint = ""
        if len(words) == 6 and _DURATION.match(words[-1].lower()):
            hint = " (no time zone: end it with an IANA zone such as Europe/Paris or UTC)"
        raise WindowSyntaxError(
            f"a cron window is 'cron MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK DURATION ZONE' "
            f"(e.g. {_EXAMPLE}); got {len(words)} words after 'cron'{hint}"
        )
    zone = checked_zone(words[6])
    duration = _parse_duration(words[5])
    values = [_parse_field(word, field) for word, field in zip(words[:5], _FIELDS, strict=True)]
    minutes, hours, doms, months, cron_weekdays = values
    weekdays = tuple(sorted({(d - 1) % 7 for d in cron_weekdays}))
    dom_restricted, dow_restricted = (not words[i].startswith("*") for i in (2, 4))
    if dom_restricted and not dow_restricted:
        longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in months}
        if not any(d <= longest[m] for m in months for d in doms):
            raise EmptyWindowError(
                f"cron window never opens: day {words[2]} of month {words[3]} never exists"
            )
    return CronWindow(
        fields=tuple(_canonical_names(w, f) for w, f in zip(words[:5], _FIELDS, strict=True)),
        minutes=minutes,
        hours=hours,
        days_of_month=doms,
        months=months,
        weekdays=weekdays,
        day_rule_or=dom_restricted and dow_restricted,
        duration=duration,
        zone_name=zone,
    )


def _parse_field(word: str, field: _Field) -> tuple[int, ...]:
    chosen: set[int] = set()
    for item in word.lower().split(","):
        match = _ITEM.match(item)
        if match is None:
            raise WindowSyntaxError(
                f"cron {field.name} {word!r}: {item!r} is not a number, a name, *, a range "
                "or a step (e.g. */15, 1-5, 0-30/10)"
            )
        span, step_text = match.groups()
        step = 1 if step_text is None else int(step_text)
        if step < 1:
            raise WindowSyntaxError(f"cron {field.name} {word!r}: a step must be at least 1")
        if span == "*":
            low, high = field.low, field.high
        else:
            ends = [_value(end, word, field) for end in span.split("-")]
            low = ends[0]
            # 'a/n' runs from a to the field's end, as in Vixie cron
            high = ends[-1] if len(ends) == 2 or step_text is None else field.high
            if high < low:
                raise WindowSyntaxError(
                    f"cron {field.name} {word!r}: range {span!r} runs backwards"
                )
        chosen.update(range(low, high + 1, step))
    return tuple(sorted(chosen))


def _value(text: str, word: str, field: _Field) -> int:
    if text.isdigit():
        value = int(text)
        if not field.low <= value <= field.high:
            raise WindowSyntaxError(
                f"cron {field.name} {word!r}: {value} is not {field.low}-{field.high}"
            )
        return value
    if field.names is not None and text in field.names:
        return field.names[text]
    names = f" or a name ({', '.join(n.title() for n in field.names)})" if field.names else ""
    raise WindowSyntaxError(
        f"cron {field.name} {word!r}: {text!r} is not a number {field.low}-{field.high}{names}"
    )


def _canonical_names(word: str, field: _Field) -> str:
    if field.names is None:
        return word
    return re.sub(r"[A-Za-z]+", lambda m: m.group(0).title(), word)


def _parse_duration(word: str) -> int:
    match = _DURATION.match(word.lower())
    if match is None or not any(match.groups()):
        raise WindowSyntaxError(
            f"cron window duration {word!r} is not a duration such as 90m, 2h, 1h30m or 1d"
        )
    days, hours, minutes = (int(g or 0) for g in match.groups())
    total = days * 1440 + hours * 60 + minutes
    if not 1 <= total <= MAX_DURATION_MINUTES:
        raise (EmptyWindowError if total == 0 else WindowSyntaxError)(
            f"cron window duration {word!r} must be 1 minute to 7 days"
        )
    return total


def _duration_text(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n)
