"""Which frames a device keeps for field data: the rules, and the caps per minute and day. Pure.

:func:`choose_reason` says why a prediction's frame is worth keeping (or
None): under the confidence threshold first, then a chosen class, then the
random fraction (``draw`` is a number in [0, 1) the caller draws). :class:`Caps`
admits at most ``per_minute`` frames in any sliding minute and ``per_day``
in a UTC day, with times the caller passes (tests use plain numbers).
"""

from __future__ import annotations

import math
from collections import deque

from edge_runtime.prediction import Prediction
from edge_runtime.protocol.field_data import FieldDataSettings

__all__ = ["Caps", "choose_reason"]

_DAY = 86400.0


def choose_reason(settings: FieldDataSettings, prediction: Prediction, draw: float) -> str | None:
    """``low-confidence``, ``class`` or ``random`` when the frame is to be kept; else None."""
    if not settings.enabled:
        return None
    confidence = prediction.confidence
    threshold = settings.below_confidence
    if threshold is not None and (not math.isfinite(confidence) or confidence < threshold):
        return "low-confidence"
    if settings.classes and prediction.label in settings.classes:
        return "class"
    if settings.random_fraction > 0 and draw < settings.random_fraction:
        return "random"
    return None


class Caps:
    """At most ``per_minute`` admissions in any 60 s, and ``per_day`` per UTC day."""

    def __init__(self, per_minute: int, per_day: int) -> None:
        self.per_minute = per_minute
        self.per_day = per_day
        self._minute: deque[float] = deque()
        self._day: int | None = None
        self._today = 0
        self.refused = 0
        """Frames a rule chose that a cap turned away."""

    def admit(self, now: float) -> bool:
        """Whether one more frame may be kept at ``now`` (Unix seconds); counts it when so."""
        day = int(now // _DAY)
        if day != self._day:
            self._day, self._today = day, 0
        while self._minute and self._minute[0] <= now - 60.0:
            self._minute.popleft()
        if len(self._minute) >= self.per_minute or self._today >= self.per_day:
            self.refused += 1
            return False
        self._minute.append(now)
        self._today += 1
        return True
