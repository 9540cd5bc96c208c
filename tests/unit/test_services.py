"""A missing broker or database fails a test; it is never skipped."""

from __future__ import annotations

import pytest

from tests.services import service_missing


def test_a_missing_service_fails_the_test() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no broker here .*the tests need it"):
        service_missing("no broker here")
