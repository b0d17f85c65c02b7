"""Spans: a root per startup/shutdown, a child per phase."""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Status, StatusCode, TracerProvider

from ._build import OTEL_REVISION, OTEL_VERSION, BuildInfo
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink

_KEY = "otel"
_CTX = "otel_context"
_TOKEN = "otel_token"


class TracingSink(Sink):
    """Opens a span per run and per phase; never keeps one open while serving."""

    def __init__(
        self,
        service: str | None,
        tracer_provider: TracerProvider | None,
        build: BuildInfo | None = None,
    ) -> None:
        self._service = service
        self._build = build or BuildInfo()
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        # Per event: the attributes every span shares, made at its first span.
        self._base: dict[str, dict[str, Any]] = {}

    def use(self, provider: TracerProvider | None) -> TracerProvider | None:
        """Send the spans to ``provider`` from now on; returns the one used before."""
        previous, self._provider, self._tracer = self._provider, provider, None
        self._base = {}
        return previous

    @property
    def tracer(self) -> trace.Tracer:
        # Resolved late: the user may configure the global provider after
        # constructing Lifewatch, as long as it is before startup.
        if self._tracer is None:
            from ._version import __version__

            self._tracer = trace.get_tracer(
                "lifewatch", __version__, tracer_provider=self._provider
            )
        return self._tracer

    def _attributes(self, event: str) -> dict[str, Any]:
        """The attributes of every span (a new dict); version and revision (resource
        attributes, but the resource is the user's) where the provider's has none."""
        if event not in self._base:
            attributes: dict[str, Any] = {"lifespan.event": event}
            if self._service:
                attributes["service.name"] = self._service
            provider = self._provider or trace.get_tracer_provider()
            has = getattr(getattr(provider, "resource", None), "attributes", None) or {}
            if self._build.version and OTEL_VERSION not in has:
                attributes[OTEL_VERSION] = self._build.version
            if self._build.revision and OTEL_REVISION not in has:
                attributes[OTEL_REVISION] = self._build.revision
            self._base[event] = attributes
        return dict(self._base[event])

    def run_begin(self, run: RunRecord) -> None:
        links = []
        if run.link is not None and _KEY in run.link.sink_data:
            links.append(Link(run.link.sink_data[_KEY].get_span_context()))
        span = self.tracer.start_span(
            f"lifespan.{run.event}",
            context=otel_context.Context(),  # a new trace, never a child of a request
            attributes=self._attributes(run.event),
            links=links,
        )
        run.sink_data[_KEY] = span
        # Kept: every phase of the run starts its span in it.
        run.sink_data[_CTX] = trace.set_span_in_context(span)
        ctx = span.get_span_context()
        run.trace_id, run.span_id = ctx.trace_id, ctx.span_id

    def run_end(self, run: RunRecord) -> None:
        span: Span = run.sink_data[_KEY]
        span.set_attribute("lifespan.outcome", run.outcome or "ok")
        if run.outcome in ("error", "timeout", "cancelled", "signal"):
            what = f"phase {run.failed_phase!r} failed" if run.failed_phase else run.outcome
            span.set_status(Status(StatusCode.ERROR, what))
        span.end()

    def phase_begin(self, phase: PhaseRecord) -> None:
        parent = phase.parent if phase.parent is not None else phase.run
        # Outside any lifespan there is no root: nest under whatever is current.
        parent_ctx = None if parent is None else parent.sink_data.get(_CTX)
        attrs = self._attributes(phase.event)
        attrs["lifespan.phase"] = phase.name
        attrs["lifespan.phase.critical"] = phase.critical
        if phase.timeout is not None:
            attrs["lifespan.phase.timeout"] = phase.timeout
        if phase.background:
            attrs["lifespan.phase.background"] = True
        for key, value in phase.tags.items():
            attrs[f"lifespan.tag.{key}"] = value
        span = self.tracer.start_span(
            f"lifespan.{phase.event} {phase.name}", context=parent_ctx, attributes=attrs
        )
        # Current for the phase's body, so the user's own spans nest under it;
        # kept for its children.
        ctx = trace.set_span_in_context(span)
        phase.sink_data.update({_KEY: span, _CTX: ctx, _TOKEN: otel_context.attach(ctx)})
        span_ctx = span.get_span_context()
        phase.trace_id, phase.span_id = span_ctx.trace_id, span_ctx.span_id

    def phase_end(self, phase: PhaseRecord) -> None:
        # Let go of the span and its context: the run keeps its records, not their spans.
        span: Span = phase.sink_data.pop(_KEY)
        del phase.sink_data[_CTX]
        span.set_attribute("lifespan.outcome", phase.outcome or "ok")
        if phase.error is not None:
            span.record_exception(phase.error)
        if phase.reason is not None:
            span.set_attribute("lifespan.phase.reason", phase.reason)
            span.set_status(
                Status(StatusCode.ERROR, f"phase {phase.name!r} failed: {phase.reason}")
            )
        try:
            otel_context.detach(phase.sink_data.pop(_TOKEN))
        finally:
            span.end()

    def notice(self, notice: Notice) -> None:
        # A notice about a running phase (the watchdog's overrun) is an event on its span.
        phase = notice.phase
        span: Span | None = None if phase is None else phase.sink_data.get(_KEY)
        if span is None or phase is None or phase.end is not None:
            return
        span.add_event(
            notice.event,
            {k: v for k, v in notice.fields.items() if isinstance(v, (str, bool, int, float))},
        )
