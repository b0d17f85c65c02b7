"""The bad-input sweep: hostile requests and hostile names, every output format.

No 500, nothing reflected unescaped, nothing unbounded: every probe, the
metrics and the timeline answer every request below with a status from a
short list, a body of bounded size, and a body that is valid in its format.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from lifewatch import Lifewatch
from tests.support.probes import call

pytestmark = pytest.mark.anyio

HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    'quote"and\\backslash',
    "line\nbreak\r\nforged [+]ok",
    "\x00nul\x1bescape",
    "\u202eright-to-left\u200b",
    "日本語🙂",
    "{{7*7}}${jndi:ldap://x}",
    "x" * 1000,
]

QUERIES = [
    b"",
    b"verbose",
    b"exclude=" + b",".join(b"n%d" % i for i in range(10_000)),
    b"&".join(b"exclude=n%d" % i for i in range(10_000)),
    b"exclude=%zz%%%0%",
    b"exclude=%00%0d%0a[+]forged",
    b"exclude=%3Cscript%3Ealert(1)%3C/script%3E&verbose",
    b"exclude=" + "日本語".encode(),
    b"\xff\xfe=\xfd&verbose=\x00",
    b"verbose&" * 5000,
    b"=" * 10_000,
]

ACCEPTS = [
    b"",
    b"application/health+json",
    b"application/json;q=0, text/plain;q=0",
    b"*/*;q=garbage",
    b"text/html",
    b"\xff\xfe",
    b",".join([b"application/json;q=0.1"] * 10_000),
    b"text/plain;" + b"a=b;" * 10_000,
]
ENCODINGS = [b"gzip;q=0", b"*", b"\x00", b"gzip;" * 1000]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "G\x00T"]

MAX_BODY = 64 * 1024
STATUSES = {200, 405, 503}


class _Strict(HTMLParser):
    """Collects start tags: hostile names must never become one."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def check_body(path: str, sent: dict[bytes, bytes], body: bytes, method: str) -> None:
    assert len(body) <= MAX_BODY, (path, len(body))
    if method == "HEAD" or not body:
        return
    kind = sent.get(b"content-type", b"")
    if sent.get(b"content-encoding") == b"gzip":
        import gzip

        body = gzip.decompress(body)
    text = body.decode("utf-8")  # valid UTF-8, always
    if b"json" in kind:
        json.loads(text)
    elif kind.startswith(b"text/html"):
        parser = _Strict()
        parser.feed(text)
        assert "script" not in parser.tags
    if path == "/metrics" and b"version=" in kind:
        # prometheus-client's own escaping: the exposition parses, whatever the names.
        assert list(text_string_to_metric_families(text))
        return
    assert "<script>" not in text or kind.startswith(b"text/plain"), (path, text[:200])
    if kind.startswith(b"text/plain"):
        assert "\r" not in text  # no forged lines in a probe's answer
        for line in text.splitlines():
            assert not line.startswith("[+]forged"), line


@asynccontextmanager
async def hostile_app() -> AsyncIterator[tuple[Any, Lifewatch]]:
    watch = Lifewatch(
        service="<svc>\"'", registry=CollectorRegistry(), timeline_path="/lifewatch/timeline"
    )

    @watch.check("ok", timeout=1.0)
    async def ok() -> None:
        pass

    @watch.check("down", critical=False, timeout=1.0)
    async def down() -> None:
        raise ConnectionError("<script>alert(1)</script>\r\n[+]forged ok")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for name in HOSTILE_NAMES:
            async with watch.phase(name, critical=False, tags={name[:50]: name}):
                if "script" in name:
                    raise RuntimeError(name)
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        yield app, watch


async def test_hostile_check_names_are_refused_at_registration() -> None:
    watch = Lifewatch(registry=CollectorRegistry())
    for name in [*HOSTILE_NAMES, "", "a/b", "a b", "lifespan", "../x", "x" * 101]:
        with pytest.raises((ValueError, TypeError)):
            watch.add_check(name, lambda: None)


async def test_the_bad_input_sweep() -> None:
    async with hostile_app() as (app, _):
        paths = [
            "/livez",
            "/readyz",
            "/startupz",
            "/readyz/ok",
            "/readyz/down",
            "/metrics",
            "/lifewatch/timeline",
            "/lifewatch/timeline.json",
        ]
        seen = 0
        for path, query, accept in itertools.product(paths, QUERIES, ACCEPTS):
            headers = [(b"host", b"x")]
            if accept:
                headers.append((b"accept", accept))
            status, sent, body = await call(app, path, query=query, headers=headers)
            assert status in STATUSES, (path, query[:80], accept[:80], status)
            check_body(path, sent, body, "GET")
            seen += 1
        for path, method, encoding in itertools.product(paths, METHODS, ENCODINGS):
            headers = [(b"accept-encoding", encoding)] + [(b"x-huge", b"a" * 65_536)] * 10
            status, sent, body = await call(app, path, method=method, headers=headers)
            expected = {405} if method not in ("GET", "HEAD") else STATUSES
            assert status in expected, (path, method, status)
            if status == 405:
                assert sent[b"allow"] == b"GET, HEAD"
            check_body(path, sent, body, method)
            seen += 1
        assert seen == len(paths) * (len(QUERIES) * len(ACCEPTS) + len(METHODS) * len(ENCODINGS))

        # Hostile phase names in every format: escaped, parseable, one line each.
        _, _, metrics = await call(app, "/metrics")
        phases = {
            s.labels["phase"]
            for family in text_string_to_metric_families(metrics.decode())
            for s in family.samples
            if "phase" in s.labels
        }
        assert set(HOSTILE_NAMES) <= phases
        _, _, timeline = await call(app, "/lifewatch/timeline.json")
        steps = json.loads(timeline)["timeline"]["events"]
        assert set(HOSTILE_NAMES) <= {e["startupStep"]["name"] for e in steps}
        _, _, html = await call(app, "/lifewatch/timeline")
        parser = _Strict()
        parser.feed(html.decode())
        assert "script" not in parser.tags and "&lt;script&gt;" in html.decode()
        _, _, text = await call(app, "/readyz", query=b"verbose")
        assert re.fullmatch(rb"(\[[+-]\][^\n]*\n)+readyz check passed\n", text), text
