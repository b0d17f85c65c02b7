"""Timeouts, criticality, rollback, shutdown rules and the lifecycle state."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch, PhaseTimeout, State
from tests.conftest import Spans, sample


async def run_lifespan(watch: Lifewatch, lifespan: Any) -> None:
    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        pass


async def test_timeout_cancels_the_phase_and_records_reason_timeout(
    watch: Lifewatch, registry: CollectorRegistry, spans: Spans, logs: list[dict[str, Any]]
) -> None:
    reached_end = False

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        nonlocal reached_end
        async with watch.phase("model", timeout=0.05):
            await asyncio.sleep(30)
            reached_end = True
        yield

    start = time.monotonic()
    with pytest.raises(
        PhaseTimeout,
        match=r"startup phase 'model' failed \(timeout\): still running after timeout=0.05s",
    ) as info:
        await run_lifespan(watch, lifespan)
    assert time.monotonic() - start < 10  # bounded by the timeout, not the 30 s sleep
    assert not reached_end
    assert isinstance(info.value, TimeoutError)
    assert info.value.phase == "model"
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="model",
            event="startup",
            reason="timeout",
        )
        == 1
    )
    span = spans.named("lifespan.startup model")
    assert span.attributes["lifespan.outcome"] == "timeout"
    assert span.status.status_code.name == "ERROR"
    failed = [e for e in logs if e["event"] == "lifespan.phase.failed"]
    assert failed[0]["reason"] == "timeout" and failed[0]["phase"] == "model"


async def test_non_critical_failure_degrades_and_startup_goes_on(
    watch: Lifewatch, registry: CollectorRegistry, spans: Spans
) -> None:
    after: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("cache-warmup", critical=False):
            raise ConnectionError("redis down")
        async with watch.phase("slow-optional", critical=False, timeout=0.01):
            await asyncio.sleep(10)
        after.append("went on")
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        assert watch.state is State.READY
        assert after == ["went on"]
        assert watch.startup is not None and watch.startup.outcome == "degraded"
    outcomes = {p.name: (p.outcome, p.reason) for p in watch.startup.phases}
    assert outcomes["cache-warmup"] == ("degraded", "error")
    assert outcomes["slow-optional"] == ("degraded", "timeout")
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="cache-warmup",
            event="startup",
            reason="error",
        )
        == 1
    )
    span = spans.named("lifespan.startup cache-warmup")
    assert span.events[0].name == "exception"
    assert span.events[0].attributes["exception.message"] == "redis down"
    assert spans.named("lifespan.startup").attributes["lifespan.outcome"] == "degraded"


async def test_critical_failure_rolls_back_started_phases_in_reverse(
    watch: Lifewatch, registry: CollectorRegistry, spans: Spans, logs: list[dict[str, Any]]
) -> None:
    trail: list[str] = []

    def make(name: str, fail: bool = False) -> Any:
        @asynccontextmanager
        async def ls(app: Any) -> AsyncIterator[None]:
            trail.append(f"{name} up")
            if fail:
                raise OSError("connection refused")
            yield
            trail.append(f"{name} down")

        return ls

    composed = watch.lifespan(
        config=make("config"), db=make("db"), broker=make("broker", True), never=make("never")
    )
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    app = watch.instrument(Starlette(lifespan=composed))
    with pytest.raises(OSError, match="connection refused") as info:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert type(info.value) is OSError  # the app's own exception, not a wrapper
    assert trail == ["config up", "db up", "broker up", "db down", "config down"]
    assert messages[-1]["type"] == "lifespan.startup.failed"
    # What the server logs ends with the exception and the note naming the phase.
    last_lines = messages[-1]["message"].strip().splitlines()[-2:]
    assert last_lines == [
        "OSError: connection refused",
        "lifewatch: startup phase 'broker' failed (error)",
    ]
    assert watch.state is State.FAILED
    shutdown = watch.shutdown
    assert shutdown is not None
    assert [p.name for p in shutdown.phases] == ["db", "config"]
    assert sample(registry, "lifespan_state", state="failed") == 1
    assert sample(registry, "lifespan_state", state="ready") == 0
    failed = [e for e in logs if e["event"] == "lifespan.startup.failed"]
    assert len(failed) == 1 and failed[0]["phase"] == "broker"
    root = spans.named("lifespan.startup")
    assert root.status.status_code.name == "ERROR" and "broker" in (root.status.description or "")


async def test_every_shutdown_phase_runs_when_an_earlier_one_fails(
    watch: Lifewatch, registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    closed: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        async with watch.phase("http-client"):
            raise RuntimeError("already closed")
        async with watch.phase("database"):
            closed.append("database")

    @asynccontextmanager
    async def broken_exit(app: Any) -> AsyncIterator[None]:
        yield
        raise ValueError("flush failed")

    @asynccontextmanager
    async def last(app: Any) -> AsyncIterator[None]:
        yield
        closed.append("last")

    app = Starlette(lifespan=watch.lifespan(last, broken_exit, lifespan))
    with pytest.raises(ValueError, match="flush failed") as info:
        async with LifespanManager(watch.instrument(app)):
            pass
    assert closed == ["database", "last"]
    # Raised as AsyncExitStack would: the last error, the earlier one its context.
    assert isinstance(info.value.__context__, RuntimeError)
    assert str(info.value.__context__) == "already closed"
    assert info.value.__notes__ == ["lifewatch: shutdown phase 'broken_exit' failed (error)"]
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="http-client",
            event="shutdown",
            reason="error",
        )
        == 1
    )
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="broken_exit",
            event="shutdown",
            reason="error",
        )
        == 1
    )
    assert watch.state is State.STOPPED
    assert any(e["event"] == "lifespan.shutdown.complete" and e["outcome"] == "error" for e in logs)


async def test_shutdown_timeout_bounds_the_whole_shutdown(
    registry: CollectorRegistry, spans: Spans
) -> None:
    watch = Lifewatch(registry=registry, tracer_provider=spans.provider, shutdown_timeout=0.2)
    ran_sync_cleanup: list[str] = []

    @asynccontextmanager
    async def stuck(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.sleep(60)

    @asynccontextmanager
    async def first(app: Any) -> AsyncIterator[None]:
        yield
        ran_sync_cleanup.append("first")

    start = time.monotonic()
    with pytest.raises(
        PhaseTimeout,
        match=r"shutdown phase 'stuck' failed \(timeout\): still running after "
        r"shutdown_timeout=0.2s",
    ):
        async with LifespanManager(
            watch.instrument(Starlette(lifespan=watch.lifespan(first, stuck)))
        ):
            pass
    assert time.monotonic() - start < 5
    assert ran_sync_cleanup == ["first"]  # later phases still get their turn
    outcomes = {p.name: p.outcome for p in watch.shutdown.phases}  # type: ignore[union-attr]
    assert outcomes["stuck"] == "timeout"
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="stuck",
            event="shutdown",
            reason="timeout",
        )
        == 1
    )


async def test_startup_timeout_bounds_a_hung_startup(registry: CollectorRegistry) -> None:
    watch = Lifewatch(registry=registry, startup_timeout=0.1)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("hangs"):
            await asyncio.Event().wait()
        yield

    with pytest.raises(
        PhaseTimeout,
        match=r"startup phase 'hangs' failed \(timeout\): still running after startup_timeout=0.1s",
    ):
        await run_lifespan(watch, lifespan)
    assert watch.state is State.FAILED


def test_state_goes_starting_ready_stopping_stopped(
    watch: Lifewatch, registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    seen: list[State] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        seen.append(watch.state)
        yield
        seen.append(watch.state)

    with TestClient(watch.instrument(Starlette(lifespan=lifespan))):
        seen.append(watch.state)
        assert sample(registry, "lifespan_state", state="ready") == 1
        assert sample(registry, "lifespan_state", state="starting") == 0
    seen.append(watch.state)
    assert seen == [State.STARTING, State.READY, State.STOPPING, State.STOPPED]
    moves = [(e["from"], e["to"]) for e in logs if e["event"] == "lifespan.state"]
    assert moves == [("starting", "ready"), ("ready", "stopping"), ("stopping", "stopped")]
    ttr = sample(registry, "lifespan_time_to_ready_seconds")
    assert ttr is not None and ttr > 0


async def test_background_phase_keeps_state_starting_until_done(watch: Lifewatch) -> None:
    release = asyncio.Event()

    async def load_model() -> None:
        await release.wait()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        watch.background("model-load", load_model, timeout=10)
        yield

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        assert watch.startup_complete
        assert watch.state is State.STARTING
        release.set()
        for _ in range(100):
            await asyncio.sleep(0)
            if watch.state is State.READY:
                break
        assert watch.state is State.READY
    model = [p for p in watch.startup.phases if p.name == "model-load"]  # type: ignore[union-attr]
    assert model[0].outcome == "ok" and model[0].background


async def test_critical_background_failure_leaves_instance_failed(watch: Lifewatch) -> None:
    async def load_model() -> None:
        raise MemoryError("too big")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = watch.background("model-load", load_model)
        yield
        assert task.done()

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        for _ in range(100):
            await asyncio.sleep(0)
        assert watch.startup_complete
        assert watch.state is State.FAILED


async def test_background_phase_still_running_at_shutdown_is_cancelled(
    watch: Lifewatch, registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    """Shutdown cutting a background phase short is a cancellation, not a failure."""

    async def forever() -> None:
        await asyncio.Event().wait()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        watch.background("warm", forever, critical=False)
        yield

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        await asyncio.sleep(0)
    failures = sample(
        registry, "lifespan_phase_failures_total", phase="warm", event="startup", reason="cancelled"
    )
    assert failures is None
    end = next(e for e in logs if e["event"] == "lifespan.phase.end" and e["phase"] == "warm")
    assert (end["outcome"], end["log_level"]) == ("cancelled", "info")
    assert not [e for e in logs if e["event"] == "lifespan.phase.failed"]
    assert watch.shutdown is not None and watch.shutdown.outcome == "ok"


async def test_phase_outside_any_lifespan(
    watch: Lifewatch, spans: Spans, registry: CollectorRegistry
) -> None:
    async with watch.phase("adhoc", timeout=1):
        await asyncio.sleep(0)
    with pytest.raises(KeyError):
        async with watch.phase("adhoc-critical"):
            raise KeyError("boom")
    async with watch.phase("adhoc-optional", critical=False):
        raise KeyError("swallowed")
    assert spans.named("lifespan.startup adhoc").parent is None
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="adhoc-critical",
            event="startup",
            reason="error",
        )
        == 1
    )
    assert watch.startup is None  # not part of any run
    assert watch.state is State.STARTING


async def test_critical_child_of_a_non_critical_phase_only_degrades(
    watch: Lifewatch, logs: list[dict[str, Any]]
) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("cache-warmup", critical=False), watch.phase("fetch-hot-keys"):
            raise ConnectionError("redis down")
        yield

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        assert watch.state is State.READY
    startup = watch.startup
    assert startup is not None
    assert startup.outcome == "degraded" and startup.failed_phase is None
    events = [e["event"] for e in logs]
    assert "lifespan.startup.failed" not in events
    assert "lifespan.startup.complete" in events


async def test_phase_as_decorator_and_nested_children(watch: Lifewatch, spans: Spans) -> None:
    @watch.phase("load-config")
    async def load_config() -> str:
        async with watch.phase("read-file"):
            await asyncio.sleep(0)
        return "cfg"

    @watch.phase("flush")
    async def flush() -> None:
        pass

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        assert await load_config() == "cfg"
        yield
        await flush()

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        pass
    outer = spans.named("lifespan.startup load-config")
    inner = spans.named("lifespan.startup read-file")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert spans.named("lifespan.shutdown flush").attributes["lifespan.event"] == "shutdown"
    startup = watch.startup
    assert startup is not None
    by_name = {p.name: p for p in startup.phases}
    assert by_name["read-file"].parent is by_name["load-config"]


# -- sync phases and honest timeouts ---------------------------------------------


def _line_after() -> int:
    """The line number right after the caller's line: where a test's block is stuck."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


