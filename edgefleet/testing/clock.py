"""A clock that moves only when the test moves it."""

from __future__ import annotations

__all__ = ["FakeClock"]

DEFAULT_NOW = 1_800_000_000.0
"""2027-01-15 08:00 UTC: a plausible Unix time, far from 0 so that 'now - 0' bugs show."""


class FakeClock:
    """Stands in for ``time.time`` or ``time.monotonic`` wherever edgefleet takes a ``clock``.

    Calling it returns :attr:`now`. A test moves it with :meth:`advance`, by
    setting :attr:`now`, or by handing :meth:`sleep` to code that sleeps, so
    windows, timeouts and retention bounds are tested without waiting::

        clock = FakeClock(100.0)
        metrics = RuntimeMetrics(clock=clock)
        clock.advance(12.0)
    """

    def __init__(self, now: float = DEFAULT_NOW) -> None:
        self.now = float(now)
        """The time the clock shows; set it to jump (forwards or back)."""

    def __call__(self) -> float:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forwards by ``seconds`` (never back: set :attr:`now` to jump back); the new time."""
        if seconds < 0:
            raise ValueError(f"a clock advances by zero or more seconds, not {seconds}")
        self.now += seconds
        return self.now

    def sleep(self, seconds: float) -> None:
        """A ``time.sleep`` that returns at once, having advanced the clock by ``seconds``."""
        self.advance(max(0.0, seconds))

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"
