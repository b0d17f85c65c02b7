"""The timeline: data, Spring-Boot-shaped JSON with the span ids, and its endpoints."""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch, Timeline
from lifewatch._process import process_start_time
from lifewatch._timeline import iso_duration
from lifewatch._waterfall import wants_json
from lifewatch.testing import LifespanFailed, LifewatchHarness
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

PATH = "/lifewatch/timeline"
EVIL = "<script>alert(1)</script>"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def shop(watch: Lifewatch, *, fail_at: str | None = None) -> Starlette:
    """Nested, degraded, timed-out and hostile-named phases; shutdown too."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with watch.phase("config"):
            await asyncio.sleep(0.005)
        async with watch.phase("database", tags={"host": "db-1"}):
            async with watch.phase("connect"):
                await asyncio.sleep(0.01)
            async with watch.phase("migrate"):
                if fail_at == "migrate":
                    raise RuntimeError("bad migration")
        async with watch.phase("cache-warmup", critical=False):
            raise ConnectionError("redis down")
        async with watch.phase("flags", critical=False, timeout=0.02):
            await asyncio.sleep(5)
        async with watch.phase(EVIL):
            pass
        yield
        async with watch.phase("flush"):
            await asyncio.sleep(0.005)

    return watch.instrument(Starlette(lifespan=lifespan))


async def test_entries_nest_in_order_with_the_span_ids() -> None:
    h = LifewatchHarness(service="shop")
    await h.run(shop(h.watch))
    tl = h.timeline
    assert [e.name for e in tl.run("startup")] == [
        "boot",  # process start to the first lifespan event
        "lifespan.startup",
        "lifespan",  # the wrapped lifespan itself is a phase
        "config",
        "database",
        "connect",
        "migrate",
        "cache-warmup",
        "flags",
        EVIL,
    ]
    assert [e.name for e in tl.run("shutdown")] == ["lifespan.shutdown", "lifespan", "flush"]
    by_id = {e.id: e for e in tl.entries}
    assert len(by_id) == len(tl.entries)
    for entry in tl.entries[1:]:
        span_name = entry.name if entry.kind == "run" else f"lifespan.{entry.event} {entry.name}"
        span = [s for s in h.spans if s.name == span_name and entry.id in _ids(s)]
        assert len(span) == 1, entry
        assert entry.id == format(span[0].context.span_id, "016x")
        if entry.parent_id is None:
            assert entry.kind == "run" and entry.depth == 0
        else:
            parent = by_id[entry.parent_id]
            assert span[0].parent is not None
            assert entry.parent_id == format(span[0].parent.span_id, "016x")
            assert entry.depth == parent.depth + 1
            assert parent.start <= entry.start
            assert entry.end is not None and parent.end is not None
            assert entry.end <= parent.end + 1e-6
    db = tl.find("database")
    assert tl.find("connect").parent_id == db.id and tl.find("connect").depth == 3
    assert db.tags == {"host": "db-1"}
    assert tl.find("cache-warmup").outcome == "degraded"
    assert tl.find("flags").outcome == "degraded" and tl.find("flags").reason == "timeout"
    # Cut at its 0.02 s timeout, not after its 5 s sleep.
    assert 0.015 < (tl.find("flags").duration or 0) < 5 / 2
    assert tl.find("lifespan.startup").outcome == "degraded"
    assert tl.find("flush", "shutdown").outcome == "ok"


def _ids(span: Any) -> set[str]:
    return {format(span.context.span_id, "016x")}


async def test_without_an_sdk_the_record_numbers_are_the_ids() -> None:
    watch = Lifewatch(registry=CollectorRegistry(), tracer_provider=NoOpTracerProvider())
    h = LifewatchHarness()
    await h.run(shop(watch))
    tl = watch.timeline
    assert tl.entries[0].id == "boot"
    assert all(e.id.isdigit() for e in tl.entries[1:])
    assert len({e.id for e in tl.entries}) == len(tl.entries)
    assert tl.find("connect").parent_id == tl.find("database").id
    assert tl.find("config").parent_id == tl.find("lifespan").id


async def test_json_has_the_spring_boot_startup_shape() -> None:
    h = LifewatchHarness(service="shop")
    await h.run(shop(h.watch))
    doc = json.loads(json.dumps(h.timeline.to_dict()))
    assert doc["service"] == "shop"
    events = doc["timeline"]["events"]
    assert doc["timeline"]["startTime"] == events[0]["startTime"]
    spans = {format(s.context.span_id, "016x"): s for s in h.spans}
    assert events[0]["startupStep"]["id"] == "boot"  # no span: before any lifespan event
    for ev in events:
        step = ev["startupStep"]
        assert set(step) == {"id", "parentId", "name", "tags"}
        assert step["id"] in spans or step["id"] == "boot"
        assert step["parentId"] is None or step["parentId"] in spans
        assert re.fullmatch(r"PT(\d+H)?(\d+M)?(\d+(\.\d+)?S)?", ev["duration"]), ev["duration"]
        start, end = (
            datetime.fromisoformat(ev[k].replace("Z", "+00:00")) for k in ("startTime", "endTime")
        )
        assert start <= end
        assert abs((end - start).total_seconds() - ev["durationSeconds"]) < 2e-6
        tags = {t["key"]: t["value"] for t in step["tags"]}
        assert tags["lifespan.event"] == ev["event"]
        assert tags["lifespan.outcome"] == ev["outcome"]
    flags = next(ev for ev in events if ev["startupStep"]["name"] == "flags")
    tags = {t["key"]: t["value"] for t in flags["startupStep"]["tags"]}
    assert tags["lifespan.phase.reason"] == "timeout"
    assert tags["lifespan.phase.critical"] == "false"
    db = next(ev for ev in events if ev["startupStep"]["name"] == "database")
    assert {"key": "lifespan.tag.host", "value": "db-1"} in db["startupStep"]["tags"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "PT0S"), (0.012, "PT0.012S"), (1.5, "PT1.5S"), (90, "PT1M30S"), (3661.25, "PT1H1M1.25S")],
)
def test_iso_durations_read_like_java(seconds: float, text: str) -> None:
    assert iso_duration(seconds) == text


async def test_a_failed_startup_shows_the_failure_and_the_rollback() -> None:
    h = LifewatchHarness()
    with pytest.raises(LifespanFailed, match="migrate"):
        await h.run(shop(h.watch, fail_at="migrate"))
    tl = h.timeline
    assert tl.find("migrate").outcome == "error"
    assert tl.find("lifespan.startup").outcome == "error"
    assert [e.name for e in tl.run("shutdown")] == ["lifespan.shutdown"]  # nothing entered


async def test_a_running_background_phase_has_no_end_yet() -> None:
    h = LifewatchHarness()
    release = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async def load() -> None:
            await release.wait()

        h.watch.background("model-load", load)
        yield

    async with h.serving(h.watch.instrument(Starlette(lifespan=lifespan))):
        running = h.timeline.find("model-load")
        assert running.outcome is None and running.duration is None and running.background
        assert running.elapsed >= 0
        release.set()
        await asyncio.sleep(0.01)
        assert h.timeline.find("model-load").outcome == "ok"
    assert h.timeline.find("model-load").duration is not None


async def test_endpoints_serve_html_and_json_uncached() -> None:
    h = LifewatchHarness(service="shop", timeline_path=PATH)
    app = shop(h.watch)
    async with (
        h.serving(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        page = await client.get(PATH, headers={"accept": browser})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-store"
        assert "script-src" not in page.headers["content-security-policy"]
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "<script" not in page.text.lower()  # no JS at all, and the evil name escaped
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # air-gapped
        as_json = await client.get(f"{PATH}.json")
        assert as_json.headers["content-type"] == "application/json"
        assert as_json.headers["cache-control"] == "no-store"
        names = [e["startupStep"]["name"] for e in as_json.json()["timeline"]["events"]]
        assert EVIL in names and "flags" in names
        negotiated = await client.get(PATH, headers={"accept": "application/json"})
        assert negotiated.json()["service"] == "shop"
        assert negotiated.headers["vary"] == "accept"
        head = await client.head(PATH)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        post = await client.post(PATH)
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_the_timeline_is_served_by_default_and_off_with_none() -> None:
    on, off = LifewatchHarness(), LifewatchHarness(timeline_path=None)
    for h, status in ((on, 200), (off, 404)):
        app = shop(h.watch)
        async with (
            h.serving(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
        ):
            assert (await client.get("/lifewatch/timeline")).status_code == status
            assert (await client.get("/lifewatch/timeline.json")).status_code == status
        assert isinstance(h.watch.timeline, Timeline)  # the data is always there


async def test_with_ops_only_the_timeline_is_on_the_ops_listener_alone() -> None:
    port = free_port()
    h = LifewatchHarness(ops_address=f"127.0.0.1:{port}", ops_only=True)
    app = shop(h.watch)
    async with (
        h.serving(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        assert (await client.get("/lifewatch/timeline")).status_code == 404
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as ops:
            page = await ops.get("/lifewatch/timeline.json")
        assert page.status_code == 200 and "database" in page.text


@pytest.mark.parametrize("path", ["timeline", "/timeline/", "/", "/a b", "/t?x", 3])
def test_timeline_path_is_validated(path: object) -> None:
    with pytest.raises(ValueError, match="timeline_path"):
        Lifewatch(registry=CollectorRegistry(), timeline_path=path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", True),
        ("text/html,application/json;q=0.9", False),
        ("application/json, text/html;q=0.5", True),
        # Not a type the timeline serves: nothing acceptable, so the page.
        ("application/health+json", False),
        ("text/html;q=bogus, application/json;q=0.1", True),
        ("text/html;q=0.5, */*", True),  # the specific range sets HTML's q
        ("text/html;q=0.5, application/*", True),
    ],
)
def test_accept_negotiation(accept: str, expected: bool) -> None:
    assert wants_json(accept.encode()) is expected


def test_boot_is_the_first_row_of_the_first_startup_only(watch: Lifewatch) -> None:
    app = watch.instrument(Starlette())
    before = time.time()
    with TestClient(app):
        pass
    boot = watch.timeline.entries[0]
    assert (boot.name, boot.kind, boot.event, boot.outcome) == ("boot", "boot", "startup", "ok")
    assert boot.duration is not None and boot.start == -boot.duration
    run = watch.timeline.entries[1]
    assert run.kind == "run"
    # From process start to the first lifespan event: this process started before the test.
    assert boot.started_at == pytest.approx(process_start_time(), abs=0.01)
    assert boot.started_at + boot.duration == pytest.approx(run.started_at, abs=0.01)
    assert run.started_at >= before
    assert watch.timeline.to_dict()["timeline"]["events"][0]["kind"] == "boot"
    with TestClient(app):  # a second startup of the same watch: no boot before it
        pass
    assert watch.timeline.entries[0].kind == "run"
