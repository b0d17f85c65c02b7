"""Shared fixtures: real SDK tracer, fresh registry, captured structlog events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from lifewatch import Lifewatch

# The lifewatch_harness fixture, exactly as users get it (README "Testing your app").
pytest_plugins = ["lifewatch.testing", "pytester"]


class Spans:
    """The OpenTelemetry SDK with an in-memory exporter, per test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> ReadableSpan:
        matches = [s for s in self.finished() if s.name == name]
        assert len(matches) == 1, (name, [s.name for s in self.finished()])
        return matches[0]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def spans() -> Spans:
    return Spans()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def watch(registry: CollectorRegistry, spans: Spans) -> Lifewatch:
    return Lifewatch(service="test", registry=registry, tracer_provider=spans.provider)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The one sample with these labels (some of its labels, e.g. without ``parent``)."""
    from lifewatch.testing import sample_value  # here: pytest rewrites the plugin's asserts

    return sample_value(registry, name, labels)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every ``async def`` test on asyncio through anyio's pytest plugin."""
    import inspect

    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture(autouse=True)
def _no_build_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI's own ``GIT_COMMIT`` (Jenkins) or ``SOURCE_VERSION`` (Heroku) must not
    become the version and revision of every Lifewatch the tests make."""
    from lifewatch._build import REVISION_VARIABLES, VERSION_VARIABLES

    for name in (*VERSION_VARIABLES, *REVISION_VARIABLES, "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
