"""The bits of HTTP every lifewatch endpoint shares: the answer's common headers
and content negotiation. A leaf module (imports nothing from lifewatch)."""

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
"""Elements of ``Accept`` looked at, in all, so a hostile header costs bounded work."""
MAX_PARAMS = 8
"""Parameters in one media range, beyond which the range is ignored."""

_NOT_ALLOWED = b"method not allowed\n"
# RFC 9110 §12.4.2: "0" to "1" with at most three decimals; anything else is malformed.
_QVALUE = rb"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?"
_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def json_body(value: object, *, indent: int | None = None) -> bytes:
    """``value`` as JSON whose strings never carry ``<``, ``>`` or ``&`` as such
    (as Go's encoder does): names and reasons come from code and clients."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(value, indent=indent, separators=separators)
    return text.translate(_HTML_SAFE).encode()


def response_headers(content_type: bytes, body: bytes, *extra: Header) -> tuple[Header, ...]:
    """Type, length (the body's, for ``HEAD`` too), ``COMMON``, then ``extra``."""
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


async def not_allowed(send: Send) -> None:
    """405 with ``Allow``: every lifewatch endpoint is read-only."""
    headers = ((b"allow", b"GET, HEAD"), *response_headers(TEXT, _NOT_ALLOWED))
    await respond(send, "GET", 405, headers, _NOT_ALLOWED)


def header_values(scope_headers: Iterable[Header], name: bytes) -> list[bytes]:
    """Every value of the (lower-case, as ASGI servers pass them) header ``name``."""
    return [value for key, value in scope_headers if key == name]


def negotiate(accept: bytes | Iterable[bytes], offers: Sequence[bytes]) -> bytes | None:
    """The offer to answer with, as ``Accept`` (one value, or all of them) asks (RFC 9110 §12.5.1).

    Each offer takes the ``q`` of the most specific range matching it; the
    highest ``q`` wins, ties go to the earlier offer. A malformed ``q`` counts
    as 0 and a malformed range matches nothing. No ``Accept``: the first offer.
    ``None`` when nothing offered is acceptable: the caller picks a 406 or a default.
    """
    weights: dict[bytes, float] = {}  # by range; a range sent twice keeps the kinder q
    seen = False
    for element, media_type, q in _parsed(accept):
        if not media_type and b";" not in element:
            continue  # an empty list element, which RFC 9110 §5.6.1 allows
        seen = True
        kind, _, subtype = media_type.partition(b"/")
        if not kind or not subtype or (kind == b"*" and subtype != b"*"):
            continue
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
    """The elements of ``Accept``, highest ``q`` first, ``q=0`` and malformed ones left
    out: for prometheus-client's encoder choice, which knows nothing of ``q``."""
    weighted = [
        (-q, i, e.strip()) for i, (e, token, q) in enumerate(_parsed(accept)) if token and q
    ]
    return [element for _, _, element in sorted(weighted)]


def coding_accepted(accept_encoding: bytes | Iterable[bytes], coding: bytes) -> bool:
    """Whether ``Accept-Encoding`` allows ``coding`` (RFC 9110 §12.5.3): its own
    element decides, else ``*``; ``q=0`` refuses it."""
    star: float | None = None
    for _, token, q in _parsed(accept_encoding):
        if token == coding:
            return bool(q)
        if token == b"*" and q is not None:
            star = q
    return bool(star)


def _parsed(values: bytes | Iterable[bytes]) -> Iterator[tuple[bytes, bytes, float | None]]:
    """Each element of a header sent once or more, with its lower-case token and
    its ``q``; at most ``MAX_RANGES`` in all (empty ones count: the bound is on work)."""
    budget = MAX_RANGES
    for value in (values,) if isinstance(values, bytes) else values:
        if budget <= 0:
            return
        elements = value.split(b",", budget)[:budget]
        budget -= len(elements)
        for element in elements:
            token, _, params = element.partition(b";")
            yield element, token.strip().lower(), _weight(params)


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
    """Unix seconds as ISO 8601 in UTC with a ``Z``: ``2026-01-01T12:00:00.123Z``."""
    stamp = datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec=timespec)
    return stamp.replace("+00:00", "Z")
