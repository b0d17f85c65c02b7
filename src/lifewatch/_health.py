"""The health of one ``Lifewatch``: checks, supervised tasks, lifecycle truth.

Checks and supervised tasks report to the lifecycle, which tells every sink
(metrics and logs come from there, isolated); health writes neither itself.
``Health`` is a sink on that one event flow: it starts the
``interval`` checks' refreshers when startup completes and stops them when
shutdown begins, and every lifecycle event invalidates the answers the probe
endpoints keep, so a probe with only cached checks is a few attribute reads.
It turns all of it into a ``Report`` per probe; ``_probes`` renders reports.

A probe may be answered on another thread's loop (the ops listener): the
checks still run on the app's own loop, the one the lifespan runs on, handed
over and waited for under their timeout, so a blocked loop costs a probe its
timeout and answers the check failed (``timeout``), never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from ._checks import (
    ABANDON_GRACE,
    PROBES,
    RESERVED,
    CheckResult,
    HealthCheck,
    Probe,
    Starter,
    start_all,
    validate_check_name,
    validate_probes,
)
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._supervise import Supervised, watch_task
from ._types import State
from ._validate import validate_bool, validate_seconds

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

Status = Literal["pass", "warn", "fail"]


class Entry:
    """One line of a probe answer: a check, a supervised task, or the lifecycle.

    Plain classes here, not dataclasses: ``@dataclass`` runs ``exec`` at import.
    """

    __slots__ = (
        "at",
        "critical",
        "excluded",
        "name",
        "observed_unit",
        "observed_value",
        "output",
        "secret",
        "status",
    )

    name: str
    status: Status
    at: float | None
    """When (Unix seconds), formatted only for a JSON answer."""
    observed_value: Any
    observed_unit: str | None
    output: str | None
    """Why it is not ``pass``."""
    secret: bool
    """``output`` may carry secrets (exception text): withheld unless
    ``expose_details=True``. The lifecycle's own words never are."""
    critical: bool
    excluded: bool

    def __init__(
        self,
        name: str,
        status: Status,
        at: float | None,
        observed_value: Any = None,
        observed_unit: str | None = None,
        output: str | None = None,
        secret: bool = False,
        critical: bool = True,
        excluded: bool = False,
    ) -> None:
        self.name = name
        self.status = status
        self.at = at
        self.observed_value = observed_value
        self.observed_unit = observed_unit
        self.output = output
        self.secret = secret
        self.critical = critical
        self.excluded = excluded

    def __repr__(self) -> str:
        return f"Entry(name={self.name!r}, status={self.status!r}, output={self.output!r})"


class Report:
    """The answer of one probe at one moment."""

    __slots__ = ("entries", "probe", "state", "status", "unknown_excludes")

    def __init__(
        self,
        probe: Probe,
        status: Status,
        state: State,
        entries: list[Entry] | None = None,
        unknown_excludes: list[str] | None = None,
    ) -> None:
        self.probe = probe
        self.status = status
        self.state = state
        self.entries: list[Entry] = [] if entries is None else entries
        self.unknown_excludes: list[str] = [] if unknown_excludes is None else unknown_excludes

    def __repr__(self) -> str:
        return f"Report(probe={self.probe!r}, status={self.status!r}, state={self.state!r})"


_PENDING = Entry("", "fail", None)
"""The place of a check's entry in a report, until its run answers."""


def _overall(entries: Iterable[Entry]) -> Status:
    status: Status = "pass"
    for entry in entries:
        if entry.excluded:
            continue
        if entry.status == "fail":
            return "fail"
        if entry.status == "warn":
            status = "warn"
    return status


