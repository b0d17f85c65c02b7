"""The fault rows run on asyncio: the checks' runs are asyncio tasks."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
