"""The device config and the probation monitor agree on what they accept.

``update.probation_min_predictions: 0`` is accepted by both and means what
it says: no minimum count, the window (``probation_s``) alone ends
probation, which still fails on any error; ``update.min_confidence_ratio:
0`` means no confidence-collapse check. Values out of range are refused by
both, the config naming the key. (Before, both zeros passed the config and
made the monitor raise when the bundle was activated.)
"""

from __future__ import annotations

import dataclasses

import pytest

from edge_runtime.config import parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.update import ProbationMonitor
from edgefleet.testing import sample_prediction

DEVICE = """\
device_id: cam-1
source:
  type: synthetic
  fps: 10
mqtt: {{host: 127.0.0.1}}
update:
  probation_s: 30
  probation_min_predictions: {count}
"""
T0 = 1_800_000_000.0


def monitor_from_config(count: int) -> ProbationMonitor:
    settings = parse_config(DEVICE.format(count=count), "device.yaml").update
    assert settings is not None
    return ProbationMonitor(
        T0, window_s=settings.probation_s, min_predictions=settings.probation_min_predictions
    )


@pytest.mark.parametrize("count", [0, 1, 10])
def test_every_count_the_config_accepts_the_monitor_accepts(count: int) -> None:
    assert monitor_from_config(count).min_predictions == count


def test_zero_means_the_window_alone_ends_probation() -> None:
    quiet = monitor_from_config(0)  # a belt that carries nothing during the window
    assert quiet.verdict(T0 + 29.9) is None
    verdict = quiet.verdict(T0 + 30.0)
    assert verdict is not None and verdict.passed, verdict
    assert verdict.reason.startswith("0 predictions without failure")

    counted = monitor_from_config(10)  # the default waits for predictions however long
    assert counted.verdict(T0 + 3600.0) is None

    failing = monitor_from_config(0)  # no minimum count is not a free pass
    failing.record(dataclasses.replace(sample_prediction(), confidence=float("nan")))
    verdict = failing.verdict(T0 + 1.0)
    assert verdict is not None and not verdict.passed
    assert verdict.reason == "NaN/inf output on prediction 1"


def test_a_negative_count_is_refused_by_both_the_config_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(DEVICE.format(count=-1), "device.yaml")
    message = str(caught.value)
    assert "update.probation_min_predictions" in message and "line 8" in message, message
    with pytest.raises(ValueError, match="min_predictions must not be negative"):
        ProbationMonitor(T0, min_predictions=-1)


def test_min_confidence_ratio_zero_is_accepted_by_both_and_means_no_confidence_check() -> None:
    text = DEVICE.format(count=1) + "  min_confidence_ratio: RATIO\n"
    settings = parse_config(text.replace("RATIO", "0"), "device.yaml").update
    assert settings is not None and settings.min_confidence_ratio == 0
    monitor = ProbationMonitor(
        T0,
        window_s=1.0,
        min_predictions=1,
        baseline_confidence=0.9,
        min_confidence_ratio=settings.min_confidence_ratio,
    )
    monitor.record(dataclasses.replace(sample_prediction(), confidence=0.01))
    verdict = monitor.verdict(T0 + 1.0)
    assert verdict is not None and verdict.passed, verdict  # a collapse, but no check asked for

    strict = ProbationMonitor(T0, window_s=1.0, baseline_confidence=0.9)  # the default, 0.5
    strict.record(dataclasses.replace(sample_prediction(), confidence=0.01))
    verdict = strict.verdict(T0 + 1.0)
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("confidence collapse")

    with pytest.raises(ConfigError, match=r"update\.min_confidence_ratio"):
        parse_config(text.replace("RATIO", "1.5"), "device.yaml")
    with pytest.raises(ValueError, match=r"min_confidence_ratio must be in \[0, 1\]"):
        ProbationMonitor(T0, min_confidence_ratio=1.5)
