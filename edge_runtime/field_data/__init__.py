"""Field-data collection on the device: frames sampled by rule, capped, kept on disk, uploaded.

Off until the fleet server's retained settings for the device say otherwise
(``edgefleet fleet field-data enable TAG``; :class:`~edge_runtime.protocol.field_data.FieldDataSettings`).

    rules.py       which frames to keep (pure): the rules and the caps per minute and per day
    ring.py        the bounded local ring on disk: one file a sample, written atomically
    collector.py   the FrameObserver, the encoding worker and the uploader that resumes
"""

from __future__ import annotations

from edge_runtime.field_data.collector import FieldCollector
from edge_runtime.field_data.ring import SampleRing
from edge_runtime.field_data.rules import Caps, choose_reason

__all__ = ["Caps", "FieldCollector", "SampleRing", "choose_reason"]
