"""lifewatch.testing: the harness users put in their own tests, used here on real apps."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from lifewatch import Lifewatch, LifewatchMiddleware, State
from lifewatch.testing import LifespanFailed, LifewatchHarness

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # watch.background schedules asyncio tasks


def orders_app(watch: Lifewatch, *, fail: bool = False) -> FastAPI:
    """An app factory taking the watch: the pattern the README recommends."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        async with watch.phase("db"):
            await asyncio.sleep(0.01)
            if fail:
                raise ConnectionError("connection refused")
        yield {"db": "pool"}
        async with watch.phase("db"):
            await asyncio.sleep(0)

    return watch.instrument(FastAPI(lifespan=lifespan))


async def test_fixture_captures_spans_metrics_and_logs(
    lifewatch_harness: LifewatchHarness,
) -> None:
    h = lifewatch_harness
    app = orders_app(h.watch)
    async with h.serving(app) as state:
        assert state == {"db": "pool"}  # the lifespan state, as handlers would see it
        assert h.watch.state is State.READY
        assert h.span("lifespan.startup db").status.status_code is StatusCode.UNSET
    assert h.watch.state is State.STOPPED
    assert h.span("lifespan.shutdown db").parent is not None
    duration = h.metric("lifespan_phase_duration_seconds", phase="db", event="startup")
    # Its 0.01 s sleep, in seconds: in milliseconds it would be 10 and more.
    assert duration is not None and 0.01 <= duration < 10
    assert h.metric("lifespan_state", state="stopped") == 1.0
    ends = h.events("lifespan.phase.end", phase="db")
    assert [e["lifespan_event"] for e in ends] == ["startup", "shutdown"]
    assert all(e["service"] == "test" for e in ends)
    assert h.timeline.find("db").outcome == "ok"


async def test_startup_failure_names_the_phase(lifewatch_harness: LifewatchHarness) -> None:
    h = lifewatch_harness
    with pytest.raises(LifespanFailed, match="'db'") as info:
        await h.run(orders_app(h.watch, fail=True))
    assert info.value.event == "startup"
    assert h.metric("lifespan_phase_failures_total", phase="db", event="startup", reason="error")
    assert h.events("lifespan.startup.failed", phase="db")
    assert h.span("lifespan.startup db").status.status_code is StatusCode.ERROR
    assert h.watch.state is State.FAILED


async def test_a_hung_startup_fails_within_the_timeout() -> None:
    async def hangs(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await anyio.sleep_forever()

    h = LifewatchHarness()
    with anyio.fail_after(5):  # the harness, not this guard, must end it
        with pytest.raises(LifespanFailed, match=r"no answer within 0.2s"):
            await h.run(LifewatchMiddleware(hangs, watch=h.watch), startup_timeout=0.2)


async def test_an_app_without_lifespan_support_is_still_timed() -> None:
    async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", "no lifespan here"

    h = LifewatchHarness(service="raw")
    await h.run(LifewatchMiddleware(http_only, watch=h.watch))
    assert h.span("lifespan.startup").attributes is not None
    assert h.metric("lifespan_startup_duration_seconds") is not None
    assert h.events("lifespan.shutdown.complete", service="raw")


async def test_a_crashing_lifespan_is_reported_with_its_cause() -> None:
    async def crashes(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("boom")

    h = LifewatchHarness()
    with pytest.raises(LifespanFailed, match="boom") as info:
        await h.run(crashes)
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_harnesses_are_isolated_and_leave_structlog_as_it_was() -> None:
    before = structlog.get_config()["processors"].copy()
    one, two = LifewatchHarness(service="one"), LifewatchHarness(service="two")
    with one:
        await one.run(orders_app(one.watch))
        # Same metric names, separate registries: nothing leaks into `two`.
        labels = {"phase": "db", "event": "startup"}
        assert one.metric("lifespan_phase_duration_seconds", **labels) is not None
        assert two.metric("lifespan_phase_duration_seconds", **labels) is None
        assert two.spans == ()
    assert structlog.get_config()["processors"] == before
    seen = len(one.logs)
    structlog.get_logger("lifewatch").info("after.close")
    assert len(one.logs) == seen  # capture stopped with the block
    assert not one.events("after.close")


def test_the_harness_owns_registry_and_tracer() -> None:
    with pytest.raises(TypeError, match="registry"):
        LifewatchHarness(registry=None)


async def test_an_error_in_the_test_body_still_shuts_down_and_propagates_as_is(
    lifewatch_harness: LifewatchHarness,
) -> None:
    h = lifewatch_harness
    with pytest.raises(KeyError, match="oops"):
        async with h.serving(orders_app(h.watch)):
            raise KeyError("oops")
    assert h.watch.state is State.STOPPED
    assert h.events("lifespan.shutdown.complete")


# A module-level watch and app, the way many apps are written.
module_watch = Lifewatch(service="orders", registry=CollectorRegistry())
module_app = orders_app(module_watch)


async def test_an_adopted_watch_is_observed_test_after_test() -> None:
    for _ in range(2):  # one app, two lifespans: both must be watched, and ready
        with LifewatchHarness(module_watch) as h:
            async with h.serving(module_app):
                assert module_watch.state is State.READY
            assert [s.name for s in h.spans].count("lifespan.startup db") == 1
            assert h.events("lifespan.startup.complete", service="orders")
            assert h.metric("lifespan_phase_duration_seconds", phase="db", event="startup")
    # Closed: the watch's spans no longer go to the harness.
    await LifewatchHarness().run(module_app)
    assert [s.name for s in h.spans].count("lifespan.startup db") == 1


def test_adopting_takes_no_options() -> None:
    with pytest.raises(TypeError, match="no Lifewatch options"):
        LifewatchHarness(module_watch, service="x")
    with pytest.raises(TypeError, match=r"lifewatch\.Lifewatch"):
        LifewatchHarness(object())  # type: ignore[arg-type]
