"""Each internal lifewatch reads (``_compat``), against the installed release.

The installed releases are the newest the test extra allows; CI runs the
floors too. A test here fails when the internal a function reads has changed:
then the fallback (one warning) is what users get, and the function needs a
look.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount

from lifewatch import _compat

# function -> (what it reads from, the releases it was checked on: the newest
# the test extra installs, the floors, and the Pythons CI runs)
CHECKED = {
    "fastapi_merged_lifespans": ("fastapi", "0.112.2, 0.165.0"),
    "mount_base_app": ("starlette", "0.37.2, 1.10.0"),
    "logging_disabled_level": ("CPython logging", "3.10.13, 3.11.7, 3.12.1, 3.13.0"),
}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "_warned", set())


def _warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lifewatch"]


def test_every_compat_function_is_listed_with_the_releases_it_was_checked_on() -> None:
    functions = {
        name
        for name, value in vars(_compat).items()
        if inspect.isfunction(value) and value.__module__ == _compat.__name__
    }
    assert functions - {"warn_once"} == set(CHECKED)


def _lifespan(name: str) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield

    lifespan.__name__ = name
    return lifespan


def test_fastapi_merged_lifespans_takes_an_included_routers_lifespan_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI(lifespan=_lifespan("app"))
    router = APIRouter(lifespan=_lifespan("router"))
    before = app.router.lifespan_context
    app.include_router(router)
    parts = _compat.fastapi_merged_lifespans(app.router.lifespan_context)
    assert parts == (before, router.lifespan_context)
    assert _compat.fastapi_merged_lifespans(before) is None  # not merged: no parts
    assert _warned(caplog) == []


def test_mount_base_app_finds_the_app_under_the_mounts_middleware(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = Starlette()
    route = Mount("/v2", app=sub, middleware=[Middleware(GZipMiddleware)])
    assert route.app is not sub  # the public attribute is the middleware
    assert _compat.mount_base_app(route) is sub
    assert _warned(caplog) == []


def test_logging_disabled_level_reads_what_logging_disable_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        logging.disable(logging.WARNING)
        assert _compat.logging_disabled_level() == logging.WARNING
    finally:
        logging.disable(logging.NOTSET)
    assert _compat.logging_disabled_level() == logging.NOTSET
    assert _warned(caplog) == []


class _Merged:
    """What FastAPI's merged lifespan would be if its closure changed."""

    def __init__(self) -> None:
        def merged_lifespan() -> None: ...

        merged_lifespan.__qualname__ = "_merge_lifespan_context.<locals>.merged_lifespan"
        self.__wrapped__ = merged_lifespan


class _NoBase:
    app = Starlette()


def test_each_fallback_warns_once_and_does_without(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="lifewatch")
    for _ in range(2):
        assert _compat.fastapi_merged_lifespans(_Merged()) is None
        assert _compat.mount_base_app(_NoBase()) is _NoBase.app
    # A logging module whose root has no manager (logging itself still works).
    monkeypatch.setattr(
        _compat, "logging", types.SimpleNamespace(root=object(), getLogger=logging.getLogger)
    )
    for _ in range(2):
        assert _compat.logging_disabled_level() == 0
    warned = _warned(caplog)
    assert len(warned) == 3, warned
    assert "FastAPI" in warned[0] and "one phase" in warned[0]
    assert "Mount" in warned[1] and "runs no lifespan" in warned[1]
    assert "logging.disable" in warned[2]
