"""A missing broker or database skips a test on a laptop, and fails it where `make test` installed them."""

from __future__ import annotations

import pytest

from tests.services import REQUIRE_ENV, service_missing


def test_a_missing_service_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no broker here"):
        service_missing("no broker here")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"no broker here .*this run must have it"):
        service_missing("no broker here")
