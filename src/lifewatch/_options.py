"""The options of a ``Lifewatch``: validated once, then frozen, since every part is
built from them once. To change one, build a new ``Lifewatch``
(``dataclasses.replace(watch.options, ...)`` validates again).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from ._logging import MODES, is_structlog_logger
from ._sink import Sink
from ._validate import (
    validate_address,
    validate_bool,
    validate_namespace,
    validate_path,
    validate_seconds,
)

if TYPE_CHECKING:
    from ._pushgateway import Pushgateway


@dataclass(frozen=True, kw_only=True)
class Options:
    """What a ``Lifewatch`` was built with (its keyword arguments), validated."""

    service: str | None = None
    """The service name, on every log record, span and push."""
    registry: CollectorRegistry | None = None
    """Where the metrics go; prometheus-client's global one when None."""
    namespace: str = "lifespan"
    """The metric name prefix."""
    tracer_provider: TracerProvider | None = None
    """Where the spans go; the global OpenTelemetry provider when None."""
    startup_timeout: float | None = None
    """Bounds the whole startup (None: unbounded)."""
    shutdown_timeout: float = 20.0
    """Bounds the whole shutdown."""
    sinks: tuple[Sink, ...] = ()
    """More ``Sink`` objects, fed every event."""
    timeline_path: str | None = "/lifewatch/timeline"
    """The timeline as an HTML waterfall (JSON by ``Accept``), and as JSON at
    ``<timeline_path>.json``. This and every ``*_path``: None, not served."""
    livez_path: str | None = "/livez"
    """The liveness probe; the next two, the readiness and startup probes."""
    readyz_path: str | None = "/readyz"
    startupz_path: str | None = "/startupz"
    expose_details: bool = False
    """Shows check failure reasons on the probes (an exception text can hold a password)."""
    slow_check_threshold: float = 0.5
    """A check run slower than this logs a warning."""
    drain_delay: float = 5.0
    """How long the app keeps serving after SIGTERM with ``/readyz`` failing (0: no drain)."""
    metrics_path: str | None = "/metrics"
    """Where ``/metrics`` is served."""
    pushgateway: Pushgateway | None = None
    """A URL or a ``Pushgateway`` (kept as one): pushes the last words of a failed
    startup and of a completed shutdown."""
    ops_address: str | None = None
    """``host:port`` of the ops listener (None: off): the probes, ``/metrics`` and
    the timeline on a port of their own, answering even while the app's loop is blocked."""
    ops_only: bool = False
    """Takes ``/metrics`` and the timeline off the app's port; the probes stay on both."""
    logger: Any = "auto"
    """Where lifewatch's records go: ``"auto"`` (structlog if the app configured it,
    else the stdlib logger ``lifewatch``), ``"structlog"``, ``"stdlib"``, a
    ``logging.Logger`` or a structlog logger."""
    version: str | None = None
    """What is running, for ``lifespan_build_info`` and the spans' ``service.version``;
    when None, read from the environment (``APP_VERSION``, ...) or the distribution
    named ``service``. So is ``revision``."""
    revision: str | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: the one way to normalize

        if self.service is not None and not isinstance(self.service, str):
            raise TypeError(f"service must be a string or None; got {self.service!r}")
        if self.registry is not None and not isinstance(self.registry, CollectorRegistry):
            raise TypeError(
                "registry must be a prometheus_client.CollectorRegistry or None; "
                f"got {self.registry!r}"
            )
        for name in ("version", "revision"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise TypeError(
                    f"{name} must be a non-empty string, or None to read it from the "
                    f"environment; got {value!r}"
                )
        validate_namespace(self.namespace)
        put("startup_timeout", validate_seconds(self.startup_timeout, "startup_timeout"))
        for name in ("shutdown_timeout", "slow_check_threshold"):
            put(name, validate_seconds(getattr(self, name), name, optional=False))
        what = "drain_delay (0 turns draining off)"
        put("drain_delay", validate_seconds(self.drain_delay, what, optional=False, zero_ok=True))
        put("sinks", tuple(self.sinks))
        for sink in self.sinks:
            if not isinstance(sink, Sink):
                raise TypeError(f"sinks must be lifewatch.Sink instances; got {sink!r}")
        paths = {
            f.name: str(f.default) for f in dataclasses.fields(self) if f.name.endswith("_path")
        }
        for name, example in paths.items():  # the default is the example the error shows
            validate_path(getattr(self, name), name, example)
        validate_bool(self.expose_details, "expose_details")
        validate_bool(self.ops_only, "ops_only")
        if self.ops_address is not None:
            validate_address(self.ops_address, "ops_address")
        elif self.ops_only:
            raise ValueError(
                "ops_only=True moves /metrics and the timeline to the ops listener, which "
                "needs ops_address (e.g. ops_address='0.0.0.0:9000'); got ops_address=None"
            )
        if self.logger is None:
            put("logger", "auto")
        elif not (
            (isinstance(self.logger, str) and self.logger in MODES)
            or isinstance(self.logger, logging.Logger)
            or (not isinstance(self.logger, str) and is_structlog_logger(self.logger))
        ):
            raise TypeError(
                "logger must be 'auto', 'structlog', 'stdlib', a logging.Logger or a "
                f"structlog logger; got {self.logger!r}"
            )
        if self.pushgateway is not None:
            from ._pushgateway import Pushgateway

            put("pushgateway", Pushgateway.coerce(self.pushgateway))
        served = [getattr(self, name) for name in paths if getattr(self, name) is not None]
        if len(set(served)) != len(served):
            raise ValueError(f"endpoint paths must differ from each other; got {served!r}")
