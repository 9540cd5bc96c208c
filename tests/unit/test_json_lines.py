"""The test kit reads a JSON lines file a device is still writing: complete records only."""

from __future__ import annotations

from pathlib import Path

from edgefleet.testing import json_lines


def test_a_half_written_last_line_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    assert json_lines(path) == []
    path.write_text('{"frame_id": 1}\n{"frame_id": 2}\n{"frame_id": 3, "lab', encoding="utf-8")
    assert json_lines(path) == [{"frame_id": 1}, {"frame_id": 2}]
    with path.open("a", encoding="utf-8") as out:
        out.write('el": "glass"}\n')
    assert json_lines(path)[-1] == {"frame_id": 3, "label": "glass"}
