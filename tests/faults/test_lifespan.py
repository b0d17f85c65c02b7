"""Fault rows of the lifespan in process: sinks that raise, a background phase
cut by shutdown, secrets in failures."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, Sink, State
from lifewatch._sink import Sink as BaseSink
from tests.support.faults import Resources, probes, settled
from tests.support.probes import call
from tests.support.servers import ROOT, env

pytestmark = pytest.mark.anyio

SECRET = "S3cr3t"
DSN = f"postgres://admin:{SECRET}@db:5432/orders"


class Raising(Sink):
    """A sink whose every hook raises: a bug in a user's sink."""


# Every hook the Sink interface has (a hook added later raises here too).
for _hook in [name for name in vars(BaseSink) if not name.startswith("_")]:

    def _raise(self: Any, *args: Any, _hook: str = _hook) -> None:
        raise RuntimeError(f"sink bug in {_hook}")

    _raise.__qualname__ = f"Raising.{_hook}"
    setattr(Raising, _hook, _raise)
assert all(getattr(Raising, h) is not getattr(BaseSink, h) for h in ("run_end", "notice"))


async def test_sinks_that_raise(logs: list[dict[str, Any]]) -> None:
    """Row: every hook of a sink raises. The app, its probes and its shutdown
    behave as without the sink; each failure is logged; nothing leaks over
    10,000 probes."""
    registry = CollectorRegistry()
    watch = Lifewatch(service="faults", registry=registry, sinks=(Raising(),))
    ran: list[str] = []

    @watch.check("db", timeout=1.0)
    async def db() -> None:
        pass

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("database"):
            ran.append("startup")
        yield
        async with watch.phase("close"):
            ran.append("shutdown")

    failed: list[tuple[str, str]] = []

    def tally() -> None:
        # The capture keeps every event, its exception and that one's frames:
        # memory of the test's, not of lifewatch's, so counted and let go.
        failed.extend(
            (e["hook"], e["log_level"]) for e in logs if e["event"] == "lifespan.sink.failed"
        )
        logs.clear()

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        await probes(app, "/readyz", 1000, batch=100)  # warm-up
        tally()
        before = Resources.now()
        for _ in range(10):
            assert await probes(app, "/readyz", 1000, batch=100) == [200] * 1000
            tally()
        await settled(before)
        # Each check run's failure is logged: a run answers at least each batch.
        assert sum(hook == "Raising.check_result" for hook, _ in failed) >= 110
    tally()
    assert ran == ["startup", "shutdown"] and watch.state is State.STOPPED
    hooks = {hook for hook, _ in failed}
    assert {f"Raising.{h}" for h in ("run_begin", "run_end", "phase_end", "check_result")} <= hooks
    assert all(level == "error" for _, level in failed)


async def test_a_background_phase_cut_by_shutdown(logs: list[dict[str, Any]]) -> None:
    """Row (issue point 8): outcome ``cancelled``, at INFO, not a failure."""
    registry = CollectorRegistry()
    watch = Lifewatch(service="faults", registry=registry)

    async def load_model() -> None:
        await asyncio.Event().wait()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        watch.background("model-load", load_model, timeout=600)
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        assert (await call(app, "/readyz"))[0] == 503  # still loading
        assert (await call(app, "/startupz"))[0] == 200
    assert watch.state is State.STOPPED
    phase = next(p for p in watch.timeline.entries if p.name == "model-load")
    assert phase.outcome == "cancelled"
    failures = registry.get_sample_value(
        "lifespan_phase_failures_total",
        {"phase": "model-load", "event": "startup", "reason": "cancelled"},
    )
    assert failures is None
    end = next(e for e in logs if e["event"] == "lifespan.phase.end" and e["phase"] == "model-load")
    assert end["log_level"] == "info" and end["outcome"] == "cancelled"
    assert not [e for e in logs if e["log_level"] in ("error", "warning")]


async def test_secrets_in_failures_stay_out_of_lifewatch_records(
    logs: list[dict[str, Any]],
) -> None:
    """Row (issue point 9): a phase and a check failing with a DSN in the
    message; lifewatch's records carry it scrubbed (the traceback too)."""
    watch = Lifewatch(service="faults", registry=CollectorRegistry())

    @watch.check("db")
    async def db() -> None:
        raise ConnectionRefusedError(f"{DSN} refused")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("cache", critical=False):
            raise ConnectionRefusedError(f"{DSN} refused")
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        assert (await call(app, "/readyz"))[0] == 503
    assert logs and SECRET not in repr(logs)
    failed = next(e for e in logs if e["event"] == "lifespan.phase.failed")
    assert "exc_info" not in failed
    assert failed["exception"].startswith("Traceback (most recent call last)")
    assert "postgres://***@db:5432/orders refused" in failed["exception"]
    check = next(e for e in logs if e["event"] == "lifespan.check.failed")
    assert check["error"] == "ConnectionRefusedError: postgres://***@db:5432/orders refused"


LOCALS_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import logging
    import sys
    from contextlib import asynccontextmanager
    from asgi_lifespan import LifespanManager
    from starlette.applications import Starlette
    from lifewatch import Lifewatch

    if sys.argv[1] == "stdlib":  # structlog unconfigured: the stdlib logger 'lifewatch'
        logging.basicConfig(format="%(levelname)s %(message)s")
    watch = Lifewatch(service="faults", logger=sys.argv[1])

    @asynccontextmanager
    async def lifespan(app):
        async with watch.phase("cache", critical=False):
            token = "L0cal-t0ken"  # what a traceback with locals would print
            raise ConnectionError(f"cache down ({len(token)})")
        yield

    async def main():
        async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
            pass

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("way", ["structlog", "stdlib"])
def test_a_failure_with_structlog_unconfigured_prints_no_locals(way: str) -> None:
    """Row (issue point 9): structlog's default renderer prints every frame's
    locals when rich is installed; lifewatch's record carries a plain
    traceback instead, once, whether it goes through structlog (chosen,
    unconfigured) or, as it does by default with structlog unconfigured,
    through the stdlib logger."""
    assert importlib.util.find_spec("rich"), "rich is in the test extra: pip install rich"
    proc = subprocess.run(
        [sys.executable, "-c", LOCALS_SCRIPT, way],
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("Traceback (most recent call last)") == 1, out
    assert "ConnectionError: cache down (11)" in out
    assert "L0cal-t0ken" not in out, out
    failed = [line for line in out.splitlines() if "lifespan.phase.failed" in line]
    assert len(failed) == 1 and "warning" in failed[0].lower(), out
