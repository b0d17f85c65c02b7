"""``/livez``, ``/readyz``, ``/startupz``: plain ASGI, cheap on the common path.

The kubelet asks every few seconds, on every pod, for the life of the pod, so
the common request (no query string, no JSON asked for, only cached checks)
costs a few lookups and two ``send`` calls: the answer is built once and kept
until ``Health`` says something that could change it happened (a state
change, a check result that flips), and the endpoint forgets it. Everything
else (``?verbose``, ``?exclude=``, JSON, checks that run on demand) takes the
slower path, which still never answers 500: a probe that breaks says 503 and
logs why.

The formats follow the kube-apiserver (``ok``; ``[+]name ok`` lines ending in
``readyz check passed``; ``?exclude=`` answering ``[+]name excluded: ok``; a
failure always verbose, its reason withheld) and the IETF health-check draft
(``application/health+json``, ``status`` pass/warn/fail, ``checks`` of arrays).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from ._checks import RESERVED, HealthCheck, Probe
from ._records import Notice
from ._supervise import Supervised

if TYPE_CHECKING:
    from ._health import Entry, Health, Report

LABELS: dict[Probe, str] = {"liveness": "livez", "readiness": "readyz", "startup": "startupz"}

_TEXT = b"text/plain; charset=utf-8"
_HEALTH_JSON = b"application/health+json"
_JSON = b"application/json"
# No Vary: Accept: with no-store there is no cache for it to instruct.
_COMMON = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)
_NOT_ALLOWED_HEADERS = (
    (b"allow", b"GET, HEAD"),
    (b"content-type", _TEXT),
    (b"content-length", b"19"),
    *_COMMON,
)
_NOT_ALLOWED_BODY = b"method not allowed\n"
_ANY = (b"accept", b"*/*")
_BROKEN_BODY = b"lifewatch: the probe itself failed (see the log)\n"

MAX_QUERY_FIELDS = 64
MAX_ECHOED_NAME = 100
MAX_DETAIL = 500


def _headers(content_type: bytes, body: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"content-type", content_type), (b"content-length", b"%d" % len(body)), *_COMMON)


def parse_query(query: bytes) -> tuple[bool, frozenset[str]]:
    """``verbose`` (present at all) and the ``exclude`` names; bounded, never raises."""
    verbose = False
    exclude: set[str] = set()
    for part in query.split(b"&", MAX_QUERY_FIELDS)[:MAX_QUERY_FIELDS]:
        raw_key, _, raw_value = part.partition(b"=")
        key = unquote_plus(raw_key.decode("latin-1"))
        if key == "verbose":
            verbose = True
        elif key == "exclude":
            for name in unquote_plus(raw_value.decode("latin-1")).split(","):
                name = name.strip()
                if name and len(exclude) < MAX_QUERY_FIELDS:
                    exclude.add(name[:MAX_ECHOED_NAME])
    return verbose, frozenset(exclude)


def negotiate(headers: Any) -> bytes | None:
    """The JSON media type to answer with, if ``Accept`` asks for one; else text."""
    for name, value in headers:
        if name != b"accept" or b"json" not in value:
            continue
        chosen: bytes | None = None
        for media_range in value.split(b",", MAX_QUERY_FIELDS)[:MAX_QUERY_FIELDS]:
            media_type, *params = media_range.split(b";")
            media_type = media_type.strip().lower()
            if media_type not in (_HEALTH_JSON, _JSON):
                continue
            q = 1.0
            for param in params:
                key, _, val = param.strip().partition(b"=")
                if key.strip().lower() == b"q":
                    try:
                        q = float(val)
                    except ValueError:
                        q = 0.0
            if q > 0 and (chosen is None or media_type == _HEALTH_JSON):
                chosen = media_type
        if chosen is not None:
            return chosen
    return None


def _asks_json(headers: Any) -> bool:
    for name, value in headers:  # noqa: SIM110 - a loop is twice as fast as any(genexpr)
        if name == b"accept" and b"json" in value:
            return True
    return False


def _clean(text: str, limit: int = MAX_DETAIL) -> str:
    """One line, bounded: a reason must not forge lines of a verbose answer."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted(names: list[str]) -> str:
    return ",".join(json.dumps(n) for n in names)


def _line(entry: Entry, expose: bool) -> str:
    if entry.excluded:
        return f"[+]{entry.name} excluded: ok"
    if entry.status == "pass":
        return f"[+]{entry.name} ok"
    reason = entry.output or "unknown"
    if entry.secret and not expose:
        reason = "reason withheld"
    reason = _clean(reason)
    if entry.name == RESERVED:
        sign = "+" if entry.status == "warn" else "-"
        word = "warn" if entry.status == "warn" else "failed"
        return f"[{sign}]{entry.name} {word}: {reason}"
    qualifier = "" if entry.critical else " (non-critical)"
    return f"[-]{entry.name} failed{qualifier}: {reason}"


def render_text(report: Report, label: str, verbose: bool, expose: bool) -> bytes:
    if not verbose and report.status != "fail":
        return b"ok"
    lines = [_line(entry, expose) for entry in report.entries]
    if report.unknown_excludes:
        lines.append(
            "warn: some health checks cannot be excluded: no matches for "
            + _quoted(report.unknown_excludes)
        )
    outcome = "failed" if report.status == "fail" else "passed"
    lines.append(f"{label} check {outcome}")
    return "\n".join(lines).encode() + b"\n"


