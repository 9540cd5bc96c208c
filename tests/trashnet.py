"""Where the tests find TrashNet's real photos: ../shared (or EDGEFLEET_TRASHNET), never the repo.

``needs_trashnet`` marks a test (or a module, in ``pytestmark``) that reads them: slow,
``real_data``, and skipped with a clear message where the photos are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TRASHNET = Path(
    os.environ.get(
        "EDGEFLEET_TRASHNET",
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet",
    )
)

needs_trashnet = [
    pytest.mark.real_data,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (TRASHNET / "train").is_dir(),
        reason=f"TrashNet photos not found at {TRASHNET} (set EDGEFLEET_TRASHNET to the folder "
        "with train/ and val/)",
    ),
]
