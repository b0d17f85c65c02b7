"""Prometheus metrics, on the registry the user chose, written by one sink."""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._errors import add_note
from ._records import PhaseRecord, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._checks import CheckResult, HealthCheck
    from ._supervise import Supervised

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class UnsetGauge(Collector):
    """A gauge without labels that has no sample until it is first set: an
    unlabelled ``Gauge`` reads 0 from its registration (an instant shutdown,
    before any); under ``PROMETHEUS_MULTIPROC_DIR`` its file entry too waits."""

    def __init__(
        self, name: str, documentation: str, *, multiprocess_mode: str, registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self.multiprocess_mode = multiprocess_mode
        self._gauge: Gauge | None = None
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, value: float) -> None:
        with self._lock:
            if self._gauge is None:
                self._gauge = Gauge(
                    self.name,
                    self.documentation,
                    multiprocess_mode=self.multiprocess_mode,  # type: ignore[arg-type]
                    registry=None,
                )
        self._gauge.set(value)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        gauge = self._gauge
        return self.describe() if gauge is None else gauge.collect()


class Metrics:
    """The lifewatch metric families of one registry and namespace, shared by
    every ``Lifewatch`` on them (so two do not collide on registration).

    Multiprocess modes: per-worker gauges are ``liveall`` (one series per live
    worker, removed by ``mark_process_dead``: a dead worker never claims to be
    ready); ``shutdown_duration`` is ``mostrecent``, as only a worker going
    away has one. Counters and histograms add up every worker, as rates need.
    """

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, doc, labels, multiprocess_mode="liveall", registry=registry)

        def unset(name: str, doc: str, mode: str = "liveall") -> UnsetGauge:
            return UnsetGauge(name, doc, multiprocess_mode=mode, registry=registry)

        ns = namespace
        self.phase_duration = gauge(
            f"{ns}_phase_duration_seconds",
            "Duration of the last run of a lifespan phase (parent: the enclosing phase, "
            "empty at top level).",
            ("phase", "parent", "event"),
        )
        self.phase_failures = Counter(
            f"{ns}_phase_failures",
            "Failed runs of a lifespan phase.",
            ("phase", "event", "reason"),
            registry=registry,
        )
        self.startup_duration = unset(
            f"{ns}_startup_duration_seconds", "Duration of the whole lifespan startup."
        )
        self.shutdown_duration = unset(
            f"{ns}_shutdown_duration_seconds",
            "Duration of the whole lifespan shutdown.",
            mode="mostrecent",
        )
        self.boot_duration = unset(
            f"{ns}_boot_duration_seconds",
            "Seconds from process start to the first lifespan event (imports, app construction).",
        )
        self.time_to_ready = unset(
            f"{ns}_time_to_ready_seconds", "Seconds from process start (imports included) to ready."
        )
        self.state = gauge(
            f"{ns}_state", "Lifecycle state: 1 for the current one, 0 for the others.", ("state",)
        )
        self.check_status = gauge(
            f"{ns}_check_status", "Health check status: 1 passing, 0 failing.", ("check", "probe")
        )
        self.check_duration = Histogram(
            f"{ns}_check_duration_seconds",
            "Health check latency.",
            ("check",),
            buckets=CHECK_BUCKETS,
            registry=registry,
        )
        self.check_failures = Counter(
            f"{ns}_check_failures",
            "Failed health check runs.",
            ("check", "reason"),
            registry=registry,
        )
        self.build_info = gauge(
            f"{ns}_build_info",
            "What is running: 1 per service, version and revision.",
            ("service", "version", "revision"),
        )

    def all(self) -> tuple[Gauge | Counter | Histogram | UnsetGauge, ...]:
        """Every family (each attribute is one), e.g. to push exactly these."""
        return tuple(vars(self).values())


_banks: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Metrics]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry | None, namespace: str) -> Metrics:
    """The (shared) metric families for this registry and namespace."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        by_ns = _banks.setdefault(registry, {})
        if namespace not in by_ns:
            directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            try:
                if directory:
                    # prometheus-client opens some per-process files only at
                    # the first write: try the directory now, so Lifewatch() fails.
                    tempfile.TemporaryFile(dir=directory).close()
                by_ns[namespace] = Metrics(registry, namespace)
            except OSError as exc:
                if directory:  # say which setting is wrong, keeping the error's type
                    add_note(
                        exc,
                        f"lifewatch: PROMETHEUS_MULTIPROC_DIR={directory!r} must be an "
                        "existing, writable directory before the app starts "
                        "(create it, or unset the variable for a single process)",
                    )
                raise
        return by_ns[namespace]


class MetricsSink(Sink):
    """The only writer of lifewatch's metrics: runs, phases, state, checks, supervised tasks.
    A write that fails (an unusable multiprocess dir) is isolated like any sink's."""

    def __init__(
        self, metrics: Metrics, process_start: float, build: tuple[str, str, str] | None = None
    ) -> None:
        self.metrics = metrics
        self._process_start = process_start
        # Each check's duration series, looked up once: checks run on every probe.
        self._check_duration = functools.cache(metrics.check_duration.labels)
        if build is not None:  # known from the start: scraped during startup too
            metrics.build_info.labels(*build).set(1)

    def run_begin(self, run: RunRecord) -> None:
        if run.boot is not None:
            self.metrics.boot_duration.set(run.boot)

    def run_end(self, run: RunRecord) -> None:
        metrics = self.metrics
        gauge = metrics.startup_duration if run.event == "startup" else metrics.shutdown_duration
        gauge.set(run.duration or 0.0)

    def phase_end(self, phase: PhaseRecord) -> None:
        parent = "" if phase.parent is None else phase.parent.name
        self.metrics.phase_duration.labels(phase.name, parent, phase.event).set(
            phase.duration or 0.0
        )
        if phase.reason is not None:
            self.metrics.phase_failures.labels(phase.name, phase.event, phase.reason).inc()

    def state_changed(self, old: State | None, new: State) -> None:
        for state in State:
            self.metrics.state.labels(state.value).set(1 if state is new else 0)
        if new is State.READY:
            self.metrics.time_to_ready.set(time.time() - self._process_start)

    def check_result(
        self, check: HealthCheck, result: CheckResult, previous: CheckResult | None
    ) -> None:
        self._check_duration(check.name).observe(result.duration)
        if previous is None or previous.ok != result.ok:
            for probe in check.probes:
                self.metrics.check_status.labels(check.name, probe).set(1 if result.ok else 0)
        if not result.ok:
            self.metrics.check_failures.labels(check.name, result.reason or "error").inc()

    def task_started(self, task: Supervised) -> None:
        self.metrics.check_status.labels(task.entry, "liveness").set(1)

    def task_died(self, task: Supervised) -> None:
        self.metrics.check_status.labels(task.entry, "liveness").set(0)
        self.metrics.check_failures.labels(task.entry, task.reason or "error").inc()
