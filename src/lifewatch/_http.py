"""The bits of HTTP every lifewatch endpoint shares, written once.

A leaf module (nothing from lifewatch is imported here), so any module can
use it without an import cycle. The endpoints are plain ASGI: a response is
two ``send`` calls, and the headers every answer carries (``no-store``,
``nosniff``, ``content-length``) are set here, in one place, instead of in
each endpoint's own copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Literal

from starlette.types import Send

Header = tuple[bytes, bytes]

TEXT = b"text/plain; charset=utf-8"

# An answer about the live state of the process must never be served stale
# by a cache, nor sniffed into something else (a check's reason is echoed).
COMMON: tuple[Header, ...] = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)

MAX_RANGES = 64
"""Media ranges of ``Accept`` looked at, in all: the rest is ignored, so a
hostile header costs bounded work (browsers send fewer than ten)."""
MAX_PARAMS = 8
"""Parameters in one media range, beyond which the range is ignored."""

_NOT_ALLOWED_BODY = b"method not allowed\n"
_NOT_ALLOWED: tuple[Header, ...] = (
    (b"allow", b"GET, HEAD"),
    (b"content-type", TEXT),
    (b"content-length", b"%d" % len(_NOT_ALLOWED_BODY)),
    *COMMON,
)
# RFC 9110 §12.4.2: "0" to "1" with at most three decimals; anything else is malformed.
# Compiled by re's cache on the first q-value seen, not by every import.
_QVALUE = rb"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?"


_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def json_body(value: object, *, indent: int | None = None) -> bytes:
    """``value`` as JSON whose strings never carry ``<``, ``>`` or ``&`` as such.

    Names and reasons come from code and from clients (``?exclude=``); escaped
    like this (as Go's encoder does), no sniffing browser or page embedding
    the answer can take them for markup. Still the same JSON to a parser.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(value, indent=indent, separators=separators)
    return text.translate(_HTML_SAFE).encode()


def response_headers(content_type: bytes, body: bytes, *extra: Header) -> tuple[Header, ...]:
    """The headers of an answer with ``body``: type, length, ``COMMON``, then ``extra``.

    The length is the body's even for ``HEAD``, which sends no body, so both
    methods describe the same answer.
    """
    return (
        (b"content-type", content_type),
        (b"content-length", b"%d" % len(body)),
        *COMMON,
        *extra,
    )


async def respond(
    send: Send, method: str, status: int, headers: Iterable[Header], body: bytes
) -> None:
    """Send one whole answer: the start message, then the body (empty for ``HEAD``)."""
    # A fresh list each time: a middleware further out may append to it.
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def not_allowed(send: Send, allow: bytes = b"GET, HEAD") -> None:
    """405 with ``Allow``: every lifewatch endpoint is read-only."""
    headers = _NOT_ALLOWED if allow == b"GET, HEAD" else ((b"allow", allow), *_NOT_ALLOWED[1:])
    await respond(send, "GET", 405, headers, _NOT_ALLOWED_BODY)


def header_values(scope_headers: Iterable[Header], name: bytes) -> list[bytes]:
    """Every value of the (lower-case, as ASGI servers pass them) header ``name``."""
    return [value for key, value in scope_headers if key == name]


def negotiate(accept: bytes | Iterable[bytes], offers: Sequence[bytes]) -> bytes | None:
    """The media type of ``offers`` to answer with, as ``Accept`` asks (RFC 9110 §12.5.1).

    ``accept`` is the header's value, or all its values when sent more than
    once (they make one list). ``offers`` are full content types (parameters
    such as ``charset`` are kept in the result, not matched) in the server's
    order of preference.

    Each offer takes the ``q`` of the most specific range matching it
    (``type/subtype``, then ``type/*``, then ``*/*``); ``q=0`` or no matching
    range means not acceptable. The highest ``q`` wins and ties go to the
    earlier offer. Media-type parameters in ranges are ignored; a malformed
    ``q`` counts as 0 and a malformed range matches nothing. No ``Accept``
    (or only empty list elements) accepts anything: the first offer. ``None``
    when nothing offered is acceptable: the caller decides between a 406 and
    its default.
    """
    # The q of each range, by range ("text/plain", "text/*", "*/*"); a range
    # sent twice keeps the kinder q.
    weights: dict[bytes, float] = {}
    seen = False
    for media_range in _elements(accept):
        media_type, semicolon, params = media_range.partition(b";")
        media_type = media_type.strip().lower()
        if not media_type and not semicolon:
            continue  # an empty list element, which RFC 9110 §5.6.1 allows
        seen = True
        kind, _, subtype = media_type.partition(b"/")
        if not kind or not subtype or (kind == b"*" and subtype != b"*"):
            continue
        q = _weight(params) if semicolon else 1.0
        if q is not None and q > weights.get(media_type, -1.0):
            weights[media_type] = q
    if not seen:
        return offers[0] if offers else None
    chosen: bytes | None = None
    best = 0.0
    for offer in offers:
        media_type = offer.partition(b";")[0].strip().lower()
        q = weights.get(media_type)
        if q is None:
            q = weights.get(media_type.partition(b"/")[0] + b"/*")
        if q is None:
            q = weights.get(b"*/*", 0.0)
        if q > best:  # strictly: a tie keeps the earlier offer
            chosen, best = offer, q
    return chosen


def ranked(accept: bytes | Iterable[bytes]) -> list[bytes]:
    """The elements of ``Accept`` (or ``Accept-Encoding``), highest ``q`` first.

    Ranges with ``q=0`` (not acceptable) or a malformed ``q`` are left out;
    ties keep the client's order; bounded like ``negotiate``. For a library
    that takes the first match of a list (prometheus-client's encoder
    choice) and knows nothing of ``q``.
    """
    weighted: list[tuple[float, int, bytes]] = []
    for element in _elements(accept):
        token, semicolon, params = element.partition(b";")
        if not token.strip():
            continue
        q = _weight(params) if semicolon else 1.0
        if q:
            weighted.append((-q, len(weighted), element.strip()))
    return [element for _, _, element in sorted(weighted)]


def coding_accepted(accept_encoding: bytes | Iterable[bytes], coding: bytes) -> bool:
    """Whether ``Accept-Encoding`` allows ``coding`` (RFC 9110 §12.5.3): ``q=0`` refuses it.

    The coding's own element decides; else ``*``; else it is not acceptable
    (the server then sends ``identity``, which is always fine).
    """
    star: float | None = None
    for element in _elements(accept_encoding):
        token, semicolon, params = element.partition(b";")
        token = token.strip().lower()
        q = _weight(params) if semicolon else 1.0
        if token == coding:
            return bool(q)
        if token == b"*" and q is not None:
            star = q
    return bool(star)


def _elements(values: bytes | Iterable[bytes]) -> Iterator[bytes]:
    """The comma-separated elements of a header sent once or more, at most
    ``MAX_RANGES`` in all (empty ones count: the bound is on work, not ranges)."""
    budget = MAX_RANGES
    for value in (values,) if isinstance(values, bytes) else values:
        if budget <= 0:
            return
        elements = value.split(b",", budget)[:budget]
        budget -= len(elements)
        yield from elements


def _weight(params: bytes) -> float | None:
    """The ``q`` among a range's parameters (1 if none); ``None`` if too many to look at."""
    split = params.split(b";", MAX_PARAMS)
    if len(split) > MAX_PARAMS:
        return None
    for param in split:
        name, _, raw = param.partition(b"=")
        if name.strip().lower() == b"q":
            raw = raw.strip()
            return float(raw) if re.fullmatch(_QVALUE, raw) else 0.0
    return 1.0


def iso_utc(
    timestamp: float, timespec: Literal["milliseconds", "microseconds"] = "milliseconds"
) -> str:
    """``timestamp`` (Unix seconds) as ISO 8601 in UTC with a ``Z``: ``2026-01-01T12:00:00.123Z``.

    Milliseconds, as the health-check draft's ``time`` examples; the timeline
    asks for microseconds, as Java's ``Instant.toString()`` writes them.
    """
    stamp = datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec=timespec)
    return stamp.replace("+00:00", "Z")
