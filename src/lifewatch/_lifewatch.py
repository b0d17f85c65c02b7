"""``Lifewatch``: the one object a user configures and wires in.

A thin facade: it validates the options once, builds the parts once (the
lifecycle first, then the sinks and the endpoints around it) and hands the
ways in what they need. It holds no state of its own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from ._build import resolve_build
from ._channel import DrainChannel
from ._checks import CheckResult, HealthCheck, Probe
from ._drain import Drainer
from ._exposition import MetricsEndpoint
from ._health import Health
from ._lifecycle import Lifecycle
from ._lifespan import WatchedLifespan, as_factory, name_of
from ._logging import EventLog, LoggingSink
from ._metrics import Metrics, MetricsSink, metrics_for
from ._ops import OpsListener
from ._options import Options
from ._phase import Phase
from ._probes import ProbeRoutes
from ._process import process_start_time
from ._records import RunRecord
from ._sink import Sink
from ._starlette import instrument
from ._threads import run_in_daemon_thread
from ._tracing import TracingSink
from ._types import State
from ._validate import validate_bool, validate_name, validate_seconds

if TYPE_CHECKING:
    # Imported where used: an app without a Pushgateway or a served timeline
    # never loads them (``import lifewatch`` is part of every start).
    from ._pushgateway import Pushgateway
    from ._timeline import Timeline

App = TypeVar("App")
F = TypeVar("F", bound=Callable[[], Any])
P = ParamSpec("P")
T = TypeVar("T")


class Lifewatch:
    """Observes one application's lifespan: phases, state, probes, metrics.

    Every keyword argument is an option, all optional, described on
    ``Options``; they are validated here, once, never change, and are read
    back in one place: ``watch.options``.
    """

    def __init__(
        self,
        *,
        service: str | None = None,
        registry: CollectorRegistry | None = None,
        namespace: str = "lifespan",
        tracer_provider: TracerProvider | None = None,
        startup_timeout: float | None = None,
        shutdown_timeout: float = 20.0,
        sinks: tuple[Sink, ...] = (),
        timeline_path: str | None = "/lifewatch/timeline",
        livez_path: str | None = "/livez",
        readyz_path: str | None = "/readyz",
        startupz_path: str | None = "/startupz",
        expose_details: bool = False,
        slow_check_threshold: float = 0.5,
        drain_delay: float = 5.0,
        metrics_path: str | None = "/metrics",
        pushgateway: str | Pushgateway | None = None,
        ops_address: str | None = None,
        ops_only: bool = False,
        logger: Any = "auto",
        version: str | None = None,
        revision: str | None = None,
    ) -> None:
        self._options = o = Options(
            service=service,
            registry=registry,
            namespace=namespace,
            tracer_provider=tracer_provider,
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
            sinks=sinks,
            timeline_path=timeline_path,
            livez_path=livez_path,
            readyz_path=readyz_path,
            startupz_path=startupz_path,
            expose_details=expose_details,
            slow_check_threshold=slow_check_threshold,
            drain_delay=drain_delay,
            metrics_path=metrics_path,
            pushgateway=pushgateway,  # type: ignore[arg-type] # a URL becomes a Pushgateway
            ops_address=ops_address,
            ops_only=ops_only,
            logger=logger,
            version=version,
            revision=revision,
        )
        # The parts, built once, lifecycle first. Package-internal: the ways in
        # (the middleware, instrument(), lifewatch.testing) take them from here.
        log = EventLog(o.service, o.logger)
        self._process_start = process_start_time()
        self._lifecycle = lifecycle = Lifecycle(
            service=o.service,
            startup_timeout=o.startup_timeout,
            shutdown_timeout=o.shutdown_timeout,
            log=log,
            process_start=self._process_start,
        )
        self._health = Health(lifecycle)
        self._routes, ops_routes = _endpoints(o, self._health, lifecycle, lambda: self.timeline)
        self._ops = (
            None if o.ops_address is None else OpsListener(lifecycle, o.ops_address, ops_routes)
        )
        build = resolve_build(o.service, o.version, o.revision)
        self._tracing = TracingSink(o.service, o.tracer_provider, build)
        metrics = metrics_for(o.registry, o.namespace)
        observers = (
            self._tracing,
            MetricsSink(metrics, self._process_start, build.labels()),
            LoggingSink(log, slow_check_threshold=o.slow_check_threshold),
            self._health,
        )
        lifecycle.connect((*observers, *_drain_and_push(o, lifecycle, log, metrics, self._ops)))

    def __repr__(self) -> str:
        return f"Lifewatch(service={self._options.service!r}, state={self.state.value!r})"

    @property
    def options(self) -> Options:
        """Every option, validated; frozen. The one place settings are read."""
        return self._options

    # -- what it knows ------------------------------------------------------

    @property
    def ops_port(self) -> int | None:
        """The ops listener's port while it listens (the one picked for port 0), else None."""
        return None if self._ops is None else self._ops.port

    @property
    def state(self) -> State:
        """The current lifecycle state."""
        return self._lifecycle.state

    @property
    def startup_complete(self) -> bool:
        """Startup finished (background phases may still run): ``/startupz``."""
        return self._lifecycle.startup_complete

    @property
    def startup(self) -> RunRecord | None:
        """The last startup run, with its phases."""
        return self._lifecycle.startup

    @property
    def shutdown(self) -> RunRecord | None:
        """The last shutdown run, with its phases."""
        return self._lifecycle.shutdown

    @property
    def timeline(self) -> Timeline:
        """A snapshot of the last startup and shutdown: every phase, nested, timed."""
        from ._timeline import build_timeline

        lc = self._lifecycle
        return build_timeline(self._options.service, lc.startup, lc.shutdown, self._process_start)

    # -- ways in ------------------------------------------------------------

    def phase(
        self,
        name: str,
        *,
        timeout: float | None = None,
        critical: bool = True,
        tags: dict[str, str] | None = None,
    ) -> Phase:
        """A phase: ``async with``/``with watch.phase(...)``, or ``@watch.phase(...)``
        on an async or a plain function.

        ``timeout``: an async block is cancelled at it; any block still running
        then is reported by the watchdog (``lifespan.phase.overrun``, with where
        it is stuck) and ends with outcome ``timeout``.
        """
        return Phase(self._lifecycle, name, timeout=timeout, critical=critical, tags=tags)

    async def to_thread(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args, **kwargs)`` in a daemon thread of its own: blocking work a
        phase can give up on.

        When the awaiting task is cancelled (the phase's ``timeout``, the run's
        bound, a SIGTERM during startup) lifewatch stops waiting, logs
        ``lifespan.thread.abandoned`` with the thread's stack, and leaves the
        thread running: a daemon thread never holds the process's exit (the
        worker threads of ``asyncio.to_thread`` and ``anyio.to_thread`` do).
        Context variables are copied, so phases inside nest under the caller's.
        Under asyncio and trio.
        """
        return await run_in_daemon_thread(self._lifecycle, func, args, kwargs)

    def lifespan(self, *lifespans: Any, **named: Any) -> WatchedLifespan:
        """Wrap one lifespan, or compose several, each as a phase.

        Positional lifespans are named after ``__name__``, keyword ones by key.
        Without ``instrument()`` or the middleware no endpoint is served: use
        ``watch.instrument(app)`` on the app afterwards to add them.
        """
        components = [
            (name_of(ls), as_factory(ls, f"lifespan #{i + 1}")) for i, ls in enumerate(lifespans)
        ]
        components += [(key, as_factory(ls, f"lifespan {key!r}")) for key, ls in named.items()]
        return WatchedLifespan(self._lifecycle, components)

    def instrument(
        self, app: App, *, mounts: bool = True, skip_mounts: Collection[str] = ()
    ) -> App:
        """Wrap a Starlette/FastAPI app's lifespan in place and serve the endpoints.

        Args:
            mounts: Also run the lifespan of each Starlette/FastAPI app mounted
                with ``Mount(path, app=...)`` (Starlette never does), as a
                phase ``mount:<path>`` after the app's own, its state reaching
                its own requests.
            skip_mounts: Mount paths whose lifespans are left alone (a nested
                mount by its full path, e.g. ``/v2/admin``).
        """
        instrument(self, self._lifecycle, app, mounts, skip_mounts)
        return app

    # -- health -------------------------------------------------------------

    @property
    def checks(self) -> dict[str, HealthCheck]:
        """The registered health checks by name (a copy)."""
        return dict(self._health.checks)

    def add_check(
        self,
        name: str,
        func: Callable[[], Any],
        *,
        timeout: float = 1.0,
        probes: tuple[Probe, ...] = ("readiness",),
        critical: bool = True,
        interval: float | None = None,
    ) -> HealthCheck:
        """Register a health check: async or sync, raising or returning False when down.

        It runs on each probe request under ``timeout`` (concurrent requests
        share one run) or, with ``interval=``, in the background while the app
        serves, and probes read its last result. A failing non-critical check
        makes the probe answer ``warn`` (200) instead of 503.
        """
        return self._health.add_check(
            name, func, timeout=timeout, probes=probes, critical=critical, interval=interval
        )

    def check(
        self,
        name: str,
        *,
        timeout: float = 1.0,
        probes: tuple[Probe, ...] = ("readiness",),
        critical: bool = True,
        interval: float | None = None,
    ) -> Callable[[F], F]:
        """``@watch.check("postgres", timeout=1.0)``: ``add_check`` as a decorator."""
        if callable(name):
            raise TypeError(
                f"@watch.check needs a name, e.g. @watch.check('postgres'); got {name!r}"
            )

        def decorate(func: F) -> F:
            self.add_check(
                name, func, timeout=timeout, probes=probes, critical=critical, interval=interval
            )
            return func

        return decorate

    async def run_check(self, name: str) -> CheckResult:
        """Run one check now (or join its run in flight) and return the result."""
        try:
            runner = self._health.runners[name]
        except KeyError:
            raise KeyError(
                f"no health check named {name!r}; registered: {sorted(self._health.checks)}"
            ) from None
        return await runner.run()

    def supervise(self, task: Any, *, name: str | None = None) -> asyncio.Task[Any]:
        """Watch a long-running task: if it ends before shutdown, ``/livez`` fails.

        Takes an ``asyncio.Task`` (or a coroutine, made into one) and returns
        the task; ``name`` defaults to the task's name. The task stays yours:
        lifewatch never cancels it.
        """
        return self._health.supervise(task, name)

    # -- taking the instance out of rotation by hand ---------------------------

    def refuse_traffic(self, reason: str) -> None:
        """Fail readiness with ``reason`` (shown by ``/readyz?verbose``), e.g. for maintenance.

        The state becomes ``draining`` (logged and counted as any state
        change); the app goes on serving what still comes. Spring's
        ``REFUSING_TRAFFIC``. ``accept_traffic()`` undoes it.
        """
        validate_name(reason, "reason")
        self._lifecycle.refuse_traffic(reason)

    def accept_traffic(self) -> None:
        """Undo ``refuse_traffic``: readiness follows the lifecycle again."""
        self._lifecycle.accept_traffic()

    # -- background phases --------------------------------------------------

    def background(
        self,
        name: str,
        func: Callable[[], Awaitable[Any]],
        *,
        timeout: float | None = None,
        critical: bool = True,
    ) -> asyncio.Task[None]:
        """Run ``func`` as a startup phase while the server already serves.

        ``/startupz`` passes at once, ``/readyz`` only when it is done. A
        critical failure leaves the instance not ready (state ``failed``).
        """
        validate_name(name)
        validate_seconds(timeout)
        validate_bool(critical, "critical")
        if not callable(func) or not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"watch.background({name!r}, ...) takes an async function with no "
                f"arguments; got {func!r}"
            )
        lc = self._lifecycle
        phase = Phase(lc, name, timeout=timeout, critical=critical, background=True)
        return lc.start_background(name, phase, func)


def _endpoints(
    o: Options, health: Health, lifecycle: Lifecycle, timeline: Callable[[], Timeline]
) -> tuple[dict[str, ASGIApp], dict[str, ASGIApp]]:
    """Path -> ASGI app: on the app's port, and on the ops listener's."""
    app: dict[str, ASGIApp] = {}
    ops: dict[str, ASGIApp] = {}
    if o.timeline_path is not None:
        ops.update(_timeline_routes(timeline, o.timeline_path))
        if not o.ops_only:
            app.update(_timeline_routes(timeline, o.timeline_path))
    if o.metrics_path is not None:
        # Inline on the ops listener: its own thread, off the app's event loop.
        ops[o.metrics_path] = MetricsEndpoint(o.registry, inline=True, notify=lifecycle.notify)
        if not o.ops_only:
            app[o.metrics_path] = MetricsEndpoint(o.registry, notify=lifecycle.notify)
    probes: dict[Probe, str | None] = {
        "liveness": o.livez_path,
        "readiness": o.readyz_path,
        "startup": o.startupz_path,
    }
    ProbeRoutes((app, ops), health, probes, service=o.service, expose_details=o.expose_details)
    return app, ops


def _drain_and_push(
    o: Options, lifecycle: Lifecycle, log: Any, metrics: Metrics, ops: OpsListener | None
) -> tuple[Sink, ...]:
    """The sinks after the observers: the drain, the ops listener, the
    Pushgateway, then the user's own."""
    drainer = Drainer(lifecycle, o.drain_delay)
    sinks: list[Sink] = [drainer]
    if ops is not None:
        sinks.append(ops)
    if o.drain_delay > 0:
        # python -m lifewatch drain (preStop) reaches every worker through a
        # directory private to the app's user; no HTTP request drains.
        sinks.append(
            DrainChannel(
                lifecycle, o.service, o.drain_delay, drainer.request, drainer.requested_left
            )
        )
    if o.pushgateway is not None:
        from ._pushgateway import PushgatewaySink

        sinks.append(PushgatewaySink(o.pushgateway, metrics, o.service, log))
    return (*sinks, *o.sinks)


class _LazyTimeline:
    """A timeline endpoint whose module loads on its first request: served by
    default, it must not cost every app's start the page's import (about 5 ms)."""

    def __init__(self, source: Callable[[], Any], fmt: Literal["auto", "json"]) -> None:
        self.source = source
        self.fmt: Literal["auto", "json"] = fmt
        self.endpoint: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.endpoint is None:
            from ._waterfall import TimelineEndpoint

            self.endpoint = TimelineEndpoint(self.source, self.fmt)
        await self.endpoint(scope, receive, send)


def _timeline_routes(source: Callable[[], Any], path: str) -> dict[str, ASGIApp]:
    """``path`` (HTML, or JSON by ``Accept``) and ``path.json`` (always JSON)."""
    return {path: _LazyTimeline(source, "auto"), f"{path}.json": _LazyTimeline(source, "json")}
