"""The timeline page in a real headless Chromium, served by a real uvicorn.

Fails (never skips) when chromium is missing: CI installs it (``.ci/run``).
Screenshots land in ``artifacts/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from lifewatch import Lifewatch, LifewatchMiddleware
from lifewatch.testing import LifespanFailed, LifewatchHarness

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
PATH = "/lifewatch/timeline"
EVIL = "<script>alert(1)</script>"


@contextmanager
def served(app: ASGIApp, *, lifespan: str = "on") -> Iterator[str]:
    """``app`` on a real uvicorn, on a free port of 127.0.0.1, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan=lifespan, log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def browse(url: str, screenshot: Path) -> str:
    """Load ``url`` in headless Chromium: the rendered DOM, and a screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install chromium); this test needs it")
    screenshot.parent.mkdir(exist_ok=True)
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        flags = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
        ]
        dom = subprocess.run(
            [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        subprocess.run(
            [*flags, f"--screenshot={screenshot}", "--window-size=1200,800", url],
            capture_output=True,
            timeout=60,
            check=True,
        )
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert struct.unpack(">II", data[16:24]) == (1200, 800)
    return dom


class Rows(HTMLParser):
    """The waterfall rows of a rendered DOM: name, classes, status text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.scripts = 0
        self._row: dict[str, Any] | None = None
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "script":
            self.scripts += 1
        elif tag == "div" and "row" in classes:
            self._row = {"classes": classes, "name": "", "status": "", "dur": ""}
            self.rows.append(self._row)
        elif self._row is not None and tag == "span":
            if "t" in classes:
                self._field = "name"
            elif "status" in classes:
                self._field = "status"
            elif "dur" in classes:
                self._field = "dur"

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._row = None
        if tag == "span" and self._field in ("name", "dur"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._field is not None:
            self._row[self._field] += data

    def named(self, name: str) -> dict[str, Any]:
        found = [r for r in self.rows if r["name"] == name]
        assert len(found) == 1, (name, [r["name"] for r in self.rows])
        return found[0]


def live_app(watch: Lifewatch) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with watch.phase("load-config"):
            await asyncio.sleep(0.01)
        async with watch.phase("database", tags={"host": "db-1"}):
            async with watch.phase("connect-pool"):
                await asyncio.sleep(0.04)
            async with watch.phase("run-migrations"):
                await asyncio.sleep(0.02)
        async with watch.phase("cache-warmup", critical=False):
            await asyncio.sleep(0.005)
            async with watch.phase("fetch-hot-keys"):
                await asyncio.sleep(0.01)
                raise ConnectionError("redis down")
        async with watch.phase(EVIL):
            pass

        async def forever() -> None:
            await asyncio.sleep(3600)

        watch.background("model-load", forever, timeout=0.1)
        watch.background("search-index", forever, critical=False)
        yield

    return watch.instrument(Starlette(lifespan=lifespan))


def test_live_page_renders_every_phase_and_marks_failures() -> None:
    h = LifewatchHarness(service="orders", timeline_path=PATH)
    with h, served(live_app(h.watch)) as base:
        deadline = time.monotonic() + 5
        while h.timeline.find("model-load").outcome is None:  # its timeout is 0.1 s
            assert time.monotonic() < deadline
            time.sleep(0.02)
        dom = browse(f"{base}{PATH}", ARTIFACTS / "timeline-live.png")
    page = Rows()
    page.feed(dom)
    assert page.scripts == 0, "the page has no JavaScript, and the evil name did not become one"
    names = [e.name for e in h.timeline.entries if e.kind == "phase"]
    assert EVIL in names
    for name in names:
        assert page.named(name)["dur"].strip(), name  # every phase is there, with a duration
    expected = {
        "fetch-hot-keys": ("outcome-error", "failed"),
        "cache-warmup": ("outcome-degraded", "degraded"),
        "model-load": ("outcome-timeout", "timed out"),
        "search-index": ("outcome-running", "running"),
        "database": ("outcome-ok", "ok"),
    }
    for name, (cls, label) in expected.items():
        row = page.named(name)
        assert cls in row["classes"], (name, row)
        assert label in row["status"], (name, row)  # a text label, not colour alone
    depth = {
        name: int(next(c for c in page.named(name)["classes"] if c.startswith("depth-"))[6:])
        for name in ("database", "connect-pool")
    }
    assert depth["connect-pool"] == depth["database"] + 1
    assert "Shutdown has not run yet" in dom


def test_page_after_shutdown_shows_both_runs() -> None:
    h = LifewatchHarness(service="orders", timeline_path=PATH)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with h.watch.phase("database"):
            await asyncio.sleep(0.02)
        yield
        async with h.watch.phase("drain-queue", timeout=0.05):
            await asyncio.sleep(1)  # times out; shutdown goes on
        async with h.watch.phase("database"):
            await asyncio.sleep(0.01)

    # Whether a timed-out nested shutdown phase fails the whole shutdown is the
    # core's call (the product contract says it does); the page must show whatever was recorded.
    with contextlib.suppress(LifespanFailed):
        anyio.run(h.run, h.watch.instrument(Starlette(lifespan=lifespan)))
    shutdown = h.timeline.find("lifespan.shutdown", "shutdown")

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    # The endpoint is plain ASGI: serve it (lifespan off) after the app has stopped.
    with served(LifewatchMiddleware(not_found, watch=h.watch), lifespan="off") as base:
        dom = browse(f"{base}{PATH}", ARTIFACTS / "timeline-after-shutdown.png")
    page = Rows()
    page.feed(dom)
    assert [r["name"] for r in page.rows] == [
        "boot (process start to lifespan)",
        "startup (whole)",
        "lifespan",
        "database",
        "shutdown (whole)",
        "lifespan",
        "drain-queue",
        "database",
    ]
    assert "outcome-timeout" in page.named("drain-queue")["classes"]
    assert "timed out" in page.named("drain-queue")["status"]
    assert "Shutdown has not run yet" not in dom
    assert f"outcome-{shutdown.outcome}" in page.rows[4]["classes"]


def test_a_boot_longer_than_its_startup_is_squeezed_in_front_not_to_scale() -> None:
    from lifewatch import Timeline, TimelineEntry
    from lifewatch._waterfall import render_html

    def page(boot_seconds: float) -> str:
        boot = TimelineEntry(
            id="boot",
            parent_id=None,
            name="boot",
            event="startup",
            kind="boot",
            start=-boot_seconds,
            duration=boot_seconds,
            outcome="ok",
            elapsed=boot_seconds,
            depth=0,
        )
        run = TimelineEntry(
            id="1",
            parent_id=None,
            name="lifespan.startup",
            event="startup",
            kind="run",
            start=0.0,
            duration=1.0,
            outcome="ok",
            elapsed=1.0,
        )
        return render_html(Timeline("orders", (boot, run)))

    squeezed = page(120.0)  # minutes of imports beside a one-second startup
    assert "kind-boot outcome-ok depth-0 compressed" in squeezed
    assert "not to scale: boot" in squeezed
    assert "width:19.000%" in squeezed  # the boot's fixed share; the run keeps its own axis
    assert 'class="row kind-run outcome-ok depth-0" ' in squeezed
    assert "left:20.000%;width:80.000%" in squeezed
    to_scale = page(0.5)  # comparable: one axis from process start
    assert "depth-0 compressed" not in to_scale
    assert "left:33.333%;width:66.667%" in to_scale


def test_the_empty_shutdown_section_says_what_the_startup_is_doing() -> None:
    from lifewatch import Timeline, TimelineEntry
    from lifewatch._waterfall import render_html

    def page(outcome: Any, running: str | None = None) -> str:
        run = TimelineEntry(
            id="1",
            parent_id=None,
            name="lifespan.startup",
            event="startup",
            kind="run",
            start=0.0,
            duration=None if outcome is None else 1.0,
            outcome=outcome,
            elapsed=1.0,
        )
        phases = ()
        if running is not None:
            phases = (
                TimelineEntry(
                    id="2",
                    parent_id="1",
                    name=running,
                    event="startup",
                    kind="phase",
                    start=0.0,
                    duration=None,
                    outcome=None,
                    elapsed=1.0,
                    depth=1,
                ),
            )
        return render_html(Timeline("orders", (run, *phases)))

    starting = page(None, "<script>alert(1)</script>")
    assert "the application is starting (phase &#x27;&lt;script&gt;alert(1)" in starting
    assert "<script>" not in starting  # the phase name is escaped here too
    assert "the application is serving" in page("ok")
    assert "startup failed (timeout)" in page("timeout")
    assert "a signal ended the startup" in page("signal")
