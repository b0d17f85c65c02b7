"""``_http``: negotiation by q-values, the shared 405, responses, timestamps."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch, LifewatchMiddleware
from lifewatch._health import OFFERS, _surely_text
from lifewatch._http import (
    MAX_PARAMS,
    MAX_RANGES,
    TEXT,
    iso_utc,
    negotiate,
    not_allowed,
    respond,
    response_headers,
)
from tests.support.apps import raw_app
from tests.support.probes import call, get

pytestmark = pytest.mark.anyio

HEALTH = b"application/health+json"
JSON = b"application/json"


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        # The q-values decide, not the order nor the mere mention of JSON.
        (b"text/plain, application/json;q=0.1", TEXT),
        (b"application/json;q=0.1, text/plain", TEXT),
        (b"text/plain;q=0.5, application/json", JSON),
        (b"application/json", JSON),
        (b"application/health+json", HEALTH),
        # Equally acceptable: the server's order (health+json before json).
        (b"application/json, application/health+json", HEALTH),
        (b"application/json;q=0.5, application/health+json;q=0.5", HEALTH),
        (b"application/json, application/health+json;q=0.9", JSON),
        # No preference at all: text.
        (b"*/*", TEXT),
        (b"", TEXT),
        (b" , ,", TEXT),
        # Wildcards, and the most specific range setting each type's q.
        (b"application/*", HEALTH),
        (b"text/*;q=0.5, application/*", HEALTH),
        (b"*/*;q=0.1, application/json;q=0.2", JSON),
        (b"*/*, text/plain;q=0", HEALTH),
        (b"application/*;q=0.9, application/health+json;q=0", JSON),
        (b"text/*;q=0.9, text/plain;q=0.1, application/json;q=0.5", JSON),
        (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", TEXT),
        # q=0 means "not this": nothing acceptable is None.
        (b"application/json;q=0", None),
        (b"*/*;q=0", None),
        (b"text/plain;q=0, application/*;q=0", None),
        (b"image/png", None),
        # Parameters other than q are ignored; names and types are case-insensitive.
        (b"text/plain;charset=latin-1;q=0.2, application/json;version=2;q=0.3", JSON),
        (b"text/plain; format=flowed, application/json;q=0.9", TEXT),
        (b"Application/JSON;Q=0.6, TEXT/Plain;q=0.5", JSON),
        (b"application/json ; q=0.9 , text/plain ; q=0.8", JSON),
        # Malformed q counts as 0.
        (b"application/json;q=bogus, text/plain;q=0.001", TEXT),
        (b"application/json;q=", None),
        (b"application/json;q=nan", None),
        (b"application/json;q=inf", None),
        (b"application/json;q=1e0", None),
        (b"application/json;q=-1", None),
        (b"application/json;q=1.5", None),
        (b"application/json;q=0.0001", None),
        (b'application/json;q="1"', None),
        (b"application/json;q=1.000", JSON),
        (b"application/json;q=0.001", JSON),
        # Garbage ranges are skipped, not fatal.
        (b"garbage, application/json", JSON),
        (b"*/json, application/json;q=0.5", JSON),
        (b"*/json", None),
        (b"/, text/, /plain, ;q=1", None),
        (bytes(range(256)), None),
        (b"application/json;q=nan;q=;=;;", None),
    ],
)
def test_negotiation_follows_the_q_values(accept: bytes, chosen: bytes | None) -> None:
    assert negotiate(accept, OFFERS) == chosen


def test_no_accept_at_all_gets_the_first_offer() -> None:
    assert negotiate([], OFFERS) == TEXT
    assert negotiate([], ()) is None
    assert negotiate(b"application/json", ()) is None


def test_repeated_accept_headers_make_one_list() -> None:
    assert negotiate([b"text/plain;q=0", b"application/json"], OFFERS) == JSON
    assert negotiate([b"application/json;q=0.1", b"text/plain"], OFFERS) == TEXT


def test_offers_keep_their_parameters_in_the_answer() -> None:
    offers = (b"text/html; charset=utf-8", b"application/json")
    assert negotiate(b"text/html", offers) == b"text/html; charset=utf-8"
    assert negotiate(b"text/*", offers) == b"text/html; charset=utf-8"


def test_only_the_first_ranges_count() -> None:
    before = b"image/png, " * (MAX_RANGES - 1)
    assert negotiate(before + b"application/json", OFFERS) == JSON
    assert negotiate(before + b"image/png, application/json", OFFERS) is None
    # The bound is on elements looked at, empty ones included.
    assert negotiate(b"," * MAX_RANGES + b"application/json", OFFERS) == TEXT


def test_ten_thousand_ranges_cost_no_more_than_the_first_ones() -> None:
    hostile = b", ".join([b"image/png;q=0.5"] * 10_000 + [b"application/json"])
    assert negotiate(hostile, OFFERS) is None
    consumed = 0

    def values() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(10_000):
            consumed += 1
            yield b"image/png"

    assert negotiate(values(), OFFERS) is None
    assert consumed <= MAX_RANGES + 1  # the rest of the header lines are never read


def test_a_range_with_too_many_parameters_is_ignored() -> None:
    assert negotiate(b"application/json" + b";a=b" * MAX_PARAMS, OFFERS) == JSON
    assert negotiate(b"application/json" + b";a=b" * (MAX_PARAMS + 1), OFFERS) is None
    assert negotiate(b"application/json" + b";" * 100_000 + b"q=1", OFFERS) is None


@pytest.mark.parametrize(
    "accept",
    [
        b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        b"text/html;q=0.1, */*",
        b"image/png",
        b"*/*;q=0",
        b"text/html, text/plain;q=0",
        b"application/json",
        b"APPLICATION/JSON",
        b"application/*",
        b"text/plain;q=0, */*",
        b"text/*;q=0.1, */*",
        b"text/plain, application/json;q=0.1",
        b"",
    ],
)
def test_the_fast_path_never_keeps_text_when_json_would_win(accept: bytes) -> None:
    """The probe's cheap test says "surely text" only where negotiation agrees."""
    if _surely_text([(b"host", b"probe"), (b"accept", accept)]):
        assert negotiate(accept, OFFERS) in (TEXT, None)


