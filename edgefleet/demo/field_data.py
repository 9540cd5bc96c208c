"""The demo's field data: the operator switches collection on for the cameras' group, and the run
ends with the uncertain frames the cameras collected, exported as a folder.

Collection is switched on the way an operator does it, through the fleet
server's HTTP API (``PUT /field-data/settings/<group>``, as ``edgefleet fleet
field-data enable`` sends it): the cameras then keep the frames they answer
with less than :data:`BELOW_CONFIDENCE`, at most :data:`PER_MINUTE` a minute
each, and upload them. At the end the samples the server stored are written
to ``<workdir>/uncertain-frames/<the camera's answer>/<sha256>.jpg`` with
``samples.jsonl`` beside them: no person has labelled them yet, so the
folders are the cameras' answers, to be confirmed or corrected (``edgefleet
fleet field-data label``) before the set judges the next model.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_server.field_data import FieldStore, export_folder
from fleet_server.registry import Registry

__all__ = ["BELOW_CONFIDENCE", "PER_MINUTE", "FieldDataDemo"]

BELOW_CONFIDENCE = 0.5
"""A frame answered with less confidence than this is kept (the product's default)."""
PER_MINUTE = 30
"""Kept frames per camera and minute, at most. The cap admits the first uncertain frames of each
minute, and the video holds each item for 4 frames (the server keeps an image once), so a
higher cap than the product's 6 gives the short demo several different items per camera."""
_LIMIT = 10_000


@dataclass
class FieldDataDemo:
    """Switches collection on for ``group`` over the API at ``api_url``, and exports at the end."""

    api_url: str
    """The fleet server's HTTP API (``http://host:port``)."""
    token: str
    registry: Registry
    images: Path
    """Where the server keeps the samples' images (``<state>/field-data``)."""
    group: str
    enabled_at: float | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def enable(self) -> None:
        """Collect uncertain frames on the group's cameras, from now on."""
        body = {"enabled": True, "below_confidence": BELOW_CONFIDENCE, "per_minute": PER_MINUTE}
        request = urllib.request.Request(  # noqa: S310 (loopback, the demo's own server)
            f"{self.api_url}/field-data/settings/{self.group}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
            reply.read()
        self.enabled_at = time.time()

    def stored(self) -> int:
        """Uncertain frames the server has stored so far."""
        return len(self.registry.field_samples(reason="low-confidence", limit=_LIMIT))

    def export(self, out: Path) -> dict[str, Any]:
        """Write every stored uncertain frame under ``out/<the camera's answer>/``; what was done."""
        samples = self.registry.field_samples(reason="low-confidence", limit=_LIMIT)
        store = FieldStore(self.images)
        written = export_folder(
            samples,
            (store.read(s.sha256, s.image_format) for s in samples),
            out,
            unreviewed=True,
        )
        self.result = {
            "group": self.group,
            "below_confidence": BELOW_CONFIDENCE,
            "per_minute": PER_MINUTE,
            "enabled_at": self.enabled_at,
            "samples": len(samples),
            "by_camera": _count(s.device_id for s in samples),
            "by_answer": written,
            "folder": str(out),
            "metadata": str(out / "samples.jsonl"),
        }
        return self.result


def _count(names: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
