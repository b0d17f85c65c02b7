"""What is running: version and revision from the options, the environment, the metadata."""

from __future__ import annotations

import importlib.metadata

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch
from lifewatch._build import BuildInfo, resolve_build
from tests.conftest import sample


def test_given_values_win_over_the_environment() -> None:
    env = {"APP_VERSION": "9", "GIT_COMMIT": "fff"}
    assert resolve_build("orders", "1.2.0", "abc123", env) == BuildInfo("orders", "1.2.0", "abc123")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("", "")),
        ({"APP_VERSION": "2.0", "GIT_COMMIT": "c0ffee"}, ("2.0", "c0ffee")),
        ({"SERVICE_VERSION": "3", "SOURCE_COMMIT": "d00d"}, ("3", "d00d")),
        ({"GIT_SHA": "a", "COMMIT_SHA": "b"}, ("", "a")),
        ({"SOURCE_VERSION": "heroku"}, ("", "heroku")),
        (
            {
                "OTEL_RESOURCE_ATTRIBUTES": "service.version=4.1, vcs.ref.head.revision=beef,x=y",
                "APP_VERSION": "ignored",
            },
            ("4.1", "beef"),
        ),
        ({"APP_VERSION": "  "}, ("", "")),
    ],
)
def test_environment_variables(env: dict[str, str], expected: tuple[str, str]) -> None:
    build = resolve_build("no-such-distribution-here", None, None, env)
    assert (build.version, build.revision) == expected


def test_the_distribution_named_like_the_service_gives_the_version() -> None:
    build = resolve_build("prometheus_client", None, None, {})
    assert build.version == importlib.metadata.version("prometheus_client")
    assert resolve_build(None, None, None, {}) == BuildInfo()


@pytest.mark.parametrize("bad", ["", "  ", 3])
def test_version_and_revision_are_validated(bad: object) -> None:
    with pytest.raises(TypeError, match="version must be a non-empty string"):
        Lifewatch(version=bad, registry=CollectorRegistry())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="revision must be a non-empty string"):
        Lifewatch(revision=bad, registry=CollectorRegistry())  # type: ignore[arg-type]


def test_build_info_is_exported_from_the_start(registry: CollectorRegistry) -> None:
    Lifewatch(service="orders", version="1.2.0", revision="abc", registry=registry)
    labels = {"service": "orders", "version": "1.2.0", "revision": "abc"}
    assert sample(registry, "lifespan_build_info", **labels) == 1


def test_series_with_no_value_yet_are_absent_not_zero(registry: CollectorRegistry) -> None:
    watch = Lifewatch(registry=registry)
    text = generate_latest(registry).decode()
    for name in (
        "lifespan_startup_duration_seconds",
        "lifespan_shutdown_duration_seconds",
        "lifespan_time_to_ready_seconds",
    ):
        assert f"\n{name} " not in text, name
    with TestClient(watch.instrument(Starlette())):
        assert sample(registry, "lifespan_startup_duration_seconds") is not None
        assert sample(registry, "lifespan_time_to_ready_seconds") is not None
        assert sample(registry, "lifespan_shutdown_duration_seconds") is None
    assert sample(registry, "lifespan_shutdown_duration_seconds") is not None


def _spans(resource: Resource) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_spans_carry_version_and_revision_where_the_resource_has_none() -> None:
    provider, exporter = _spans(Resource.create({"service.name": "orders"}))
    watch = Lifewatch(
        version="1.2.0", revision="abc", registry=CollectorRegistry(), tracer_provider=provider
    )
    with TestClient(watch.instrument(Starlette())):
        pass
    for span in exporter.get_finished_spans():
        assert span.attributes is not None
        assert span.attributes["service.version"] == "1.2.0"
        assert span.attributes["vcs.ref.head.revision"] == "abc"


def test_the_resource_of_the_users_provider_wins() -> None:
    provider, exporter = _spans(Resource.create({"service.version": "from-resource"}))
    watch = Lifewatch(
        version="1.2.0", revision="abc", registry=CollectorRegistry(), tracer_provider=provider
    )
    with TestClient(watch.instrument(Starlette())):
        pass
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        assert span.attributes is not None
        assert "service.version" not in span.attributes
        assert span.attributes["vcs.ref.head.revision"] == "abc"
        assert span.resource.attributes["service.version"] == "from-resource"