# -- the probe endpoint --------------------------------------------------------


async def test_a_probe_answers_text_when_json_is_less_wanted(watch: Lifewatch) -> None:
    app = LifewatchMiddleware(raw_app(), watch=watch)
    less = "text/plain, application/json;q=0.1"
    async with LifespanManager(app):
        # Twice: once building the answer, once with the answer kept.
        for _ in range(2):
            response = await get(app, "/readyz", accept=less)
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert response.text == "ok"
        more = await get(app, "/readyz", accept="text/plain;q=0.1, application/json")
        assert more.headers["content-type"] == "application/json"
        assert more.json()["status"] == "pass"
        both = await get(app, "/readyz", accept="application/json, application/health+json")
        assert both.headers["content-type"] == "application/health+json"
        # Wildcards that let JSON win are honoured with an answer kept, too.
        for accept in ("application/*", "text/plain;q=0, */*"):
            wild = await get(app, "/readyz", accept=accept)
            assert wild.headers["content-type"] == "application/health+json", accept
        # Nothing acceptable: a probe still answers, in text.
        png = await get(app, "/readyz", accept="image/png")
        assert (png.status_code, png.text) == (200, "ok")


# -- the 405 and the responses --------------------------------------------------


@pytest.fixture
def served() -> Any:
    watch = Lifewatch(registry=CollectorRegistry(), timeline_path="/lifewatch/timeline")
    return LifewatchMiddleware(raw_app(), watch=watch)


ENDPOINTS = [
    "/livez",
    "/readyz",
    "/readyz/lifespan",
    "/startupz",
    "/metrics",
    "/lifewatch/timeline",
    "/lifewatch/timeline.json",
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_every_endpoint_answers_the_same_405(served: Any, path: str, method: str) -> None:
    status, headers, body = await call(served, path, method=method)
    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"content-length"] == b"%d" % len(body)
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert body == b"method not allowed\n"


@pytest.mark.parametrize("path", ["/livez", "/metrics", "/lifewatch/timeline"])
async def test_head_is_get_without_the_body(served: Any, path: str) -> None:
    async with LifespanManager(served):
        get_status, get_headers, body = await call(served, path)
        head_status, head_headers, nothing = await call(served, path, method="HEAD")
    assert get_status == head_status == 200
    assert nothing == b"" and body
    assert head_headers[b"content-length"] == get_headers[b"content-length"] == b"%d" % len(body)
    assert head_headers[b"cache-control"] == b"no-store"
    assert head_headers[b"x-content-type-options"] == b"nosniff"


async def test_respond_sends_start_then_body() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    headers = response_headers(b"application/json", b"{}", (b"vary", b"accept"))
    assert headers == (
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"vary", b"accept"),
    )
    await respond(send, "GET", 200, headers, b"{}")
    await respond(send, "HEAD", 200, headers, b"{}")
    await not_allowed(send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] * 3
    assert [m["body"] for m in sent[1::2]] == [b"{}", b"", b"method not allowed\n"]
    assert sent[0]["headers"] == list(headers)
    assert sent[0]["headers"] is not sent[2]["headers"]  # a list of its own to each answer


# -- timestamps and the module itself --------------------------------------------


def test_iso_utc_has_milliseconds_and_a_z() -> None:
    assert iso_utc(1_767_268_800.5) == "2026-01-01T12:00:00.500Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_767_268_800.123456, "microseconds") == "2026-01-01T12:00:00.123456Z"


def test_http_is_a_leaf_module() -> None:
    source = Path(__file__).resolve().parent.parent / "src" / "lifewatch" / "_http.py"
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("lifewatch")
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("lifewatch") for alias in node.names)
