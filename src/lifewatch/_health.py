"""The health of one ``Lifewatch``: checks, supervised tasks and the lifecycle, as probe reports.

``Health`` is a sink on the lifecycle's event flow: it starts the ``interval``
checks' refreshers when startup completes, stops them when shutdown begins,
and every event invalidates the answers the probe endpoints keep. Checks run
on the app's own loop even when the ops listener's thread asks: a blocked
loop costs a probe its timeout (the check fails, ``timeout``), never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._checks import (
    ABANDON_GRACE,
    RESERVED,
    CheckResult,
    CheckRunner,
    HealthCheck,
    Probe,
    failed,
    validate_check_name,
    validate_probes,
    wait_for_runs,
)
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._supervise import Supervised, watch_task
from ._types import State
from ._validate import validate_bool, validate_seconds

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

Status = Literal["pass", "warn", "fail"]


@dataclass(slots=True)
class Entry:
    """One line of a probe answer: a check, a supervised task, or the lifecycle."""

    name: str
    status: Status
    at: float | None  # Unix seconds
    observed_value: Any = None  # a float is a duration in seconds
    output: str | None = None  # why it is not ``pass``
    secret: bool = False  # ``output`` may hold secrets (exception text): shown on request
    critical: bool = True
    excluded: bool = False


@dataclass(slots=True)
class Report:
    """The answer of one probe at one moment."""

    probe: Probe
    status: Status
    state: State
    entries: list[Entry] = field(default_factory=list)
    unknown_excludes: list[str] = field(default_factory=list)


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
        chosen = validate_probes(probes)
        validate_bool(critical, "critical")
        if name in self.runners:
            raise ValueError(
                f"a health check named {name!r} is already registered "
                f"({self.runners[name].check.func!r}); check names must be unique"
            )
        check = HealthCheck(name, func, timeout_s, chosen, critical, interval_s)
        runner = self.runners[name] = CheckRunner(
            check, self.lifecycle.check_result, self.lifecycle.notify
        )
        for hook in self.entry_added:
            for probe in chosen:
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
        record = self.supervised[name] = Supervised(name, task)
        self.lifecycle.task_started(record)
        watch_task(record, self._shutting_down, self.lifecycle.task_died)
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
        runners = [
            r
            for r in self.runners.values()
            if probe in r.check.probes and only in (None, r.check.name)
        ]
        checks, cacheable = await self._check_entries(runners, exclude)
        entries += checks
        for entry in entries:
            entry.excluded = entry.name in exclude
            if only not in (None, RESERVED) and entry.status == "warn":
                # /readyz/<check> reports that check, as the kube-apiserver does:
                # a failing non-critical check is a failure there.
                entry.status = "fail"
        statuses = {entry.status for entry in entries if not entry.excluded}
        status: Status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
        unknown = sorted(exclude - {entry.name for entry in entries}) if exclude else []
        return Report(probe, status, state, entries, unknown), cacheable

    async def _check_entries(
        self, runners: list[CheckRunner], exclude: frozenset[str]
    ) -> tuple[list[Entry], bool]:
        """An entry per check, from its cached result or a run now (concurrent,
        sharing runs in flight); and whether every one was cached."""
        wanted = [r for r in runners if r.check.name not in exclude]
        results: dict[str, CheckResult | None] = {r.check.name: r.cached() for r in wanted}
        to_run = [r for r in wanted if results[r.check.name] is None]
        cacheable = not to_run and all(r.refresher is not None for r in wanted)
        if to_run:
            home = self.loop
            if home is not None and home is not asyncio.get_running_loop() and not home.is_closed():
                # Asked from another loop (the ops listener's): run on the app's.
                ran = await asyncio.gather(*(_run_on(home, r) for r in to_run))
            else:
                ran = await wait_for_runs(to_run)
            results.update(zip([r.check.name for r in to_run], ran, strict=True))
        return [_check_entry(r.check, results.get(r.check.name)) for r in runners], cacheable

    def _lifespan_entry(self, probe: Probe) -> Entry:
        lc, when = self.lifecycle, self._state_time
        state, startup = lc.state, lc.startup
        if lc.startup_complete if probe == "startup" else state is State.READY:
            if startup is not None and startup.outcome == "degraded":
                names = ", ".join(p.name for p in startup.phases if p.outcome == "degraded")
                output = f"degraded: non-critical phase(s) failed: {names}"
                return Entry(RESERVED, "warn", when, state.value, output=output)
            return Entry(RESERVED, "pass", when, state.value)
        if state is State.DRAINING and lc.refusal is not None:
            output = f"refusing traffic: {lc.refusal}"
        elif state is State.STARTING and lc.startup_complete and lc.background:
            output = "background phase(s) running: " + ", ".join(lc.background_names())
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
