"""Fault rows for health checks: whatever a check does, its probe answers in bound.

Each row asserts the bound (at least the check's timeout, and an answer while
the check still hangs: no upper time, which a loaded machine stretches), what
the client gets, what the metrics and the log say, and that tasks, threads, file
descriptors and memory come back (10,000 probes on the leak rows).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from lifewatch._checks import ABANDON_GRACE
from tests.support.faults import Resources, app_of, probes, settled, watch_with
from tests.support.probes import call

pytestmark = pytest.mark.anyio  # here, not only added at collection: parametrized rows

SLACK = 4.0
"""A measured duration is at most this many times what it measures (a loaded CI box)."""

HANG = 60.0
"""A probe not answered in this long hangs: the test fails instead of waiting on."""


def failures(registry: CollectorRegistry, check: str, reason: str) -> float:
    value = registry.get_sample_value(
        "lifespan_check_failures_total", {"check": check, "reason": reason}
    )
    return value or 0.0


async def timed(app: Any, path: str, **kw: Any) -> tuple[int, bytes, float]:
    """One probe, failing (not hanging) the test if it never answers."""
    started = time.monotonic()
    status, _, body = await asyncio.wait_for(call(app, path, **kw), timeout=HANG)
    return status, body, time.monotonic() - started


async def test_a_hanging_async_check(logs: list[dict[str, Any]]) -> None:
    """Row: an async check that never returns. 503 at its timeout, nothing kept."""
    registry = CollectorRegistry()
    watch = watch_with(registry, expose_details=True)
    timeout = 0.1

    @watch.check("hangs", timeout=timeout)
    async def hangs() -> None:
        await asyncio.Event().wait()

    app = app_of(watch)
    status, body, took = await timed(app, "/readyz/hangs")  # answered: the check never returns
    assert status == 503 and b"[-]hangs failed: timed out after 0.1s" in body
    assert timeout <= took

    watch.add_check("fast-hang", hangs, timeout=0.002)
    await probes(app, "/readyz/fast-hang", 1000, batch=100)  # warm-up
    before = Resources.now()
    statuses = await probes(app, "/readyz/fast-hang", 10_000, batch=100)
    assert statuses == [503] * 10_000
    await settled(before)
    assert failures(registry, "fast-hang", "timeout") >= 100  # one per shared run
    logged = [e for e in logs if e["event"] == "lifespan.check.failed"]
    assert [e["check"] for e in logged] == ["hangs", "fast-hang"]  # on transitions only


async def test_a_hanging_sync_check(logs: list[dict[str, Any]]) -> None:
    """Row: a sync check that never returns. 503 at its timeout, one thread at most."""
    registry = CollectorRegistry()
    watch = watch_with(registry, expose_details=True)
    release = threading.Event()
    returned = threading.Event()
    timeout = 0.1

    @watch.check("blocks", timeout=timeout)
    def blocks() -> None:
        release.wait(HANG)
        returned.set()

    app = app_of(watch)
    before = Resources.now()
    try:
        status, body, took = await timed(app, "/readyz/blocks")
        assert status == 503 and b"timed out after 0.1s" in body
        assert timeout <= took and not returned.is_set()  # answered while it hangs
        statuses = await probes(app, "/readyz/blocks", 10_000, batch=100)
        assert statuses == [503] * 10_000
        _, _, body = await call(app, "/readyz/blocks")
        assert b"previous run still running in its thread" in body
        await settled(before, threads=1)  # the one hung thread, never more
    finally:
        release.set()
    await settled(before)  # released: the thread is gone
    assert (await call(app, "/readyz/blocks"))[0] == 200
    assert failures(registry, "blocks", "timeout") >= 100  # one per shared run


async def test_a_check_that_swallows_its_cancellation(logs: list[dict[str, Any]]) -> None:
    """Row (issue point 1): the probe answers at timeout + grace; the run is
    abandoned, counted and logged once; no task piles up behind it."""
    registry = CollectorRegistry()
    watch = watch_with(registry, expose_details=True)
    release = asyncio.Event()
    swallowed = 0
    timeout = 0.1

    @watch.check("stubborn", timeout=timeout)
    async def stubborn() -> None:
        nonlocal swallowed
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                swallowed += 1

    app = app_of(watch)
    await asyncio.sleep(0)
    before = Resources.now()
    try:
        status, body, took = await timed(app, "/readyz/stubborn")  # answered: it never returns
        assert status == 503
        assert b"ignored its cancellation" in body
        assert timeout + ABANDON_GRACE <= took
        assert swallowed == 1
        statuses = await probes(app, "/readyz/stubborn", 10_000, batch=100)
        assert statuses == [503] * 10_000
        _, _, body = await call(app, "/readyz", query=b"verbose")
        assert (
            b"[-]stubborn failed: previous run still running (it ignored its cancellation)" in body
        )
        await settled(before, tasks=1)  # the abandoned run only
        abandoned = [e for e in logs if e["event"] == "lifespan.check.abandoned"]
        assert len(abandoned) == 1 and abandoned[0]["log_level"] == "warning"
        assert abandoned[0]["check"] == "stubborn"
    finally:
        release.set()  # else the test's loop could never close
    await settled(before)  # it returned: its task is gone
    assert (await call(app, "/readyz/stubborn"))[0] == 200
    assert len([e for e in logs if e["event"] == "lifespan.check.abandoned"]) == 1


@pytest.mark.parametrize(
    "raised", [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), asyncio.CancelledError()]
)
@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_check_raising_a_base_exception(
    raised: BaseException, flavour: str, logs: list[dict[str, Any]]
) -> None:
    """Row (issue point 2): a check's exception, any kind, is a failed check;
    the loop (the server) goes on. The real-uvicorn half is in test_processes."""
    registry = CollectorRegistry()
    watch = watch_with(registry)

    async def async_check() -> None:
        raise raised

    def sync_check() -> None:
        raise raised

    watch.add_check("dies", async_check if flavour == "async" else sync_check, timeout=1.0)
    app = app_of(watch)
    for _ in range(3):
        status, body, _ = await timed(app, "/readyz/dies")
        assert status == 503 and body.startswith(b"[-]dies failed: reason withheld")
    assert failures(registry, "dies", "error") == 3
    failed = next(e for e in logs if e["event"] == "lifespan.check.failed")
    assert failed["error"].startswith(type(raised).__name__)
    assert (await call(app, "/livez"))[0] == 200  # still serving


async def test_a_check_returning_after_it_swallowed_the_cancel(
    logs: list[dict[str, Any]],
) -> None:
    """Row (issue point 3): late is a timeout, not a pass."""
    registry = CollectorRegistry()
    watch = watch_with(registry, expose_details=True)
    timeout = 0.1

    @watch.check("late", timeout=timeout)
    async def late() -> None:
        try:
            await asyncio.sleep(timeout * 10)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # back at once, before the waiters give up

    app = app_of(watch)
    status, body, _ = await timed(app, "/readyz/late")
    assert status == 503, body
    assert b"timed out after 0.1s (ignored its cancellation)" in body  # not abandoned
    assert failures(registry, "late", "timeout") == 1
    result = watch._health.runners["late"].result
    assert result is not None and not result.ok


@pytest.mark.blockbuster_off("a check blocks the loop: what /readyz answers then")
async def test_an_async_check_blocking_the_event_loop(logs: list[dict[str, Any]]) -> None:
    """Row (issue point 3): ``time.sleep`` in an ``async def`` check is a timeout,
    and the log says it blocked the loop, and for how long."""
    registry = CollectorRegistry()
    watch = watch_with(registry, expose_details=True)
    timeout = 0.1

    @watch.check("sleeps", timeout=timeout)
    async def sleeps() -> None:
        time.sleep(timeout * 3)  # noqa: ASYNC251 - the fault under test

    app = app_of(watch)
    status, _, body = await call(app, "/readyz/sleeps")
    assert status == 503
    assert b"timed out after 0.1s (blocked the event loop)" in body
    assert failures(registry, "sleeps", "timeout") == 1
    blocked = [e for e in logs if e["event"] == "lifespan.check.blocked"]
    assert len(blocked) == 1 and blocked[0]["log_level"] == "warning"
    assert timeout * 3 * 0.9 <= blocked[0]["blocked_s"] < timeout * 3 * SLACK
    assert blocked[0]["timeout_s"] == timeout


async def test_the_named_endpoint_of_a_failing_non_critical_check() -> None:
    """Row (issue point 4): ``/readyz/<check>`` reports that check, as the
    kube-apiserver does; ``/readyz`` itself only warns."""
    watch = watch_with()

    @watch.check("redis", critical=False)
    async def redis() -> None:
        raise ConnectionError("redis down")

    app = app_of(watch)
    status, _, body = await call(app, "/readyz/redis")
    assert status == 503
    assert body.startswith(b"[-]redis failed")
    assert body.endswith(b"readyz check failed\n")
    status, _, body = await call(
        app, "/readyz/redis", headers=[(b"accept", b"application/health+json")]
    )
    assert status == 503 and json.loads(body)["status"] == "fail"
    status, _, body = await call(app, "/readyz", headers=[(b"accept", b"application/health+json")])
    assert json.loads(body)["checks"]["redis"][0]["status"] == "warn"