async def test_sync_phases_nest_from_async_code_sync_code_and_worker_threads(
    watch: Lifewatch, registry: CollectorRegistry, spans: Spans, logs: list[dict[str, Any]]
) -> None:
    @watch.phase("migrations")
    def run_migrations() -> str:
        with watch.phase("revision-1"):
            pass
        return "head"

    def init_db() -> str:  # the app's own sync code, called from the lifespan
        return run_migrations()

    revisions: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        with watch.phase("database", timeout=30):
            revisions.append(init_db())
        async with watch.phase("models"):
            await anyio.to_thread.run_sync(lambda: watch.phase("load")(lambda: None)())
        yield

    await run_lifespan(watch, lifespan)
    assert revisions == ["head"]
    timeline = watch.timeline
    by_id = {e.id: e.name for e in timeline.entries}
    parent = {e.name: by_id[e.parent_id] for e in timeline.entries if e.parent_id}
    assert parent["database"] == "lifespan"
    assert parent["migrations"] == "database"
    assert parent["revision-1"] == "migrations"
    assert parent["load"] == "models"
    span = {s.name: s for s in spans.finished()}
    assert span["lifespan.startup revision-1"].parent.span_id == (
        span["lifespan.startup migrations"].context.span_id
    )
    assert span["lifespan.startup migrations"].parent.span_id == (
        span["lifespan.startup database"].context.span_id
    )
    assert span["lifespan.startup load"].parent.span_id == (
        span["lifespan.startup models"].context.span_id
    )
    assert span["lifespan.startup database"].attributes["lifespan.outcome"] == "ok"
    for name in ("database", "migrations", "revision-1", "load"):
        assert (
            sample(registry, "lifespan_phase_duration_seconds", phase=name, event="startup")
            is not None
        )
    ends = {e["phase"]: e["outcome"] for e in logs if e["event"] == "lifespan.phase.end"}
    assert ends["migrations"] == ends["database"] == "ok"
    assert not [e for e in logs if e["event"] == "lifespan.phase.overrun"]


