"""``Lifewatch``: the one object a user configures and wires in.

A thin facade: it validates the options once, builds the parts once (the
lifecycle first, then the sinks and the endpoints around it) and hands the
ways in what they need. It holds no state of its own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from ._build import BuildInfo, resolve_build
from ._channel import DrainChannel
from ._checks import CheckResult, HealthCheck, Probe
from ._drain import Drainer
from ._exposition import MetricsEndpoint
from ._health import Health
from ._lifecycle import Lifecycle
from ._lifespan import WatchedLifespan, as_factory, name_of
from ._logging import LoggingSink
from ._logging import logger as event_log
from ._metrics import Metrics, MetricsSink, metrics_for
from ._middleware import LifewatchMiddleware
from ._ops import OpsListener
from ._options import Options
from ._phase import Phase
from ._probes import ProbeRoutes
from ._process import process_start_time
from ._records import RunRecord
from ._sink import Sink
from ._starlette import Mounts, instrument
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

    Args:
        service: The service name, on every log record, span and push.
        registry: Where the metrics go; prometheus-client's global one by default.
        namespace: The metric name prefix (``lifespan``).
        tracer_provider: Where the spans go; the global OpenTelemetry provider by default.
        startup_timeout: Bounds the whole startup (off by default).
        shutdown_timeout: Bounds the whole shutdown (20 s).
        sinks: More ``Sink`` objects, fed every event.
        timeline_path: Serves the timeline there as an HTML waterfall (JSON by
            ``Accept``) and at ``<timeline_path>.json`` as JSON
            (``/lifewatch/timeline``; ``None``: not served).
        livez_path, readyz_path, startupz_path: The probe paths (``None``: not served).
        expose_details: Shows check failure reasons on the probes (off: an
            exception text can hold a password).
        slow_check_threshold: A check run slower than this logs a warning (0.5 s).
        drain_delay: How long the app keeps serving after SIGTERM with
            ``/readyz`` failing (5 s; 0 turns draining off).
        metrics_path: Where ``/metrics`` is served (``None``: not served).
        pushgateway: A URL or a ``Pushgateway``: pushes the last words of a
            failed startup and of a completed shutdown.
        ops_address: ``host:port`` of the ops listener (off by default): the
            probes, ``/metrics`` and the timeline on a port of their own,
            answering from the first lifespan event on, even while the app's
            event loop is blocked.
        ops_only: Takes ``/metrics`` and the timeline off the app's port (needs
            ``ops_address``); the probes stay on both.
        logger: Where lifewatch's records go. ``"auto"`` (the default):
            through structlog if the app configured structlog, else through
            the stdlib logger ``lifewatch`` (the app's handlers and format
            apply). ``"structlog"``, ``"stdlib"``, a ``logging.Logger`` or a
            structlog logger choose.
        version, revision: What is running, for ``lifespan_build_info`` and the
            spans' ``service.version``; read from the environment
            (``APP_VERSION``, ``GIT_COMMIT``, ...) or the distribution named
            ``service`` when not given.

    The options are validated here, once, and never change (``watch.options``).
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
        options = Options(
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
            pushgateway=pushgateway,  # type: ignore[arg-type] # coerced by Options
            ops_address=ops_address,
            ops_only=ops_only,
            logger=logger,
            version=version,
            revision=revision,
        )
        self._options = options
        self._build = build = resolve_build(options.service, options.version, options.revision)
        log = event_log(options.service, options.logger)
        self._process_start = process_start_time()
        self._lifecycle = lifecycle = Lifecycle(
            service=options.service,
            startup_timeout=options.startup_timeout,
            shutdown_timeout=options.shutdown_timeout,
            log=log,
            process_start=self._process_start,
        )
        self._metrics = metrics = metrics_for(options.registry, options.namespace)
        self._health = Health(lifecycle)
        self._tracing = TracingSink(options.service, options.tracer_provider, build)
        pushed: tuple[Sink, ...] = ()
        if options.pushgateway is not None:
            from ._pushgateway import PushgatewaySink

            pushed = (PushgatewaySink(options.pushgateway, metrics, options.service, log),)
        self._drainer = drainer = Drainer(lifecycle, options.drain_delay)
        self._routes: dict[str, ASGIApp] = {}
        """Path -> ASGI app served by the middleware in front of the user's app."""
        self._ops_routes: dict[str, ASGIApp] = {}
        """Path -> ASGI app served by the ops listener."""
        self._ops: OpsListener | None = None
        listeners: tuple[Sink, ...] = ()
        if options.ops_address is not None:
            self._ops = OpsListener(lifecycle, options.ops_address, self._ops_routes)
            listeners = (self._ops,)
        # python -m lifewatch drain (preStop) reaches every worker through a
        # directory private to the app's user; no HTTP request drains.
        channel: tuple[Sink, ...] = ()
        if options.drain_delay > 0:
            channel = (
                DrainChannel(
                    lifecycle,
                    options.service,
                    options.drain_delay,
                    drainer.request,
                    drainer.requested_left,
                ),
            )
        lifecycle.connect(
            (
                self._tracing,
                MetricsSink(metrics, self._process_start, build.labels()),
                LoggingSink(log, slow_check_threshold=options.slow_check_threshold),
                self._health,
                drainer,
                *listeners,
                *channel,
                *pushed,
                *options.sinks,
            )
        )
        on_app = not options.ops_only
        if options.timeline_path is not None:
            timeline = _timeline_routes(lambda: self.timeline, options.timeline_path)
            self._ops_routes.update(timeline)
            if on_app:
                self._routes.update(timeline)
        if options.metrics_path is not None:
            self._ops_routes[options.metrics_path] = MetricsEndpoint(
                options.registry, inline=True, notify=lifecycle.notify
            )
            if on_app:
                self._routes[options.metrics_path] = MetricsEndpoint(
                    options.registry, notify=lifecycle.notify
                )
        ProbeRoutes(
            (self._routes, self._ops_routes),
            self._health,
            {
                "liveness": options.livez_path,
                "readiness": options.readyz_path,
                "startup": options.startupz_path,
            },
            service=options.service,
            expose_details=options.expose_details,
        )

    def __repr__(self) -> str:
        return f"Lifewatch(service={self.service!r}, state={self.state.value!r})"

    # -- what it was built with (read-only) -----------------------------------

    @property
    def options(self) -> Options:
        """Every option, validated; frozen."""
        return self._options

    @property
    def service(self) -> str | None:
        return self._options.service

    @property
    def build(self) -> BuildInfo:
        """Service, version and revision as exported (``lifespan_build_info``)."""
        return self._build

    @property
    def namespace(self) -> str:
        return self._options.namespace

    @property
    def registry(self) -> CollectorRegistry | None:
        return self._options.registry

    @property
    def startup_timeout(self) -> float | None:
        return self._options.startup_timeout

    @property
    def shutdown_timeout(self) -> float:
        return self._options.shutdown_timeout

    @property
    def expose_details(self) -> bool:
        return self._options.expose_details

    @property
    def slow_check_threshold(self) -> float:
        return self._options.slow_check_threshold

    @property
    def drain_delay(self) -> float:
        return self._options.drain_delay

    @property
    def timeline_path(self) -> str | None:
        return self._options.timeline_path

    @property
    def metrics_path(self) -> str | None:
        return self._options.metrics_path

    @property
    def pushgateway(self) -> Pushgateway | None:
        return self._options.pushgateway

    @property
    def ops_address(self) -> str | None:
        return self._options.ops_address

    @property
    def ops_port(self) -> int | None:
        """The ops listener's port while it listens (the one picked for port 0), else None."""
        return None if self._ops is None else self._ops.port

    @property
    def metrics(self) -> Metrics:
        """The metric families (shared by every watch on the same registry and namespace)."""
        return self._metrics

    @property
    def process_start(self) -> float:
        """Wall-clock start of the process: where time to ready counts from."""
        return self._process_start

    @property
    def routes(self) -> Mapping[str, ASGIApp]:
        """Path -> ASGI app: the endpoints the middleware serves."""
        return self._routes

    @property
    def lifecycle(self) -> Lifecycle:
        """The event flow (runs, phases, state): what the ways in and sinks use."""
        return self._lifecycle

    @property
    def tracing(self) -> TracingSink:
        """The tracing sink (``lifewatch.testing`` points it at its own provider)."""
        return self._tracing

    # -- what it knows ------------------------------------------------------

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
        return build_timeline(self.service, lc.startup, lc.shutdown, self._process_start)

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
        instrument(self, self._lifecycle, app, Mounts.of(mounts, skip_mounts))
        return app

    def middleware(self, app: Any, *, strict: bool = False) -> LifewatchMiddleware:
        """``LifewatchMiddleware(app, watch=self)``, for any ASGI app."""
        return LifewatchMiddleware(app, watch=self, strict=strict)

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
