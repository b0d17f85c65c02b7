"""The timeline as one self-contained HTML waterfall page (no JavaScript, no outside
assets: air-gapped, strict CSP; every name escaped), and the endpoint serving it and its JSON."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from html import escape
from typing import Literal

from starlette.types import Receive, Scope, Send

from ._http import (
    Header,
    header_values,
    json_body,
    negotiate,
    not_allowed,
    respond,
    response_headers,
)
from ._timeline import Timeline, TimelineEntry
from ._types import Event

_LABELS = {
    "ok": "ok",
    "degraded": "\u26a0 degraded",
    "error": "\u2716 failed",
    "timeout": "\u2716 timed out",
    "cancelled": "\u25a0 cancelled",
    "signal": "\u25a0 cut by a signal",
    None: "\u2026 running",
}

_CSS = """
:root{--ok:#3b7dd8;--run:#475569;--degraded:#d98e04;--bad:#d02c2c;--cancelled:#8a94a6;
--ink:#1f2933;--muted:#667085;--line:#e4e7ec;font-family:system-ui,-apple-system,"Segoe UI",
Roboto,"DejaVu Sans",sans-serif;color:var(--ink);background:#fff}
body{margin:1.2rem 1.6rem}
h1{font-size:1.3rem;margin:0 0 .2rem}
.sub{color:var(--muted);font-size:.85rem;margin:0 0 1rem}
section{margin:0 0 1.6rem}
h2{font-size:1.05rem;margin:0 0 .4rem;display:flex;gap:.6rem;align-items:baseline}
h2 .total{font-variant-numeric:tabular-nums;color:var(--muted);font-weight:600}
.grid{display:grid;grid-template-columns:minmax(12rem,22rem) 1fr 5.5rem 10.5rem;
column-gap:.7rem;font-size:.88rem}
.grid>div{display:contents}
.cell{padding:.22rem 0;border-bottom:1px solid var(--line);min-width:0}
.name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;
padding-left:calc((var(--d) - 1) * 1.3rem)}
.name .t{font-weight:600}
.depth-0 .name .t{font-weight:700}
.sub-phase .name::before{content:"\\2514\\00a0";color:var(--muted)}
.flag{font-size:.72rem;color:var(--muted);border:1px solid var(--line);border-radius:.6rem;
padding:0 .35rem;margin-left:.3rem;font-weight:400}
.track{position:relative;background:repeating-linear-gradient(90deg,transparent 0,
transparent calc(var(--tick) - 1px),var(--line) calc(var(--tick) - 1px),var(--line) var(--tick));
background-position-x:var(--off,0)}
.bar{position:absolute;top:.3rem;bottom:.3rem;min-width:3px;border-radius:3px;background:var(--ok)}
.depth-0 .bar{background:var(--run)}
.kind-boot .bar{background:#9aa0a6}
.compressed .bar{background:repeating-linear-gradient(135deg,#9aa0a6 0,#9aa0a6 8px,
#d5d8db 8px,#d5d8db 11px)}
.dur{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status{white-space:nowrap;font-size:.82rem}
b[class^=label-]{padding:.05rem .4rem;border-radius:.3rem}
.row.outcome-ok .status{color:var(--muted)}
.row.outcome-degraded .bar{background:var(--degraded)}
.row.outcome-degraded .cell{background:#fff8e6}
.row.outcome-error .bar,.row.outcome-timeout .bar{background:var(--bad)}
.row.outcome-error .cell,.row.outcome-timeout .cell{background:#fdecec}
.row.outcome-cancelled .bar{background:var(--cancelled)}
.row.outcome-running .bar{background:repeating-linear-gradient(45deg,var(--ok) 0,var(--ok) 6px,
#9dbdeb 6px,#9dbdeb 12px)}
b.label-degraded{background:var(--degraded);color:#fff}
b.label-error,b.label-timeout,b.label-signal{background:var(--bad);color:#fff}
b.label-cancelled{background:var(--cancelled);color:#fff}
b.label-running{border:1px dashed var(--ok);color:var(--ok)}
h2 b{font-size:.85rem;padding:.05rem .45rem;border-radius:.3rem}
h2 b.label-ok{background:#e3f0e6;color:#1e6b34}
.axis .cell{border-bottom:1px solid #98a2b3;color:var(--muted);font-size:.75rem}
.axis .track{height:1.1rem;background:none}
.axis .tick{position:absolute;transform:translateX(-50%);white-space:nowrap}
.axis .tick.first{transform:none}
.empty{color:var(--muted);font-style:italic;margin:.2rem 0 0}
footer{color:var(--muted);font-size:.78rem}
footer a{color:inherit}
"""


def format_seconds(seconds: float) -> str:
    """Short and human: ``420 µs``, ``12.3 ms``, ``1.24 s``, ``2 min 05 s``."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} \u00b5s"
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def _tick_step(scale: float) -> float:
    """A 1-2-5 step giving at most about eight ticks over ``scale`` seconds."""
    raw = scale / 8
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0):
        if factor * power >= raw:
            return factor * power
    return 10.0 * power


def _tick_label(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{round(seconds * 1000, 6):g} ms"
    return f"{round(seconds, 6):g} s"


def _status(e: TimelineEntry) -> str:
    label = _LABELS[e.outcome]
    if e.reason is not None and e.outcome in ("degraded", "cancelled"):
        label += f": {e.reason}"
    if e.reason is not None and e.outcome == "error" and e.reason != "error":
        label += f" ({e.reason})"
    return f'<b class="label-{e.outcome or "running"}">{escape(label)}</b>'


BOOT_SHARE = 20.0
"""Percent of the track a boot longer than its startup gets, not to scale, so
the phases stay readable beside minutes of imports."""


def _row(e: TimelineEntry, left: float, width: float, compressed: bool = False) -> str:
    outcome = e.outcome or "running"
    classes = f"row kind-{e.kind} outcome-{outcome} depth-{min(e.depth, 9)}"
    classes += " sub-phase" * (e.depth > 1) + " compressed" * compressed
    flags = ""
    if e.kind == "phase" and not e.critical:
        flags += '<span class="flag">non-critical</span>'
    if e.background:
        flags += '<span class="flag">background</span>'
    for key, value in e.tags.items():
        flags += f'<span class="flag">{escape(key)}={escape(value)}</span>'
    shown = {"run": f"{e.event} (whole)", "boot": "boot (process start to lifespan)"}.get(
        e.kind, e.name
    )
    duration = format_seconds(e.elapsed)
    if e.duration is None:
        duration = f"\u2265 {duration}"  # still running: at least this long
    title = (
        ("not to scale: " if compressed else "")
        + f"{e.name} \u2014 starts at +{format_seconds(e.start)}, "
        f"{'runs for' if e.duration is None else 'took'} {format_seconds(e.elapsed)}, "
        f"outcome {e.outcome or 'running'}{f' ({e.reason})' if e.reason else ''}; id {e.id}"
    )
    return (
        f'<div class="{classes}" title="{escape(title)}">'
        f'<span class="cell name" style="--d:{max(e.depth, 1)}">'
        f'<span class="t">{escape(shown)}</span>{flags}</span>'
        f'<span class="cell track"><span class="bar" '
        f'style="left:{left:.3f}%;width:{width:.3f}%"></span></span>'
        f'<span class="cell dur">{escape(duration)}</span>'
        f'<span class="cell status">{_status(e)}</span></div>'
    )


def _not_yet(startup: tuple[TimelineEntry, ...]) -> str:
    """Why the shutdown section is empty, read from the startup's entries."""
    run = next((e for e in startup if e.kind == "run"), None)
    if run is None:
        return "Shutdown has not run yet: no startup has run."
    if run.outcome is None:
        running = [e for e in startup if e.kind == "phase" and e.outcome is None]
        running = [e for e in running if not e.background] or running
        what = "Shutdown has not run yet: the application is starting"
        if running:
            what += f" (phase {running[-1].name!r} is running)"
        return what + "."
    if run.outcome == "signal":
        return "Shutdown has not run: a signal ended the startup."
    if run.outcome not in ("ok", "degraded"):
        return f"Shutdown has not run: startup failed ({run.outcome})."
    return "Shutdown has not run yet: the application is serving."


def _section(
    event: Event, entries: tuple[TimelineEntry, ...], startup: tuple[TimelineEntry, ...] = ()
) -> str:
    title = event.capitalize()
    if not entries:
        what = escape("No startup has run yet." if event == "startup" else _not_yet(startup))
        return f'<section id="{event}"><h2>{title}</h2><p class="empty">{what}</p></section>'
    run = next(e for e in entries if e.kind == "run")
    boot = next((e for e in entries if e.kind == "boot"), None)
    end = max(e.start + e.elapsed for e in entries if e.kind != "boot")
    offset = 0.0  # percent of the track before the run's 0
    origin = 0.0
    if boot is not None and boot.elapsed > end:
        offset = BOOT_SHARE  # boot squeezed in front, the run on its own axis
    elif boot is not None:
        origin = boot.start  # one axis from process start
    scale = max(end - origin, 1e-6)
    room = 100 - offset

    def place(e: TimelineEntry) -> tuple[float, float]:
        if offset and e.kind == "boot":
            return 0.0, offset - 1.0
        left = offset + room * (e.start - origin) / scale
        return left, max(0.0, min(100 - left, room * e.elapsed / scale))

    step = _tick_step(scale)
    ticks = []
    for n in range(math.floor(scale * 1.0001 / step) + 1):
        pct = offset + room * n * step / scale
        cls = "tick first" if n == 0 and not offset else "tick"
        ticks.append(f'<span class="{cls}" style="left:{pct:.3f}%">{_tick_label(n * step)}</span>')
    tick_pct = room * step / scale
    failed = [e for e in entries if e.kind == "phase" and e.failed]
    phases = sum(e.kind == "phase" for e in entries)
    summary = f"{phases} phase{'s' if phases != 1 else ''}"
    if failed:
        summary += f", {len(failed)} not ok"
    started = datetime.fromtimestamp(run.started_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    rows = "".join(
        _row(e, *place(e), compressed=bool(offset) and e.kind == "boot") for e in entries
    )
    return (
        f'<section id="{event}">'
        f"<h2>{title} {_status(run)}"
        f'<span class="total">{escape(format_seconds(run.elapsed))}</span>'
        f'<span class="sub">{escape(summary)} \u00b7 began {started} UTC</span></h2>'
        f'<div class="grid" style="--tick:{tick_pct:.4f}%;--off:{offset:.1f}%">'
        f'<div class="axis"><span class="cell">phase</span><span class="cell track">'
        f'{"".join(ticks)}</span><span class="cell dur">duration</span>'
        f'<span class="cell status">outcome</span></div>'
        f"{rows}</div></section>"
    )


def render_html(timeline: Timeline, json_href: str | None = None) -> str:
    """The whole page: startup then shutdown, each on its own time axis."""
    service = timeline.service
    heading = f"Lifespan timeline \u2014 {service}" if service else "Lifespan timeline"
    link = f' \u00b7 <a href="{escape(json_href)}">JSON</a>' if json_href else ""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    startup = timeline.run("startup")
    sections = _section("startup", startup) + _section(
        "shutdown", timeline.run("shutdown"), startup
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(heading)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(heading)}</h1>"
        '<p class="sub">Bars on each run\'s own time axis; nested phases are indented. '
        "Failed, timed-out and degraded phases are red or amber and labelled.</p>"
        f"{sections}<footer>Snapshot taken {now} UTC{link}</footer></body></html>"
    )


_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_OFFERS = (_HTML, _JSON)
"""HTML first: a browser's ``*/*`` (or no ``Accept``) gets the page."""
_CSP = b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def wants_json(accept: bytes | Iterable[bytes]) -> bool:
    """True when ``Accept`` prefers the timeline's JSON to its HTML page."""
    return negotiate(accept, _OFFERS) == _JSON


async def serve_timeline(
    source: Callable[[], Timeline],
    fmt: Literal["auto", "json"],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Serves ``watch.timeline`` as HTML, or JSON (``fmt="json"``, or by ``Accept``)."""
    method = scope.get("method", "GET")
    if method != "GET" and method != "HEAD":
        await not_allowed(send)
        return
    as_json = fmt == "json"
    vary: tuple[Header, ...] = ()
    if fmt == "auto":
        vary = ((b"vary", b"accept"),)
        as_json = wants_json(header_values(scope.get("headers", ()), b"accept"))
    timeline = source()
    if as_json:
        body = json_body(timeline.to_dict(), indent=2)
        headers = response_headers(_JSON, body, *vary)
    else:
        name = str(scope.get("path", "")).rsplit("/", 1)[-1]
        body = render_html(timeline, json_href=f"{name}.json" if name else None).encode()
        headers = response_headers(_HTML, body, *vary, (b"content-security-policy", _CSP))
    await respond(send, method, 200, headers, body)
