from __future__ import annotations

from typing import Any

import pytest

from tests.security.routes import sample_values
from tests.training.conftest import data_dir  # noqa: F401 - a fresh data directory, for the index


@pytest.fixture
def samples(staff_user: Any) -> dict[str, list[str]]:
    """Values for the parameters of every URL pattern, with real objects behind them."""
    return sample_values(staff_user)