class Health(Sink):
    """Checks, supervised tasks and the lifecycle, as probe reports."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.checks: dict[str, HealthCheck] = {}
        self.by_probe: dict[Probe, list[HealthCheck]] = {p: [] for p in PROBES}
        self.supervised: dict[str, Supervised] = {}
        self.version = 0
        """Bumped whenever an answer may change; endpoints compare it."""
        self.listeners: list[Callable[[], None]] = []
        """Called on any change: the endpoints keeping an answer forget it."""
        self.on_check_added: list[Callable[[HealthCheck], None]] = []
        self.on_supervised: list[Callable[[Supervised], None]] = []
        self._serving = False
        self._reported = False
        """A report was made since the endpoints last forgot their answers."""
        self._state_time = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        """The app's event loop (the lifespan's): where checks run."""
        self._starter: Starter | None = None

    def invalidate(self) -> None:
        self.version += 1
        # An endpoint keeps only an answer made by ``report``: none was made
        # since the last time they all forgot, so none is kept (every phase
        # begins and ends here, probes come every few seconds).
        if self._reported:
            self._reported = False
            for forget in self.listeners:
                forget()

    # -- registration ---------------------------------------------------------

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
        if name in self.checks:
            raise ValueError(
                f"a health check named {name!r} is already registered "
                f"({self.checks[name].func!r}); check names must be unique"
            )
        check = HealthCheck(
            name,
            func,
            timeout=timeout_s,
            probes=chosen,
            critical=critical,
            interval=interval_s,
            on_result=self.lifecycle.check_result,
            notify=self.lifecycle.notify,
        )
        self.checks[name] = check
        for probe in PROBES:
            if probe in chosen:
                self.by_probe[probe].append(check)
        for hook in self.on_check_added:
            hook(check)
        if self._serving and check.interval is not None:
            self._start_refresher(check)
        self.invalidate()
        return check

    def supervise(self, task: Any, name: str | None) -> asyncio.Task[Any]:
        if asyncio.iscoroutine(task):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                task.close()
                raise RuntimeError(
                    "watch.supervise(coroutine) needs a running event loop (call it from "
                    "the lifespan); or pass an asyncio.Task"
                ) from None
            task = loop.create_task(task)
        if not isinstance(task, asyncio.Task):
            raise TypeError(f"watch.supervise() takes an asyncio.Task or a coroutine; got {task!r}")
        name = task.get_name() if name is None else name
        validate_check_name(name)
        old = self.supervised.get(name)
        if old is not None and not old.task.done():
            raise ValueError(
                f"a running task is already supervised as {name!r}; names must be unique"
            )
        record = Supervised(name, task)
        self.supervised[name] = record
        self.lifecycle.task_started(record)
        watch_task(record, self._shutting_down, self.lifecycle.task_died)
        for hook in self.on_supervised:
            hook(record)
        self.invalidate()
        return task

    def _shutting_down(self) -> bool:
        lc = self.lifecycle
        current = lc.current
        return lc.state in (State.STOPPING, State.STOPPED) or (
            current is not None and current.event == "shutdown"
        )

    # -- results, on the lifecycle's event flow -------------------------------

    def check_result(
        self, check: HealthCheck, result: CheckResult, previous: CheckResult | None
    ) -> None:
        if previous is None or previous.ok != result.ok or previous.detail != result.detail:
            self.invalidate()

    def task_died(self, task: Supervised) -> None:
        self.invalidate()

    # -- background refresh, on the lifecycle's event flow -------------------

    def _start_refresher(self, check: HealthCheck) -> None:
        if check.refresher is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # added from outside the loop: probes run it, cached one interval
        check.refresher = loop.create_task(
            check.refresh_forever(), name=f"lifewatch-refresh:{check.name}"
        )

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            with contextlib.suppress(RuntimeError):  # lifespans run on a loop
                self.loop = asyncio.get_running_loop()
        if run.event == "shutdown":
            self._serving = False
            for check in self.checks.values():
                task, check.refresher = check.refresher, None
                if task is not None:
                    task.cancel()
        self.invalidate()

    def run_end(self, run: RunRecord) -> None:
        if run.event == "startup" and run.outcome in ("ok", "degraded"):
            self._serving = True
            for check in self.checks.values():
                if check.interval is not None:
                    self._start_refresher(check)
        self.invalidate()

    def phase_begin(self, phase: PhaseRecord) -> None:
        # A failing /startupz names the phase running now.
        if phase.event == "startup" and not phase.background:
            self.invalidate()

    def phase_end(self, phase: PhaseRecord) -> None:
        # A background phase may degrade the startup after it ended.
        self.invalidate()

    def notice(self, notice: Notice) -> None:
        # Traffic refused or accepted by hand, a drain step: the reason shows.
        self.invalidate()

    def state_changed(self, old: State | None, new: State) -> None:
        self._state_time = time.time()
        self.invalidate()

    # -- reports --------------------------------------------------------------

    def _lifespan_entry(self, probe: Probe) -> Entry:
        lc = self.lifecycle
        state = lc.state
        when = self._state_time
        startup = lc.startup
        degraded = startup is not None and startup.outcome == "degraded"
        ok = lc.startup_complete if probe == "startup" else state is State.READY
        if ok:
            if degraded and startup is not None:
                names = [p.name for p in startup.phases if p.outcome == "degraded"]
                output = "degraded: non-critical phase(s) failed: " + ", ".join(names)
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

    @staticmethod
    def _check_entry(check: HealthCheck, result: CheckResult) -> Entry:
        if result.ok:  # positional: keywords double the cost, paid per check per probe
            return Entry(
                check.name,
                "pass",
                result.finished_at,
                result.duration,
                "s",
                None,
                True,
                check.critical,
            )
        return Entry(
            check.name,
            "fail" if check.critical else "warn",
            result.finished_at,
            result.duration,
            "s",
            output=result.detail,
            secret=True,
            critical=check.critical,
        )

    @staticmethod
    def _task_entry(record: Supervised) -> Entry:
        return Entry(
            record.entry,
            "fail" if record.died else "pass",
            record.changed_at,
            "died" if record.died else "running",
            output=record.detail if record.died else None,
            secret=True,
        )

    def names(self, probe: Probe) -> set[str]:
        """Every entry name a probe answers with (what ``?exclude=`` may name)."""
        names = {c.name for c in self.by_probe[probe]}
        if probe == "liveness":
            names.update(r.entry for r in self.supervised.values())
        else:
            names.add(RESERVED)
        return names

    async def report(
        self, probe: Probe, only: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> tuple[Report, bool]:
        """The probe's report, and whether it was made from cached results only.

        ``only`` narrows it to one entry (``/readyz/<check>``); ``exclude`` marks
        entries as excluded (``?exclude=``). Checks without a usable cached
        result run now, concurrently, sharing any run already in flight.
        """
        self._reported = True  # before anything is read: see invalidate
        state = self.lifecycle.state
        entries: list[Entry] = []
        if probe != "liveness" and only in (None, RESERVED):
            entries.append(self._lifespan_entry(probe))
        if probe == "liveness":
            for record in list(self.supervised.values()):
                if only is None or only == record.entry:
                    entries.append(self._task_entry(record))
        cacheable = True
        pending: list[tuple[int, HealthCheck]] = []
        to_run: list[HealthCheck] = []
        for check in self.by_probe[probe]:
            if only is not None and only != check.name:
                continue
            if check.name in exclude:
                entries.append(Entry(check.name, "pass", None, critical=check.critical))
                continue
            result = None if check.interval is None else check.cached()
            if result is None:
                pending.append((len(entries), check))
                to_run.append(check)
                entries.append(_PENDING)  # filled in below
                continue
            if check.refresher is None:
                cacheable = False
            entries.append(self._check_entry(check, result))
        if pending:
            cacheable = False
            loop = asyncio.get_running_loop()
            home = self.loop
            if home is not None and home is not loop and not home.is_closed():
                # Asked from another loop (the ops listener's): run on the app's.
                outs = await asyncio.gather(*(_run_on(home, check) for _, check in pending))
                for (index, check), out in zip(pending, outs, strict=True):
                    entries[index] = self._check_entry(check, out)
                pending, to_run = [], []
            starter = self._starter
            if starter is None or starter.loop is not loop:
                starter = self._starter = Starter.for_loop(loop)
            runs, timers = start_all(to_run, starter)
            waiting: list[tuple[int, HealthCheck, asyncio.Task[CheckResult]]] = []
            for (index, check), run in zip(pending, runs, strict=True):
                if isinstance(run, CheckResult):  # finished at once
                    entries[index] = self._check_entry(check, run)
                else:
                    waiting.append((index, check, run))
            if waiting:
                running = [(check, task) for _, check, task in waiting if not task.done()]
                if running:
                    # Not gather: a probe that goes away must not cancel runs
                    # that other probes share, and ``wait`` never cancels what
                    # it waits on (one waiter for all, where ``shield`` costs a
                    # future per run). Bounded whatever the checks do: a run
                    # still going at its deadline (its timeout plus a grace) is
                    # abandoned, not awaited.
                    deadline = max(check.deadline for check, _ in running)
                    await asyncio.wait(
                        [task for _, task in running], timeout=max(0.0, deadline - loop.time())
                    )
                if all(task.done() for _, _, task in waiting):
                    for timer in timers:
                        timer.cancel()
                # else: leave them; they bound the runs still going (a no-op once fired)
                for index, check, task in waiting:
                    entries[index] = self._check_entry(check, check.outcome(task))
        if only is not None and only != RESERVED:
            # /readyz/<check> reports that check, as the kube-apiserver does:
            # a failing non-critical check is a failure there, not a warning.
            for entry in entries:
                if entry.status == "warn":
                    entry.status = "fail"
        if exclude:
            for entry in entries:
                if entry.name in exclude:
                    entry.excluded = True
            known = self.names(probe)
            unknown = sorted(n for n in exclude if n not in known)
        else:
            unknown = []
        return Report(probe, _overall(entries), state, entries, unknown), cacheable


async def _run_on(home: asyncio.AbstractEventLoop, check: HealthCheck) -> CheckResult:
    """Run ``check`` on the app's loop from another loop, bounded as a run is.

    A blocked app loop never starts the run: the answer is the check failed
    (``timeout``) once its timeout and the grace have passed (the bound a run's
    waiters keep on the app's loop, so a check that ignores its cancellation is
    abandoned there first), and the waiter left behind is cancelled (never the
    run: a run other probes share goes on).
    """
    start = time.perf_counter()

    def failed(detail: str) -> CheckResult:
        elapsed = time.perf_counter() - start
        return CheckResult(False, elapsed, time.time(), time.monotonic(), "timeout", detail)

    run = check.run()
    try:
        future = asyncio.run_coroutine_threadsafe(run, home)
    except RuntimeError:  # closed in between
        run.close()
        return failed("the app's event loop is closed")
    try:
        bound = check.timeout + ABANDON_GRACE
        return await asyncio.wait_for(asyncio.wrap_future(future), bound)
    except asyncio.TimeoutError:
        future.cancel()
        return failed(
            f"the app's event loop did not run the check within {check.timeout:g}s (blocked?)"
        )
