"""Helpers for testing an application that uses lifewatch: ``LifewatchHarness``
keeps a watch's metrics, spans and logs in memory and drives an app's lifespan
through the real ASGI protocol. ``pytest_plugins = ["lifewatch.testing"]`` gives
the ``lifewatch_harness`` fixture. Needs ``opentelemetry-sdk`` (``lifewatch[testing]``)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import Message

from ._lifewatch import Lifewatch
from ._timeline import Timeline
from ._tracing import TracingSink

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from starlette.types import ASGIApp

__all__ = ["LifespanFailed", "LifewatchHarness", "lifewatch_harness"]


class LifespanFailed(Exception):
    """The app answered ``lifespan.<event>.failed``, crashed, or did not answer
    in time. ``message`` is what the server would log."""

    def __init__(self, event: str, message: str) -> None:
        self.event = event
        self.message = message
        super().__init__(f"lifespan {event} failed: {message}")


def _sdk() -> tuple[TracerProvider, InMemorySpanExporter]:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError as exc:  # pragma: no cover - exercised only without the SDK
        raise ModuleNotFoundError(
            "lifewatch.testing needs the OpenTelemetry SDK to capture spans: "
            "pip install opentelemetry-sdk (or 'lifewatch[testing]')"
        ) from exc
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class LifewatchHarness:
    """A ``Lifewatch`` (``harness.watch``) with its spans, metrics and logs in memory.

    ``LifewatchHarness(**options)`` builds a fresh, isolated watch (options go
    to ``Lifewatch``; ``service`` defaults to ``"test"``) for an app factory.
    ``LifewatchHarness(watch)`` adopts an app's existing watch: its spans come
    here while the harness is open; its metrics are read from its own registry
    (by default the global one, so counters carry over from earlier tests).

    Open it as a context manager to capture logs (and an adopted watch's
    spans) for a whole block; ``serving()`` opens it by itself otherwise.
    """

    def __init__(self, watch: Lifewatch | None = None, /, **options: Any) -> None:
        for key in ("registry", "tracer_provider"):
            if key in options:
                raise TypeError(f"LifewatchHarness makes its own {key}; do not pass {key}=")
        if watch is not None and options:
            raise TypeError(
                "LifewatchHarness(watch) adopts an existing watch and takes no Lifewatch "
                f"options; got {sorted(options)}"
            )
        self.tracer_provider, self.exporter = _sdk()
        if watch is None:
            options.setdefault("service", "test")
            self.registry = CollectorRegistry()
            watch = Lifewatch(
                registry=self.registry, tracer_provider=self.tracer_provider, **options
            )
            self._tracing: TracingSink | None = None
        else:
            if not isinstance(watch, Lifewatch):
                raise TypeError(f"watch must be a lifewatch.Lifewatch; got {watch!r}")
            self.registry = watch.options.registry or REGISTRY
            self._tracing = watch._tracing  # the package-internal part
        self.watch = watch
        self._saved_provider: Any = None
        self._batches: list[list[MutableMapping[str, Any]]] = []
        self._capture: AbstractContextManager[list[MutableMapping[str, Any]]] | None = None

    def __repr__(self) -> str:
        return f"LifewatchHarness(watch={self.watch!r})"

    def __enter__(self) -> LifewatchHarness:
        # structlog's own capture_logs puts the app's processors back on exit.
        if self._capture is not None:
            raise RuntimeError("this LifewatchHarness is already capturing logs")
        self._capture = structlog.testing.capture_logs()
        self._batches.append(self._capture.__enter__())
        if self._tracing is not None:  # an adopted watch: its spans come here for now
            self._saved_provider = self._tracing.use(self.tracer_provider)
        return self

    def __exit__(self, *exc_info: object) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.__exit__(None, None, None)
        if self._tracing is not None:
            self._tracing.use(self._saved_provider)
            self._saved_provider = None

    @property
    def logs(self) -> list[MutableMapping[str, Any]]:
        """Every structlog event captured so far (dicts with an ``event`` key)."""
        return [entry for batch in self._batches for entry in batch]

    @asynccontextmanager
    async def serving(
        self, app: ASGIApp, *, startup_timeout: float = 10.0, shutdown_timeout: float = 10.0
    ) -> AsyncIterator[dict[str, Any]]:
        """Start ``app`` through the ASGI lifespan protocol; shut it down on exit.

        Yields the lifespan ``state`` dict (what request handlers see as
        ``request.state``). Raises ``LifespanFailed`` if startup or shutdown
        fails, or takes longer than its timeout (seconds).
        """
        with self if self._capture is None else contextlib.nullcontext():
            state: dict[str, Any] = {}
            scope = {
                "type": "lifespan",
                "asgi": {"version": "3.0", "spec_version": "2.0"},
                "state": state,
            }
            to_app, app_inbox = anyio.create_memory_object_stream[Message](math.inf)
            app_outbox, from_app = anyio.create_memory_object_stream[Message](math.inf)
            crashed: list[Exception] = []
            done = anyio.Event()

            async def run_app() -> None:
                try:
                    await app(scope, app_inbox.receive, app_outbox.send)
                except Exception as exc:
                    crashed.append(exc)
                finally:
                    app_outbox.close()
                    done.set()

            async def step(event: str, seconds: float) -> None:
                await to_app.send({"type": f"lifespan.{event}"})
                try:
                    with anyio.fail_after(seconds):
                        message = await from_app.receive()
                except TimeoutError:
                    raise LifespanFailed(event, f"no answer within {seconds:g}s") from None
                except anyio.EndOfStream:
                    cause = crashed[0] if crashed else None
                    what = f"{type(cause).__name__}: {cause}" if cause else "the app returned"
                    raise LifespanFailed(
                        event, f"the app ended without answering ({what})"
                    ) from cause
                if message["type"] == f"lifespan.{event}.failed":
                    with anyio.move_on_after(1):
                        await done.wait()  # let it finish, so its exception can be chained
                    cause = crashed[0] if crashed else None
                    raise LifespanFailed(event, str(message.get("message", ""))) from cause
                if message["type"] != f"lifespan.{event}.complete":
                    raise LifespanFailed(event, f"unexpected message {message!r}")

            # Failures are raised after the task group, not wrapped in an ExceptionGroup.
            failure: LifespanFailed | None = None
            body_error: BaseException | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_app)
                try:
                    await step("startup", startup_timeout)
                except LifespanFailed as exc:
                    failure = exc
                else:
                    try:
                        yield state
                    except BaseException as exc:  # re-raised below, after the shutdown
                        body_error = exc
                    # Always shut down, as a server would, even when the body failed.
                    with anyio.CancelScope(shield=True):
                        try:
                            await step("shutdown", shutdown_timeout)
                            with anyio.move_on_after(shutdown_timeout):
                                await done.wait()
                        except LifespanFailed as exc:
                            failure = exc
                tg.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
            if failure is not None:
                raise failure

    async def run(
        self, app: ASGIApp, *, startup_timeout: float = 10.0, shutdown_timeout: float = 10.0
    ) -> None:
        """Run ``app``'s startup then its shutdown, as a server would."""
        async with self.serving(
            app, startup_timeout=startup_timeout, shutdown_timeout=shutdown_timeout
        ):
            pass

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        """Finished spans, in the order they ended."""
        return tuple(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span with this name, e.g. ``"lifespan.startup db"``."""
        found = [s for s in self.spans if s.name == name]
        if len(found) != 1:
            names = sorted({s.name for s in self.spans})
            raise AssertionError(f"{len(found)} spans named {name!r}; spans: {names}")
        return found[0]

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample's value, e.g. ``metric("lifespan_phase_duration_seconds",
        phase="db", event="startup")``; ``None`` when there is none. The labels
        may be some of the sample's, as long as they pick one."""
        return sample_value(self.registry, name, labels)

    def events(self, event: str | None = None, **fields: Any) -> list[MutableMapping[str, Any]]:
        """Captured log events, filtered by ``event`` name and field values."""
        return [
            e
            for e in self.logs
            if (event is None or e.get("event") == event)
            and all(k in e and e[k] == v for k, v in fields.items())
        ]

    @property
    def timeline(self) -> Timeline:
        """``watch.timeline``: the last startup and shutdown, phase by phase."""
        return self.watch.timeline


with contextlib.suppress(ImportError):
    import pytest

    @pytest.fixture
    def lifewatch_harness() -> Iterator[LifewatchHarness]:
        """A fresh ``LifewatchHarness``, capturing log events for the whole test."""
        with LifewatchHarness() as harness:
            yield harness


def sample_value(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    """The value of the one sample of ``name`` carrying ``labels`` (an exact match first)."""
    exact = registry.get_sample_value(name, labels)
    if exact is not None:
        return exact
    found = [
        s
        for family in registry.collect()
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    if len(found) > 1:
        raise AssertionError(
            f"{len(found)} samples of {name} carry {labels}: {[s.labels for s in found]}"
        )
    return found[0].value if found else None
