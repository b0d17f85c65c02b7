"""``Lifewatch``: the one object a user configures and wires in. A facade: it builds
the parts once (the lifecycle, then the sinks and endpoints) and holds no state."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from ._build import resolve_build
from ._drain import Drainer
from ._exposition import MetricsEndpoint
from ._health import Health, serve_probes
from ._lifecycle import Lifecycle
from ._lifespan import WatchedLifespan, as_factory, name_of
from ._logging import EventLog, LoggingSink
from ._metrics import MetricsSink, metrics_for
from ._options import Options
from ._phase import Phase
from ._process import process_start_time
from ._records import RunRecord
from ._sink import Sink
from ._starlette import instrument
from ._tracing import TracingSink
from ._types import Probe, State
from ._validate import validate_name

if TYPE_CHECKING:
    # Imported where used: most apps never load them, and every start imports lifewatch.
    from ._channel import DrainChannel
    from ._checks import CheckResult, HealthCheck
    from ._ops import OpsListener
    from ._pushgateway import Pushgateway
    from ._timeline import Timeline

App = TypeVar("App")
F = TypeVar("F", bound=Callable[[], Any])
P = ParamSpec("P")
T = TypeVar("T")


class Lifewatch:
    """Observes one application's lifespan: phases, state, probes, metrics.

    Every keyword argument is an option, described on ``Options``: validated
    here, once, and read back in one place, ``watch.options``.
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
        process_start = process_start_time()
        self._lifecycle = lc = Lifecycle(
            service=o.service,
            startup_timeout=o.startup_timeout,
            shutdown_timeout=o.shutdown_timeout,
            log=log,
            process_start=process_start,
        )
        self._health = Health(lc)
        # Path -> ASGI app, on the app's port and on the ops listener's.
        self._routes: dict[str, ASGIApp] = {}
        ops_routes: dict[str, ASGIApp] = {}
        served = (ops_routes,) if o.ops_only else (ops_routes, self._routes)
        if o.timeline_path is not None:
            for routes in served:
                routes[o.timeline_path] = _timeline(lambda: self.timeline, "auto")
                routes[f"{o.timeline_path}.json"] = _timeline(lambda: self.timeline, "json")
        if o.metrics_path is not None:
            # Inline on the ops listener: its own thread, off the app's event loop.
            ops_routes[o.metrics_path] = MetricsEndpoint(o.registry, inline=True, notify=lc.notify)
            if not o.ops_only:
                self._routes[o.metrics_path] = MetricsEndpoint(o.registry, notify=lc.notify)
        probes: dict[Probe, str | None] = {
            "liveness": o.livez_path,
            "readiness": o.readyz_path,
            "startup": o.startupz_path,
        }
        serve_probes(
            (self._routes, ops_routes),
            self._health,
            probes,
            service=o.service,
            expose_details=o.expose_details,
        )
        self._ops: OpsListener | None = None
        if o.ops_address is not None:
            from ._ops import OpsListener

            self._ops = OpsListener(lc, o.ops_address, ops_routes)

        build = resolve_build(o.service, o.version, o.revision)
        self._tracing = TracingSink(o.service, o.tracer_provider, build)
        metrics = metrics_for(o.registry, o.namespace)
        drainer = Drainer(lc, o.drain_delay)
        parts: list[Sink] = [
            self._tracing,
            MetricsSink(metrics, process_start, build),
            LoggingSink(log, slow_check_threshold=o.slow_check_threshold),
            self._health,
            drainer,
        ]
        if self._ops is not None:
            parts.append(self._ops)
        if o.drain_delay > 0:
            # python -m lifewatch drain (preStop) reaches every worker through a
            # directory private to the app's user; no HTTP request drains.
            parts.append(_ChannelAtStartup(lc, o.service, drainer))
        if o.pushgateway is not None:
            from ._pushgateway import PushgatewaySink

            parts.append(PushgatewaySink(o.pushgateway, metrics, o.service, log))
        lc.connect((*parts, *o.sinks))

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
        return build_timeline(self._options.service, lc.startup, lc.shutdown, lc.process_start)

    # -- ways in ------------------------------------------------------------

    def phase(
        self,
        name: str,
        *,
        timeout: float | None = None,
        critical: bool = True,
        tags: dict[str, str] | None = None,
    ) -> Phase:
        """A phase: ``async with``/``with watch.phase(...)``, or ``@watch.phase(...)`` on
        a function. At ``timeout`` an async block is cancelled; a block still running
        is reported by the watchdog (``lifespan.phase.overrun``) and ends as ``timeout``."""
        return Phase(self._lifecycle, name, timeout=timeout, critical=critical, tags=tags)

    async def to_thread(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args, **kwargs)`` in a daemon thread of its own: blocking work a phase
        can give up on. Cancelled, it stops waiting and logs ``lifespan.thread.abandoned``
        with the thread's stack; the thread never holds the process's exit, as
        ``asyncio.to_thread``'s workers do. Phases inside nest under the caller's."""
        from ._threads import run_in_daemon_thread

        return await run_in_daemon_thread(self._lifecycle, func, args, kwargs)

    def lifespan(self, *lifespans: Any, **named: Any) -> WatchedLifespan:
        """Wrap one lifespan, or compose several, each as a phase named after its
        ``__name__`` or its key. ``watch.instrument(app)`` adds the endpoints."""
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
                phase ``mount:<path>`` after the app's own.
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
        It runs per probe request under ``timeout`` (concurrent ones share a run) or,
        with ``interval=``, in the background. A failing non-critical one: ``warn`` (200)."""
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
        if name not in self._health.runners:
            raise KeyError(
                f"no health check named {name!r}; registered: {sorted(self._health.checks)}"
            )
        return await self._health.runners[name].run()

    def supervise(self, task: Any, *, name: str | None = None) -> asyncio.Task[Any]:
        """Watch a long-running task (or a coroutine, made one): if it ends before
        shutdown, ``/livez`` fails. The task stays yours: lifewatch never cancels it."""
        return self._health.supervise(task, name)

    # -- taking the instance out of rotation by hand ---------------------------

    def refuse_traffic(self, reason: str) -> None:
        """Fail readiness with ``reason`` (shown by ``/readyz?verbose``), e.g. for
        maintenance: the state becomes ``draining`` while the app goes on serving
        what still comes (Spring's ``REFUSING_TRAFFIC``)."""
        self._lifecycle.readiness.refuse(validate_name(reason, "reason"))

    def accept_traffic(self) -> None:
        """Undo ``refuse_traffic``: readiness follows the lifecycle again."""
        self._lifecycle.readiness.accept()

    # -- background phases --------------------------------------------------

    def background(
        self,
        name: str,
        func: Callable[[], Awaitable[Any]],
        *,
        timeout: float | None = None,
        critical: bool = True,
    ) -> asyncio.Task[None]:
        """Run ``func`` as a startup phase while the server already serves: ``/readyz``
        passes when it is done; a critical failure leaves it not ready (``failed``)."""
        phase = Phase(self._lifecycle, name, timeout=timeout, critical=critical, background=True)
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"watch.background({name!r}, ...) takes an async function with no "
                f"arguments; got {func!r}"
            )
        return self._lifecycle.background.start(name, phase, func)


class _ChannelAtStartup(Sink):
    """Makes the drain channel at the first startup and hands it the events: its
    module loads then, not with every ``import lifewatch``."""

    def __init__(self, lifecycle: Lifecycle, service: str | None, drainer: Drainer) -> None:
        self._args = (lifecycle, service, drainer)
        self.channel: DrainChannel | None = None

    def run_begin(self, run: RunRecord) -> None:
        if self.channel is None:
            from ._channel import DrainChannel

            self.channel = DrainChannel(*self._args)
        self.channel.run_begin(run)

    def run_end(self, run: RunRecord) -> None:
        if self.channel is not None:
            self.channel.run_end(run)

    def state_changed(self, old: State | None, new: State) -> None:
        if self.channel is not None:
            self.channel.state_changed(old, new)


def _timeline(source: Callable[[], Timeline], fmt: Literal["auto", "json"]) -> ASGIApp:
    """The timeline endpoint, its module loaded on the first request: served by
    default, it must not cost every app's start the page's import."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        from ._waterfall import serve_timeline

        await serve_timeline(source, fmt, scope, receive, send)

    return endpoint
