"""A wrong argument raises an error that says what was given and what is accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, LifewatchMiddleware


@asynccontextmanager
async def db(app: Any) -> AsyncIterator[None]:
    yield


@pytest.fixture
def lw() -> Lifewatch:
    return Lifewatch(registry=CollectorRegistry())


@pytest.mark.parametrize(
    ("lifespan", "message"),
    [
        (42, r"must be an async context manager factory.*got 42"),
        ("db", r"got 'db'"),
        (db(None), r"async context manager instance .*pass the factory"),
    ],
)
def test_lifespan_of_the_wrong_kind(lw: Lifewatch, lifespan: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        lw.lifespan(lifespan)


def test_coroutine_function_is_not_a_lifespan(lw: Lifewatch) -> None:
    async def not_a_lifespan(app: Any) -> None:
        pass

    with pytest.raises(TypeError, match="not_a_lifespan"):
        lw.lifespan(not_a_lifespan)


async def test_factory_returning_something_else_names_it(lw: Lifewatch) -> None:
    def returns_int(app: Any) -> int:
        return 1

    with pytest.raises(Exception, match=r"'returns_int' returned 1, which is not an async"):
        async with lw.lifespan(returns_int)(None):
            pass


def test_duplicate_names_in_one_composition(lw: Lifewatch) -> None:
    with pytest.raises(ValueError, match=r"named 'db'.*unique"):
        lw.lifespan(db, db)
    with pytest.raises(ValueError, match=r"named 'db'"):
        lw.lifespan(db, db=db)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_bad_timeouts(lw: Lifewatch, timeout: Any) -> None:
    with pytest.raises(ValueError, match=r"timeout must be a positive number.*got"):
        lw.phase("x", timeout=timeout)
    with pytest.raises(ValueError, match=r"shutdown_timeout must be a positive"):
        Lifewatch(registry=CollectorRegistry(), shutdown_timeout=timeout)


@pytest.mark.parametrize("name", ["", "   ", None, 3, b"db"])
def test_bad_phase_names(lw: Lifewatch, name: Any) -> None:
    with pytest.raises(TypeError, match=r"phase name must be a non-empty string; got"):
        lw.phase(name)


def test_critical_must_be_a_bool(lw: Lifewatch) -> None:
    with pytest.raises(TypeError, match=r"critical must be True or False; got 'no'"):
        lw.phase("x", critical="no")  # type: ignore[arg-type]


def test_decorating_a_generator_function_or_a_non_callable(lw: Lifewatch) -> None:
    def gen() -> Any:
        yield

    async def agen() -> Any:
        yield

    for target in (gen, agen, "not a function"):
        with pytest.raises(TypeError, match=r"decorates functions and async functions"):
            lw.phase("x")(target)


@pytest.mark.parametrize("app", [object(), lambda scope, r, s: None, "app"])
def test_instrument_needs_a_starlette_app(lw: Lifewatch, app: Any) -> None:
    with pytest.raises(TypeError, match=r"takes a Starlette or FastAPI application; got"):
        lw.instrument(app)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"namespace='1bad' is not a valid"):
        Lifewatch(namespace="1bad")
    with pytest.raises(TypeError, match=r"registry must be a prometheus_client"):
        Lifewatch(registry={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"service must be a string"):
        Lifewatch(service=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes 1 positional argument but 2 were given"):
        Lifewatch("svc")  # type: ignore[misc]


def test_middleware_arguments(lw: Lifewatch) -> None:
    with pytest.raises(TypeError, match=r"watch must be a lifewatch.Lifewatch; got None"):
        LifewatchMiddleware(Starlette(), watch=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"app must be an ASGI application"):
        LifewatchMiddleware(None, watch=lw)  # type: ignore[arg-type]


def test_background_needs_an_async_function(lw: Lifewatch) -> None:
    with pytest.raises(TypeError, match=r"takes an async function"):
        lw.background("model", lambda: None)  # type: ignore[arg-type, return-value]