def render_json(report: Report, service: str | None, expose: bool) -> bytes:
    checks: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    for entry in report.entries:
        if entry.excluded:
            notes.append(f"excluded: {entry.name}")
            continue
        item: dict[str, Any] = {"status": entry.status, "time": entry.time}
        if entry.observed_value is not None:
            item["observedValue"] = entry.observed_value
        if entry.observed_unit is not None:
            item["observedUnit"] = entry.observed_unit
        if entry.status != "pass":
            reason = entry.output or "unknown"
            item["output"] = (
                "reason withheld" if entry.secret and not expose else _clean(reason, 2000)
            )
        if not entry.critical:
            item["critical"] = False
        checks[entry.name] = [item]
    if report.unknown_excludes:
        notes.append(
            "some health checks cannot be excluded: no matches for "
            + _quoted(report.unknown_excludes)
        )
    body: dict[str, Any] = {"status": report.status, "state": report.state.value}
    if service:
        body["serviceId"] = service
    body["checks"] = checks
    if notes:
        body["notes"] = notes
    return json.dumps(body, separators=(",", ":")).encode()


class ProbeEndpoint:
    """One probe path (``/readyz``) or one entry of it (``/readyz/postgres``)."""

    __slots__ = ("_plain", "expose", "health", "label", "only", "probe", "service")

    def __init__(
        self,
        health: Health,
        probe: Probe,
        *,
        only: str | None = None,
        service: str | None = None,
        expose_details: bool = False,
    ) -> None:
        self.health = health
        self.probe = probe
        self.only = only
        self.label = LABELS[probe]
        self.service = service
        self.expose = expose_details
        self._plain: tuple[int, tuple[tuple[bytes, bytes], ...], bytes] | None = None
        """The answer to a plain request, kept while nothing changes (see forget)."""
        health.listeners.append(self.forget)

    def forget(self) -> None:
        """Something changed: the next request builds the answer again."""
        self._plain = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The kubelet's request, answered from the kept answer: every step
        # here is paid on every probe of every pod, so it is kept inline.
        plain = self._plain  # None once anything that could change it happened
        if plain is not None and not scope["query_string"]:
            method = scope["method"]
            if method == "GET" or method == "HEAD":
                headers = scope["headers"]
                # What the kubelet and curl send, found by a C-level scan; else
                # look for an Accept that may ask for JSON.
                if _ANY in headers or not _asks_json(headers):
                    await send(
                        {"type": "http.response.start", "status": plain[0], "headers": [*plain[1]]}
                    )
                    await send(
                        {"type": "http.response.body", "body": plain[2] if method == "GET" else b""}
                    )
                    return
        await self._slow(scope, send)

    async def _slow(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": list(_NOT_ALLOWED_HEADERS),
                }
            )
            await send({"type": "http.response.body", "body": _NOT_ALLOWED_BODY})
            return
        status, headers, body = await self._answer(scope)
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _answer(self, scope: Scope) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]:
        try:
            query: bytes = scope.get("query_string") or b""
            verbose, exclude = parse_query(query) if query else (False, frozenset[str]())
            if self.only is not None:
                exclude = frozenset()
            media_type = negotiate(scope.get("headers") or ())
            version = self.health.version
            report, cacheable = await self.health.report(self.probe, self.only, exclude)
            if media_type is not None:
                body = render_json(report, self.service, self.expose)
                content_type = media_type
            else:
                body = render_text(report, self.label, verbose, self.expose)
                content_type = _TEXT
            status = 503 if report.status == "fail" else 200
            headers = _headers(content_type, body)
            if (
                cacheable
                and media_type is None
                and not verbose
                and not exclude
                and version == self.health.version
            ):
                self._plain = (status, headers, body)
            return status, headers, body
        except Exception as exc:
            self.health.lifecycle.notify(
                Notice(
                    "lifespan.probe.error",
                    "error",
                    {"probe": self.probe, "path": scope.get("path")},
                    error=exc,
                )
            )
            return 503, _headers(_TEXT, _BROKEN_BODY), _BROKEN_BODY


class ProbeRoutes:
    """Puts the probe endpoints into the watch's routes, per check as checks come."""

    def __init__(
        self,
        routes: dict[str, ASGIApp],
        health: Health,
        paths: Mapping[Probe, str | None],
        *,
        service: str | None,
        expose_details: bool,
    ) -> None:
        self.routes = routes
        self.health = health
        self.paths = dict(paths)
        self._options: dict[str, Any] = {"service": service, "expose_details": expose_details}
        served = [p for p in self.paths.values() if p is not None]
        if len(set(served)) != len(served):
            raise ValueError(f"probe paths must differ from each other; got {self.paths!r}")
        for probe, path in self.paths.items():
            if path is None:
                continue
            # The bound __call__: the middleware calls it for every probe.
            routes[path] = ProbeEndpoint(health, probe, **self._options)
            if probe != "liveness":
                self._add(probe, RESERVED)
        health.on_check_added.append(self._check_added)
        health.on_supervised.append(self._supervised)

    def _add(self, probe: Probe, name: str) -> None:
        path = self.paths.get(probe)
        if path is not None:
            self.routes[f"{path}/{name}"] = ProbeEndpoint(
                self.health, probe, only=name, **self._options
            )

    def _check_added(self, check: HealthCheck) -> None:
        for probe in check.probes:
            self._add(probe, check.name)

    def _supervised(self, record: Supervised) -> None:
        self._add("liveness", record.entry)
