"""The docs' timeline and "Testing your app" code blocks, run as written."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from lifewatch import Lifewatch
from lifewatch.testing import LifewatchHarness
from tests.test_timeline import shop  # at import: not read from disk on the loop

from .pages import TEXT as README


def block(marker: str) -> str:
    """The fenced code block right after ``<!-- marker -->``."""
    found = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)\n```", README, re.S)
    assert found, f"README.md has no code block after <!-- {marker} -->"
    return found.group(1)


def test_the_testing_example_passes_as_a_users_test_suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(block("testing-conftest"))
    pytester.makepyfile(test_users_app=block("testing-example"))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    # anyio's plugin runs each async test on every backend installed (trio too).
    try:
        from anyio.pytest_plugin import get_available_backends
    except ImportError:  # anyio < 4.12: asyncio and trio (the test extra installs it)
        backends = 2
    else:
        backends = len(get_available_backends())
    result.assert_outcomes(passed=1 + 2 * backends)


def test_the_timeline_example_serves_both_paths() -> None:
    namespace: dict[str, Any] = {"Lifewatch": Lifewatch}
    exec(block("timeline-example"), namespace)
    assert set(namespace["watch"]._routes) >= {"/lifewatch/timeline", "/lifewatch/timeline.json"}


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


@pytest.mark.anyio
async def test_the_readme_json_has_the_real_shape() -> None:
    documented = json.loads(block("timeline-json"))
    h = LifewatchHarness(service="orders")
    await h.run(shop(h.watch))
    real = h.timeline.to_dict()
    event = next(e for e in real["timeline"]["events"] if e["startupStep"]["name"] == "database")
    real["timeline"]["events"] = [event]
    # "reason" is null in both; key sets and value types must match everywhere.
    assert _shape(documented) == _shape(real)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
