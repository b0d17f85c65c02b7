"""``/livez``, ``/readyz``, ``/startupz``: plain ASGI.

A plain request whose checks were all cached is answered from the answer
kept for it until ``Health`` says something changed; anything else builds the
answer, and a probe that breaks says 503 and logs why (never 500). Formats:
the kube-apiserver's text and the IETF health-check draft's JSON (DESIGN §2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from ._checks import RESERVED, Probe
from ._http import (
    TEXT,
    Header,
    header_values,
    iso_utc,
    json_body,
    negotiate,
    not_allowed,
    respond,
    response_headers,
)
from ._records import Notice

if TYPE_CHECKING:
    from ._health import Entry, Health, Report

Answer = tuple[int, tuple[Header, ...], bytes]  # status, headers, body
LABELS: dict[Probe, str] = {"liveness": "livez", "readiness": "readyz", "startup": "startupz"}

# Text for the kubelet and people unless JSON is asked for; the draft's own
# type first. No Vary: Accept: with no-store no cache needs it.
OFFERS = (TEXT, b"application/health+json", b"application/json")
_ANY = (b"accept", b"*/*")
_BROKEN_BODY = b"lifewatch: the probe itself failed (see the log)\n"
_NO_NAMES: frozenset[str] = frozenset()

MAX_QUERY_FIELDS = 64
MAX_ECHOED_NAME = 100
MAX_DETAIL = 500


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


def _surely_text(headers: Any) -> bool:
    """True when no ``Accept`` can make JSON win over text (a browser's cannot):
    JSON wins only through a range naming it or ``application/*``, or one
    ranking ``text/plain`` or ``text/*``. Any doubt negotiates."""
    for name, value in headers:
        if name == b"accept":
            accept = value.lower()
            if any(r in accept for r in (b"json", b"application/*", b"text/plain", b"text/*")):
                return False
    return True


def _unknown(names: list[str]) -> str:
    return "some health checks cannot be excluded: no matches for " + ",".join(
        map(json.dumps, names)
    )


def _reason(entry: Entry, expose: bool, limit: int) -> str:
    """One line, bounded: a reason must not forge lines of a verbose answer."""
    if entry.secret and not expose:
        return "reason withheld"
    text = " ".join((entry.output or "unknown").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(entry: Entry, expose: bool) -> str:
    if entry.excluded:
        return f"[+]{entry.name} excluded: ok"
    if entry.status == "pass":
        return f"[+]{entry.name} ok"
    reason = _reason(entry, expose, MAX_DETAIL)
    if entry.name == RESERVED and entry.status == "warn":
        return f"[+]{entry.name} warn: {reason}"
    qualifier = "" if entry.critical else " (non-critical)"
    return f"[-]{entry.name} failed{qualifier}: {reason}"


def render_text(report: Report, label: str, verbose: bool, expose: bool) -> bytes:
    if not verbose and report.status != "fail":
        return b"ok"
    lines = [_line(entry, expose) for entry in report.entries]
    if report.unknown_excludes:
        lines.append("warn: " + _unknown(report.unknown_excludes))
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
        when = "" if entry.at is None else iso_utc(entry.at)
        item: dict[str, Any] = {"status": entry.status, "time": when}
        value = entry.observed_value
        if isinstance(value, float):
            item["observedValue"], item["observedUnit"] = round(value, 6), "s"
        elif value is not None:
            item["observedValue"] = value
        if entry.status != "pass":
            item["output"] = _reason(entry, expose, 2000)
        if not entry.critical:
            item["critical"] = False
        checks[entry.name] = [item]
    if report.unknown_excludes:
        notes.append(_unknown(report.unknown_excludes))
    body: dict[str, Any] = {"status": report.status, "state": report.state.value}
    if service:
        body["serviceId"] = service
    body["checks"] = checks
    if notes:
        body["notes"] = notes
    return json_body(body)


class ProbeEndpoint:
    """One probe path (``/readyz``) or one entry of it (``/readyz/postgres``)."""

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
        # The answer to a plain request, and the ``Health.version`` it holds for.
        self._plain: tuple[int, Answer] | None = None

    def _fresh(self) -> Answer | None:
        plain = self._plain
        return plain[1] if plain is not None and plain[0] == self.health.version else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await not_allowed(send)
            return
        status, headers, body = self.kept(scope) or await self._answer(scope)
        await respond(send, method, status, headers, body)

    def kept(self, scope: Scope) -> Answer | None:
        """The kept answer if it answers this request as is, else None (the ops
        listener answers from it without a trip through an event loop)."""
        plain = self._fresh()
        if plain is None or scope["query_string"] or scope["method"] not in ("GET", "HEAD"):
            return None
        headers = scope["headers"]
        return plain if _ANY in headers or _surely_text(headers) else None

    async def _answer(self, scope: Scope) -> Answer:
        try:
            query: bytes = scope.get("query_string") or b""
            headers = scope.get("headers") or ()
            if _ANY in headers or _surely_text(headers):  # the kept answer's test too
                media_type = TEXT
            else:
                # Nothing acceptable gets text too: a probe answers, it does not 406.
                media_type = negotiate(header_values(headers, b"accept"), OFFERS) or TEXT
            as_json = media_type != TEXT
            plain = self._fresh()
            if plain is not None and not query and not as_json:
                return plain  # a browser's Accept, say: negotiated, but the kept answer
            verbose, exclude = parse_query(query) if query else (False, _NO_NAMES)
            if self.only is not None:
                exclude = _NO_NAMES
            version = self.health.version
            report, cacheable = await self.health.report(self.probe, self.only, exclude)
            if as_json:
                body = render_json(report, self.service, self.expose)
            else:
                body = render_text(report, self.label, verbose, self.expose)
            answer = (
                503 if report.status == "fail" else 200,
                response_headers(media_type, body),
                body,
            )
            plain_request = not (as_json or verbose or exclude)
            if cacheable and plain_request and version == self.health.version:
                self._plain = (version, answer)
            return answer
        except Exception as exc:
            where = {"probe": self.probe, "path": scope.get("path")}
            self.health.lifecycle.notify(Notice("lifespan.probe.error", "error", where, error=exc))
            return 503, response_headers(TEXT, _BROKEN_BODY), _BROKEN_BODY


def serve_probes(
    routes: tuple[dict[str, ASGIApp], ...],
    health: Health,
    paths: Mapping[Probe, str | None],
    *,
    service: str | None,
    expose_details: bool,
) -> None:
    """Put the probe endpoints into the routes of every listener, per entry as checks come."""

    def add(probe: Probe, name: str | None) -> None:
        path = paths.get(probe)
        if path is not None:
            endpoint = ProbeEndpoint(
                health, probe, only=name, service=service, expose_details=expose_details
            )
            for table in routes:
                table[path if name is None else f"{path}/{name}"] = endpoint

    for probe in paths:
        add(probe, None)
        if probe != "liveness":
            add(probe, RESERVED)
    health.entry_added.append(add)
