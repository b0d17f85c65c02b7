"""Shared fixtures: real SDK tracer, fresh registry, captured structlog events."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from lifewatch import Lifewatch

# opentelemetry-api before 1.25 (the floor is 1.24) finds its context through
# package metadata on first use, reading the disk: done here, at import, as an
# app's tracing setup does before it serves, not inside a test's event loop.
otel_context.get_current()
# httpx imports httpcore (and httpcore trio, where installed) on a client's
# first request: a test's first request must not read modules from disk on
# the loop either.
importlib.import_module("httpcore")

# The lifewatch_harness fixture, exactly as users get it (README "Testing your app").
pytest_plugins = ["lifewatch.testing", "pytester"]


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail any test in which a blocking call runs on a running event loop (as Starlette's suite).

    ``@pytest.mark.blockbuster_off("why")``: a test that blocks the loop on
    purpose (what lifewatch does then is what it tests).
    """
    if request.node.get_closest_marker("blockbuster_off") is not None:
        yield None
        return
    with blockbuster_ctx() as bb:
        # Each allowance names the one function that may block, and why.
        # TODO lean-trim: the process's start time is read from /proc when a
        # Lifewatch is built (once, at import in an app; on the loop only in
        # tests that build it there). /proc is made by the kernel, no disk.
        bb.functions["io.BufferedReader.read"].can_block_in(
            "lifewatch/_process.py", ["process_start_time"]
        )
        # TODO lean-trim: the app's distribution (the build info) is looked up
        # when a Lifewatch is built, as above: importlib.metadata scans sys.path.
        bb.functions["os.stat"].can_block_in("lifewatch/_build.py", ["_distribution"])
        # The OpenTelemetry SDK's TracerProvider() detects resources (in a
        # thread pool it joins; before 1.25, reading package metadata from
        # disk); lifewatch.testing builds one per harness, where a test builds it.
        for function in bb.functions.values():
            function.can_block_in("lifewatch/testing.py", ["_sdk"])
        # By design (issue 18): the drain channel's tiny file operations in a
        # private 0700 directory in the temp dir run on the loop, at startup,
        # at each state change and at the end; no thread, no socket for them.
        for function in bb.functions.values():
            function.can_block_in(
                "lifewatch/_channel.py", ["open", "close", "_write_state", "_siblings_left"]
            )
        # TODO lean-trim: the ops listener, started on the loop at the first
        # lifespan event, looks for the server's sockets in /proc/self/fd
        # (os.scandir, os.readlink) and /proc/net/tcp before it binds, and for
        # the process holding its port when it cannot.
        for function in bb.functions.values():
            function.can_block_in("lifewatch/_ops.py", ["_listen", "_held_by"])
        # /metrics in one process renders on the loop: the default registry's
        # process collector reads /proc (kernel memory, never a disk): 0.22-0.26
        # ms a scrape; in a thread 0.35-0.39 ms, 1.5-1.7x generate_latest, past
        # its guard of 1.5x. With PROMETHEUS_MULTIPROC_DIR it renders in a
        # thread (200 workers' files: 23-55 ms). benchmarks/metrics_offloop.py.
        for function in bb.functions.values():
            function.can_block_in("prometheus_client/process_collector.py", ["collect"])
        # prometheus-client's multiprocess mode opens (once per process and
        # file) the mmap file a value lives in when a series is first written;
        # lifewatch writes its metrics from the event flow, as an app writes
        # its own from a request handler.
        for function in bb.functions.values():
            function.can_block_in("prometheus_client/values.py", ["__reset"])
        # tests/faults measure the process (tasks, threads, fds, memory) from
        # the loop's thread: a thread to read /proc would be counted itself.
        for function in bb.functions.values():
            function.can_block_in("tests/support/faults.py", ["now"])
        yield bb


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


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Run every ``async def`` test on asyncio through anyio's pytest plugin:
    marked here, before the plugin looks (anyio before 4.12 looks only then)."""
    import inspect

    if (
        isinstance(collector, pytest.Module | pytest.Class)
        and collector.istestfunction(obj, name)
        and inspect.iscoroutinefunction(obj)
    ):
        pytest.mark.anyio(obj)
    return (yield)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``integration`` every test that starts a process (``_starts_a_process``)."""
    for item in items:
        if isinstance(item, pytest.Function) and _starts_a_process(item):
            item.add_marker(pytest.mark.integration)


def _starts_a_process(item: pytest.Function) -> bool:
    """Whether the test, its fixtures, or a function of the tests they call
    reach ``subprocess`` (a server, a program outside PyPI such as prometheus
    or chromium, a fresh interpreter): the ``integration`` tests, which
    ``pytest -m "not integration"`` leaves out. Read from the code, so a new
    test is marked by what it does, not by a list to keep up to date."""
    funcs: list[Any] = [item.function]
    fixtures = item._fixtureinfo.name2fixturedefs
    for name in item.fixturenames:
        funcs.extend(d.func for d in fixtures.get(name, ()))
    return any(_reaches_subprocess(f, set()) for f in funcs)


def _reaches_subprocess(func: Any, seen: set[int]) -> bool:
    import inspect
    import subprocess
    import sys
    import types

    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    codes = [code]
    for c in codes:  # the function and the functions defined in it
        codes.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    names = {name for c in codes for name in c.co_names}
    # Imported in the function ("from tests.support.servers import running"):
    # the module's name is among the names too.
    imported = [sys.modules[name] for name in names if name in sys.modules]
    for name in names:
        value = func.__globals__.get(name)
        if value is None:
            value = next((vars(m)[name] for m in imported if name in vars(m)), None)
        if value is subprocess:
            return True
        members = vars(value).values() if inspect.isclass(value) else (value,)
        for member in members:
            module = getattr(member, "__module__", None)
            ours = isinstance(module, str) and module.startswith("tests.")
            if ours and _reaches_subprocess(member, seen):
                return True
    return False


@pytest.fixture(autouse=True)
def _no_build_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI's own ``GIT_COMMIT`` (Jenkins) or ``SOURCE_VERSION`` (Heroku) must not
    become the version and revision of every Lifewatch the tests make."""
    from lifewatch._build import REVISION_VARIABLES, VERSION_VARIABLES

    for name in (*VERSION_VARIABLES, *REVISION_VARIABLES, "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