@pytest.mark.blockbuster_off("a phase blocks the loop: what lifewatch reports then")
async def test_a_sync_phase_over_its_timeout_is_a_timeout_naming_the_stuck_line(
    watch: Lifewatch, registry: CollectorRegistry, spans: Spans, logs: list[dict[str, Any]]
) -> None:
    timeout = 0.05
    stuck_line = 0

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        nonlocal stuck_line
        with watch.phase("migrations", timeout=timeout):
            stuck_line = _line_after()
            time.sleep(timeout * 10)  # noqa: ASYNC251 - blocking, on purpose
        yield

    with pytest.raises(PhaseTimeout, match=r"phase 'migrations' failed \(timeout\)") as info:
        await run_lifespan(watch, lifespan)
    assert info.value.__cause__ is None
    (overrun,) = [e for e in logs if e["event"] == "lifespan.phase.overrun"]
    assert overrun["phase"] == "migrations" and overrun["timeout_s"] == timeout
    assert overrun["stuck_at"].startswith(f"{__file__}:{stuck_line} in lifespan")
    assert f"line {stuck_line}, in lifespan" in overrun["stack"]
    assert overrun["log_level"] == "warning"
    span = spans.named("lifespan.startup migrations")
    assert span.attributes["lifespan.outcome"] == "timeout"
    (event,) = [e for e in span.events if e.name == "lifespan.phase.overrun"]
    assert str(stuck_line) in event.attributes["stuck_at"]
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="migrations",
            event="startup",
            reason="timeout",
        )
        == 1
    )
    assert watch.state is State.FAILED
    assert watch.startup is not None and watch.startup.failed_phase == "migrations"


