"""The health of one ``Lifewatch`` and its probes: ``/livez``, ``/readyz``, ``/startupz``.

``Health`` is a sink on the lifecycle's event flow: it starts the ``interval``
checks' refreshers when startup completes, stops them when shutdown begins,
and every event makes the answers the endpoints keep stale. Checks run on the
app's own loop even when the ops listener's thread asks: a blocked loop costs a
probe its timeout (the check fails, ``timeout``), never a hang.

A plain request whose checks were all cached is answered from the answer
kept for it; anything else builds the answer, and a probe that breaks says
503 and logs why (never 500). Formats: the kube-apiserver's text and the IETF
health-check draft's JSON (DESIGN §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

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
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._types import PROBES, RESERVED, Probe, State
from ._validate import validate_bool, validate_check_name, validate_seconds

if TYPE_CHECKING:
    # Loaded with the first check and the first supervised task: many apps have none.
    from ._checks import CheckResult, CheckRunner, HealthCheck
    from ._lifecycle import Lifecycle
    from ._supervise import Supervised

Status = Literal["pass", "warn", "fail"]


class Entry:
    """One line of a probe answer: a check, a supervised task, or the lifecycle.
    A plain class: making a dataclass is a cost every ``import lifewatch`` pays."""

    def __init__(
        self,
        name: str,
        status: Status,
        at: float | None,  # Unix seconds
        observed_value: Any = None,  # a float is a duration in seconds
        output: str | None = None,  # why it is not ``pass``
        secret: bool = False,  # ``output`` may hold secrets (exception text): shown on request
        critical: bool = True,
    ) -> None:
        self.name = name
        self.status = status
        self.at = at
        self.observed_value = observed_value
        self.output = output
        self.secret = secret
        self.critical = critical
        self.excluded = False


class Report:
    """The answer of one probe at one moment."""

    def __init__(
        self, status: Status, state: State, entries: list[Entry], unknown_excludes: list[str]
    ) -> None:
        self.status = status
        self.state = state
        self.entries = entries
        self.unknown_excludes = unknown_excludes


class Health(Sink):
    """Checks, supervised tasks and the lifecycle, as probe reports."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.runners: dict[str, CheckRunner] = {}
        self.supervised: dict[str, Supervised] = {}
        self.version = 0  # bumped whenever an answer may change: kept answers are stale
        self.entry_added: list[Callable[[Probe, str], None]] = []  # (probe, check or task)
        self.loop: asyncio.AbstractEventLoop | None = None  # the app's: checks run there
        self._serving = False
        self._state_time = time.time()

    @property
    def checks(self) -> dict[str, HealthCheck]:
        return {name: runner.check for name, runner in self.runners.items()}

    def invalidate(self) -> None:
        self.version += 1

    def add_check(
        self,
        name: str,
        func: Callable[[], Any],
        *,
        timeout: float,
        probes: Iterable[Probe],
        critical: bool,
        interval: float | None,
    ) -> HealthCheck:
        name = validate_check_name(name)
        if not callable(func):
            raise TypeError(
                f"check {name!r} must be a callable taking no arguments (async or sync); "
                f"got {func!r}"
            )
        timeout_s = validate_seconds(timeout, f"timeout of check {name!r}", optional=False)
        interval_s = validate_seconds(interval, f"interval of check {name!r}", optional=True)
        if isinstance(probes, str) or not isinstance(probes, Iterable):
            raise TypeError(
                f"probes must be a tuple of probe names, e.g. probes=('readiness',); got {probes!r}"
            )
        chosen = tuple(probes)
        if not chosen or any(p not in PROBES for p in chosen):
            raise ValueError(
                f"probes={probes!r} is not valid; each probe must be one of "
                f"{', '.join(PROBES)}, and at least one is needed"
            )
        validate_bool(critical, "critical")
        if name in self.runners:
            raise ValueError(
                f"a health check named {name!r} is already registered "
                f"({self.runners[name].check.func!r}); check names must be unique"
            )
        from ._checks import CheckRunner, HealthCheck

        check = HealthCheck(name, func, timeout_s, frozenset(chosen), critical, interval_s)
        runner = self.runners[name] = CheckRunner(
            check, functools.partial(self.lifecycle.bus.emit, "check_result"), self.lifecycle.notify
        )
        for hook in self.entry_added:
            for probe in check.probes:
                hook(probe, name)
        if self._serving:
            runner.start_refreshing()
        self.invalidate()
        return check

    def supervise(self, task: Any, name: str | None) -> asyncio.Task[Any]:
        if asyncio.iscoroutine(task):
            try:
                task = asyncio.get_running_loop().create_task(task)
            except RuntimeError:
                task.close()
                raise RuntimeError(
                    "watch.supervise(coroutine) needs a running event loop (call it from "
                    "the lifespan); or pass an asyncio.Task"
                ) from None
        if not isinstance(task, asyncio.Task):
            raise TypeError(f"watch.supervise() takes an asyncio.Task or a coroutine; got {task!r}")
        name = validate_check_name(task.get_name() if name is None else name)
        old = self.supervised.get(name)
        if old is not None and not old.task.done():
            raise ValueError(
                f"a running task is already supervised as {name!r}; names must be unique"
            )
        from ._supervise import Supervised, watch_task

        record = self.supervised[name] = Supervised(name, task)
        self.lifecycle.bus.emit("task_started", record)
        watch_task(
            record, self._shutting_down, functools.partial(self.lifecycle.bus.emit, "task_died")
        )
        for hook in self.entry_added:
            hook("liveness", record.entry)
        self.invalidate()
        return task

    def _shutting_down(self) -> bool:
        lc = self.lifecycle
        current = lc.current
        return lc.state in (State.STOPPING, State.STOPPED) or (
            current is not None and current.event == "shutdown"
        )

    # -- the lifecycle's event flow ------------------------------------------

    def check_result(
        self, check: HealthCheck, result: CheckResult, previous: CheckResult | None
    ) -> None:
        if previous is None or previous.ok != result.ok or previous.detail != result.detail:
            self.invalidate()

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            with contextlib.suppress(RuntimeError):  # lifespans run on a loop
                self.loop = asyncio.get_running_loop()
        if run.event == "shutdown":
            self._serving = False
            for runner in self.runners.values():
                runner.stop_refreshing()
        self.invalidate()

    def run_end(self, run: RunRecord) -> None:
        if run.event == "startup" and run.outcome in ("ok", "degraded"):
            self._serving = True
            for runner in self.runners.values():
                runner.start_refreshing()
        self.invalidate()

    def phase_begin(self, phase: PhaseRecord) -> None:
        if phase.event == "startup" and not phase.background:  # /startupz names it
            self.invalidate()

    def phase_end(self, phase: PhaseRecord) -> None:  # a background phase may degrade startup
        self.invalidate()

    def state_changed(self, old: State | None, new: State) -> None:
        self._state_time = time.time()
        self.invalidate()

    def task_died(self, task: Supervised) -> None:
        self.invalidate()

    def notice(self, notice: Notice) -> None:  # traffic refused by hand, a drain step
        self.invalidate()

    # -- reports --------------------------------------------------------------

    async def report(
        self, probe: Probe, only: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> tuple[Report, bool]:
        """The probe's report, and whether it was made from cached results only.

        ``only`` narrows it to one entry (``/readyz/<check>``); ``exclude`` marks
        entries as excluded (``?exclude=``).
        """
        state = self.lifecycle.state
        if probe == "liveness":
            records = self.supervised.values()
            entries = [_task_entry(r) for r in records if only in (None, r.entry)]
        else:
            entries = [self._lifespan_entry(probe)] if only in (None, RESERVED) else []
        # Each check's cached result, or a run now (concurrent, sharing runs in flight);
        # an excluded check is not run (no result).
        runners: list[CheckRunner] = []
        results: dict[str, CheckResult | None] = {}
        to_run: list[CheckRunner] = []
        cacheable = True  # every result read from a refresher's cache
        for runner in self.runners.values():
            name = runner.check.name
            if probe not in runner.check.probes or only not in (None, name):
                continue
            runners.append(runner)
            if name in exclude:
                continue
            result = results[name] = runner.cached()
            cacheable = cacheable and result is not None and runner.refresher is not None
            if result is None:
                to_run.append(runner)
        if to_run:
            home = self.loop
            if home is not None and home is not asyncio.get_running_loop() and not home.is_closed():
                # Asked from another loop (the ops listener's): run on the app's.
                ran = await asyncio.gather(*(_run_on(home, r) for r in to_run))
            else:
                from ._checks import wait_for_runs

                ran = await wait_for_runs(to_run)
            results.update(zip([r.check.name for r in to_run], ran, strict=True))
        entries += [_check_entry(r.check, results.get(r.check.name)) for r in runners]
        for entry in entries:
            entry.excluded = entry.name in exclude
            if only not in (None, RESERVED) and entry.status == "warn":
                # /readyz/<check> reports that check, as the kube-apiserver does:
                # a failing non-critical check is a failure there.
                entry.status = "fail"
        statuses = {entry.status for entry in entries if not entry.excluded}
        status: Status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
        unknown = sorted(exclude - {entry.name for entry in entries}) if exclude else []
        return Report(status, state, entries, unknown), cacheable

    def _lifespan_entry(self, probe: Probe) -> Entry:
        lc, when = self.lifecycle, self._state_time
        state, startup = lc.state, lc.startup
        if lc.startup_complete if probe == "startup" else state is State.READY:
            if startup is not None and startup.outcome == "degraded":
                names = ", ".join(p.name for p in startup.phases if p.outcome == "degraded")
                output = f"degraded: non-critical phase(s) failed: {names}"
                return Entry(RESERVED, "warn", when, state.value, output=output)
            return Entry(RESERVED, "pass", when, state.value)
        if state is State.DRAINING and lc.readiness.refusal is not None:
            output = f"refusing traffic: {lc.readiness.refusal}"
        elif state is State.STARTING and lc.startup_complete and lc.background.tasks:
            output = "background phase(s) running: " + ", ".join(lc.background.names())
        elif state is State.STARTING and startup is not None and startup.end is None:
            running = [p.name for p in startup.phases if p.end is None and not p.background]
            output = f"starting: phase {running[-1]!r} running" if running else "starting"
        elif state is State.FAILED and startup is not None and startup.failed_phase:
            output = f"failed: phase {startup.failed_phase!r}"
        else:
            output = state.value
        return Entry(RESERVED, "fail", when, state.value, output=output)


def _check_entry(check: HealthCheck, result: CheckResult | None) -> Entry:
    if result is None:  # excluded: not run
        return Entry(check.name, "pass", None, critical=check.critical)
    status: Status = "pass" if result.ok else "fail" if check.critical else "warn"
    return Entry(
        check.name,
        status,
        result.finished_at,
        observed_value=result.duration,
        output=result.detail,
        secret=True,
        critical=check.critical,
    )


def _task_entry(record: Supervised) -> Entry:
    status: Status = "fail" if record.died else "pass"
    value = "died" if record.died else "running"
    output = record.detail if record.died else None
    return Entry(record.entry, status, record.changed_at, value, output=output, secret=True)


async def _run_on(home: asyncio.AbstractEventLoop, runner: CheckRunner) -> CheckResult:
    """Run the check on the app's loop from another loop, bounded as a run is.

    A blocked app loop never starts the run: after the timeout and the grace
    the check has failed (``timeout``) and the waiter left behind is cancelled
    (never the run, which other probes may share).
    """
    from ._checks import ABANDON_GRACE, failed

    start = time.perf_counter()
    run = runner.run()
    try:
        future = asyncio.run_coroutine_threadsafe(run, home)
    except RuntimeError:  # closed in between
        run.close()
        return failed(time.perf_counter() - start, "timeout", "the app's event loop is closed")
    try:
        bound = runner.check.timeout + ABANDON_GRACE
        return await asyncio.wait_for(asyncio.wrap_future(future), bound)
    except asyncio.TimeoutError:
        future.cancel()
        timeout = runner.check.timeout
        why = f"the app's event loop did not run the check within {timeout:g}s (blocked?)"
        return failed(time.perf_counter() - start, "timeout", why)


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
