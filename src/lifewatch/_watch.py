"""``Lifewatch``: the one object a user configures and wires in."""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from ._checks import CheckResult, HealthCheck, Probe
from ._drain import Drainer
from ._exposition import MetricsEndpoint
from ._health import Health
from ._lifecycle import Lifecycle
from ._lifespan import WatchedLifespan, as_factory, name_of, wrap_router_lifespan
from ._logging import LoggingSink
from ._metrics import Metrics, MetricsSink, metrics_for, validate_namespace
from ._phase import Phase
from ._probes import ProbeRoutes
from ._process import process_start_time
from ._pushgateway import Pushgateway, PushgatewaySink
from ._records import RunRecord
from ._sink import Sink
from ._timeline import Timeline, build_timeline, timeline_routes
from ._types import State
from ._validate import validate_bool, validate_name, validate_path, validate_seconds

App = TypeVar("App")
F = TypeVar("F", bound=Callable[[], Any])


class Lifewatch:
    """Observes one application's lifespan: phases, state, probes, metrics.

    All options are keyword-only and optional. ``registry`` defaults to
    prometheus-client's global one; ``tracer_provider`` to the global
    OpenTelemetry provider. ``shutdown_timeout`` bounds the whole shutdown;
    ``startup_timeout`` (off by default) bounds the whole startup.
    ``timeline_path`` (off by default) serves the timeline there as an HTML
    waterfall (JSON by ``Accept``) and at ``<timeline_path>.json`` as JSON.

    Probes: ``livez_path``, ``readyz_path``, ``startupz_path`` (``None`` to not
    serve one); ``expose_details`` shows check failure reasons on them (off:
    an exception text can hold a password); ``slow_check_threshold`` is when a
    check run logs a warning; ``drain_delay`` is how long the app keeps serving
    after SIGTERM with ``/readyz`` failing (0 turns draining off).
    ``metrics_path`` is where the middleware serves ``/metrics`` (None: not
    served). ``pushgateway`` (a URL or a ``Pushgateway``) pushes the last
    words of a failed startup and of a completed shutdown.
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
        timeline_path: str | None = None,
        livez_path: str | None = "/livez",
        readyz_path: str | None = "/readyz",
        startupz_path: str | None = "/startupz",
        expose_details: bool = False,
        slow_check_threshold: float = 0.5,
        drain_delay: float = 5.0,
        metrics_path: str | None = "/metrics",
        pushgateway: str | Pushgateway | None = None,
    ) -> None:
        if service is not None and not isinstance(service, str):
            raise TypeError(f"service must be a string or None; got {service!r}")
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client.CollectorRegistry or None; got {registry!r}"
            )
        for sink in sinks:
            if not isinstance(sink, Sink):
                raise TypeError(f"sinks must be lifewatch.Sink instances; got {sink!r}")
        self.service = service
        self.namespace = validate_namespace(namespace)
        self.registry = registry
        self.startup_timeout = validate_seconds(startup_timeout, "startup_timeout")
        self.shutdown_timeout = validate_seconds(
            shutdown_timeout, "shutdown_timeout", optional=False
        )
        paths: dict[Probe, str | None] = {
            "liveness": validate_path(livez_path, "livez_path", "/livez"),
            "readiness": validate_path(readyz_path, "readyz_path", "/readyz"),
            "startup": validate_path(startupz_path, "startupz_path", "/startupz"),
        }
        self.expose_details = validate_bool(expose_details, "expose_details")
        self.slow_check_threshold = validate_seconds(
            slow_check_threshold, "slow_check_threshold", optional=False
        )
        self.drain_delay = validate_seconds(
            drain_delay, "drain_delay (0 turns draining off)", optional=False, zero_ok=True
        )
        self.metrics: Metrics = metrics_for(registry, self.namespace)
        self.process_start = process_start_time()
        from ._tracing import TracingSink

        self._instrumented: weakref.WeakSet[Any] = weakref.WeakSet()
        """Apps wrapped by ``instrument``: rewrapped at startup (late routers)."""
        self.routes: dict[str, ASGIApp] = {}
        """Path -> ASGI app served by the middleware in front of the user's app."""
        self.timeline_path = validate_path(timeline_path, "timeline_path", "/lifewatch/timeline")
        if self.timeline_path is not None:
            self.routes.update(timeline_routes(self, self.timeline_path))
        self._health = Health(
            None, self.metrics, service=service, slow_check_threshold=self.slow_check_threshold
        )
        self._drainer = Drainer(None, self.drain_delay, service)
        self.metrics_path = validate_path(metrics_path, "metrics_path", "/metrics")
        if self.metrics_path is not None:
            self.routes[self.metrics_path] = MetricsEndpoint(registry)
        self.pushgateway = Pushgateway.coerce(pushgateway)
        extra: tuple[Sink, ...] = ()
        if self.pushgateway is not None:
            extra = (PushgatewaySink(self.pushgateway, self.metrics, service),)
        self._lifecycle = Lifecycle(
            service,
            (
                TracingSink(service, tracer_provider),
                MetricsSink(self.metrics, self.process_start),
                LoggingSink(service),
                self._health,
                self._drainer,
                *extra,
                *sinks,
            ),
        )
        self._health.bind(self._lifecycle)
        self._drainer.bind(self._lifecycle)
        ProbeRoutes(
            self.routes,
            self._health,
            paths,
            service=service,
            expose_details=self.expose_details,
        )

    def __repr__(self) -> str:
        return f"Lifewatch(service={self.service!r}, state={self.state.value!r})"

    # -- what it knows ------------------------------------------------------

    @property
    def state(self) -> State:
        """The current lifecycle state."""
        state = self._lifecycle.state
        assert state is not None
        return state

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
        lc = self._lifecycle
        return build_timeline(self.service, lc.startup, lc.shutdown, self.process_start)

    # -- ways in ------------------------------------------------------------

    def phase(
        self,
        name: str,
        *,
        timeout: float | None = None,
        critical: bool = True,
        tags: dict[str, str] | None = None,
    ) -> Phase:
        """A phase: ``async with watch.phase(...)`` or ``@watch.phase(...)``."""
        return Phase(self._lifecycle, name, timeout=timeout, critical=critical, tags=tags)

    def lifespan(self, *lifespans: Any, **named: Any) -> WatchedLifespan:
        """Wrap one lifespan, or compose several, each as a phase.

        Positional lifespans are named after ``__name__``, keyword ones by key.
        """
        components = [
            (name_of(ls), as_factory(ls, f"lifespan #{i + 1}")) for i, ls in enumerate(lifespans)
        ]
        components += [(key, as_factory(ls, f"lifespan {key!r}")) for key, ls in named.items()]
        return WatchedLifespan(self, components)

    def instrument(self, app: App) -> App:
        """Wrap a Starlette/FastAPI app's lifespan in place and serve the endpoints."""
        from starlette.applications import Starlette

        if not isinstance(app, Starlette):
            raise TypeError(
                "instrument() takes a Starlette or FastAPI application; got "
                f"{app!r}. For any other ASGI app use LifewatchMiddleware(app, watch=watch)."
            )
        wrap_router_lifespan(self, app.router)
        self._instrumented.add(app)
        from ._middleware import LifewatchMiddleware

        if not any(
            m.cls is LifewatchMiddleware  # type: ignore[comparison-overlap]
            and m.kwargs.get("watch") is self
            for m in app.user_middleware
        ):
            app.add_middleware(LifewatchMiddleware, watch=self)
        return app

    def _rewrap(self, app: object) -> None:
        """At startup: wrap again what ``instrument`` wrapped, if it changed since."""
        try:
            instrumented = app in self._instrumented
        except TypeError:  # not weak-referenceable: not an app we instrumented
            return
        if instrumented:
            wrap_router_lifespan(self, app.router)  # type: ignore[attr-defined]

    def middleware(self, app: Any) -> Any:
        """``LifewatchMiddleware(app, watch=self)``, for any ASGI app."""
        from ._middleware import LifewatchMiddleware

        return LifewatchMiddleware(app, watch=self)

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
            check = self._health.checks[name]
        except KeyError:
            raise KeyError(
                f"no health check named {name!r}; registered: {sorted(self._health.checks)}"
            ) from None
        return await check.run()

    def supervise(self, task: Any, *, name: str | None = None) -> asyncio.Task[Any]:
        """Watch a long-running task: if it ends before shutdown, ``/livez`` fails.

        Takes an ``asyncio.Task`` (or a coroutine, made into one) and returns
        the task; ``name`` defaults to the task's name. The task stays yours:
        lifewatch never cancels it.
        """
        return self._health.supervise(task, name)

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

        async def run() -> None:
            try:
                async with phase:
                    await func()
            except Exception:
                lc.background_failed = True
                lc.set_state(State.FAILED)

        task = asyncio.get_running_loop().create_task(run(), name=f"lifewatch:{name}")
        lc.background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            lc.background.discard(t)
            lc.maybe_ready()

        task.add_done_callback(done)
        return task

    async def _stop_background(self) -> None:
        tasks = list(self._lifecycle.background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