@pytest.mark.blockbuster_off("a phase blocks the loop: what lifewatch reports then")
async def test_an_async_phase_on_a_blocked_loop_is_a_timeout_too(
    watch: Lifewatch, logs: list[dict[str, Any]]
) -> None:
    timeout = 0.05
    stuck_line = 0

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        nonlocal stuck_line
        async with watch.phase("warmup", timeout=timeout, critical=False):
            stuck_line = _line_after()
            time.sleep(timeout * 12)  # noqa: ASYNC251 - the loop blocked: no cancel fires
        yield

    await run_lifespan(watch, lifespan)  # non-critical: startup goes on
    entry = watch.timeline.find("warmup")
    assert (entry.outcome, entry.reason) == ("degraded", "timeout")
    (overrun,) = [e for e in logs if e["event"] == "lifespan.phase.overrun"]
    assert f":{stuck_line} in lifespan" in overrun["stuck_at"]


def test_a_block_that_raises_after_its_timeout_raises_phase_timeout_from_it(
    watch: Lifewatch,
) -> None:
    def blocking_then_broken() -> None:
        with watch.phase("load", timeout=0.02):
            time.sleep(0.3)
            raise ValueError("bad model file")

    with pytest.raises(PhaseTimeout) as info:
        blocking_then_broken()
    assert isinstance(info.value.__cause__, ValueError)


def test_a_sync_phase_within_its_timeout_is_ok_and_raises_as_itself(watch: Lifewatch) -> None:
    with watch.phase("quick", timeout=30):
        pass
    with pytest.raises(KeyError) as info, watch.phase("broken", timeout=30):
        raise KeyError("x")
    assert "lifewatch: startup phase 'broken' failed (error)" in info.value.__notes__
    assert watch.timeline  # no run: the phases ran outside any lifespan


async def test_an_async_phase_cut_by_its_own_timeout_reports_no_overrun(
    watch: Lifewatch, logs: list[dict[str, Any]]
) -> None:
    async def cut() -> None:
        async with watch.phase("slow", timeout=0.02, critical=False):
            await asyncio.sleep(5)

    await cut()
    await asyncio.sleep(0.4)  # past the watchdog's look
    assert [e["event"] for e in logs if e.get("phase") == "slow"][-1] == "lifespan.phase.end"
    assert not [e for e in logs if e["event"] == "lifespan.phase.overrun"]
