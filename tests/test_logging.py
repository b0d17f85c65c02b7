"""Where lifewatch's records go: the app's structlog, or else the stdlib logger ``lifewatch``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import structlog
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from structlog.testing import capture_logs

from lifewatch import Lifewatch, Notice
from lifewatch._logging import EventLog, message
from tests.support.probes import call


@pytest.fixture
def unconfigured() -> Iterator[None]:
    """structlog as an app that never configured it leaves it."""
    was, config = structlog.is_configured(), structlog.get_config()
    structlog.reset_defaults()
    assert not structlog.is_configured()
    yield
    structlog.reset_defaults()
    if was:
        structlog.configure(**config)


def app(watch: Lifewatch) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        with watch.phase("database"):
            pass
        async with watch.phase("cache", critical=False):
            raise ConnectionError("no redis")
        yield

    return watch.instrument(Starlette(lifespan=lifespan))


def ours(caplog: pytest.LogCaptureFixture, name: str = "lifewatch") -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name]


async def test_without_structlog_configured_records_go_to_the_stdlib_logger(
    unconfigured: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lifewatch")
    watch = Lifewatch(service="orders", registry=CollectorRegistry())
    async with LifespanManager(app(watch)):
        pass
    records = ours(caplog)
    events = [r.event for r in records]  # type: ignore[attr-defined]
    assert "lifespan.phase.begin" not in events  # DEBUG, and the app did not enable it
    (end,) = [r for r in records if r.event == "lifespan.phase.end" and r.phase == "database"]  # type: ignore[attr-defined]
    assert end.levelno == logging.INFO
    assert end.service == "orders" and end.outcome == "ok"  # type: ignore[attr-defined]
    assert end.getMessage().startswith(
        "lifespan.phase.end phase=database lifespan_event=startup duration_s="
    )
    (failed,) = [r for r in records if r.event == "lifespan.phase.failed"]  # type: ignore[attr-defined]
    assert failed.levelno == logging.WARNING  # non-critical
    # The traceback as text lifewatch rendered (and scrubbed), never the
    # exception for the app's formatter to render; it states the error.
    assert failed.exc_info is None
    assert failed.exc_text == failed.exception  # type: ignore[attr-defined]
    assert failed.exc_text.endswith(
        "ConnectionError: no redis\nlifewatch: startup phase 'cache' failed (error)"
    )
    assert "no redis" not in failed.getMessage()


async def test_stdlib_records_carry_no_url_credentials(
    unconfigured: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10's scrubbing holds on the stdlib way too: fields, the readable
    message and the traceback (plain text, scrubbed, instead of ``exc_info``,
    which the app's formatter would render with the secret)."""
    caplog.set_level(logging.INFO, logger="lifewatch")
    dsn = "postgres://admin:S3cr3t@db:5432/orders"
    watch = Lifewatch(service="orders", registry=CollectorRegistry())

    @watch.check("db")
    async def db() -> None:
        raise ConnectionRefusedError(f"{dsn} refused")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("cache", critical=False):
            raise ConnectionRefusedError(f"{dsn} refused")
        yield

    instrumented = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(instrumented):
        assert (await call(instrumented, "/readyz"))[0] == 503
    records = ours(caplog)
    formatter = logging.Formatter("%(levelname)s %(message)s")
    text = "\n".join(formatter.format(r) for r in records)
    assert "lifespan.check.failed" in text and "lifespan.phase.failed" in text
    assert "S3cr3t" not in text and "S3cr3t" not in repr([r.__dict__ for r in records])
    (failed,) = [r for r in records if r.event == "lifespan.phase.failed"]  # type: ignore[attr-defined]
    assert failed.exc_info is None
    assert failed.exc_text is not None and failed.exc_text.startswith("Traceback")
    assert "postgres://***@db:5432/orders refused" in failed.exc_text
    assert text.count("Traceback (most recent call last)") == 1


async def test_debug_records_only_when_the_app_enables_debug(
    unconfigured: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lifewatch")
    watch = Lifewatch(registry=CollectorRegistry())
    async with LifespanManager(app(watch)):
        pass
    begins = [r for r in ours(caplog) if r.event == "lifespan.phase.begin"]  # type: ignore[attr-defined]
    assert begins and all(r.levelno == logging.DEBUG for r in begins)


async def test_with_structlog_configured_records_go_through_structlog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lifewatch")
    watch = Lifewatch(service="orders", registry=CollectorRegistry())
    with capture_logs() as logs:  # configures structlog, as an app would
        async with LifespanManager(app(watch)):
            pass
    assert {"event": "lifespan.phase.end", "phase": "database"}.items() <= next(
        e for e in logs if e["event"] == "lifespan.phase.end"
    ).items()
    assert all(e["service"] == "orders" for e in logs)
    assert ours(caplog) == []


async def test_logger_option_picks_the_stdlib(caplog: pytest.LogCaptureFixture) -> None:
    for choice in ("stdlib", "a logger"):
        name = "lifewatch" if choice == "stdlib" else "myapp.lifespan"
        caplog.clear()
        caplog.set_level(logging.INFO, logger=name)
        option: Any = choice if choice == "stdlib" else logging.getLogger(name)
        watch = Lifewatch(registry=CollectorRegistry(), logger=option)
        with capture_logs() as logs:  # structlog is configured, and still not used
            async with LifespanManager(app(watch)):
                pass
        assert logs == []
        events = [r.event for r in ours(caplog, name)]  # type: ignore[attr-defined]
        assert "lifespan.startup.complete" in events


async def test_logger_option_takes_a_structlog_logger(unconfigured: None) -> None:
    seen: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: dict[str, Any]) -> Any:
        seen.append(event)
        raise structlog.DropEvent

    log = structlog.wrap_logger(structlog.PrintLogger(), processors=[keep])
    watch = Lifewatch(service="orders", registry=CollectorRegistry(), logger=log)
    async with LifespanManager(app(watch)):
        pass
    assert any(e["event"] == "lifespan.phase.end" and e["service"] == "orders" for e in seen)


@pytest.mark.parametrize("bad", [42, "json", logging])
def test_logger_option_is_validated(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"logger must be 'auto', 'structlog', 'stdlib', a logging"):
        Lifewatch(logger=bad)


def test_fields_named_like_log_record_attributes_are_renamed(
    unconfigured: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lifewatch")
    watch = Lifewatch(registry=CollectorRegistry())
    watch._lifecycle.notify(Notice("lifespan.probe.error", "warning", {"name": "x", "msg": "y"}))
    (record,) = ours(caplog)
    assert record.lifewatch_name == "x" and record.lifewatch_msg == "y"  # type: ignore[attr-defined]
    assert record.getMessage() == "lifespan.probe.error name=x msg=y"


def test_the_message_is_readable() -> None:
    fields = {"phase": "db", "ok": True, "error": "E: a b", "none": None, "service": "s"}
    assert message("ev", fields) == "ev phase=db ok=True error='E: a b'"
    assert message("ev", {"stack": "a\nb\n"}) == "ev\nstack:\na\nb"


async def test_records_follow_structlog_as_its_own_lazy_logger_does(unconfigured: None) -> None:
    """Reconfigured between two startups: without ``cache_logger_on_first_use``
    the second startup's records follow the new configuration; with it, they
    keep going where the first record went, as structlog's own loggers do."""

    def into(seen: list[str]) -> Any:
        def keep(logger: Any, method: str, event: dict[str, Any]) -> Any:
            seen.append(event["event"])
            raise structlog.DropEvent

        return keep

    for caching in (False, True):
        first: list[str] = []
        second: list[str] = []
        mine = structlog.get_logger("mine")  # an app's own lazy logger, made at import too
        watch = Lifewatch(service="orders", registry=CollectorRegistry())
        served = app(watch)
        structlog.configure(processors=[into(first)], cache_logger_on_first_use=caching)
        async with LifespanManager(served):
            mine.info("app.first")
        structlog.configure(processors=[into(second)], cache_logger_on_first_use=caching)
        async with LifespanManager(served):
            mine.info("app.second")
        assert first.count("lifespan.startup.complete") == (2 if caching else 1)
        assert ("app.second" in first) is caching
        assert ("lifespan.startup.complete" in second) is not caching
        assert ("app.second" in second) is not caching


# -- records survive the app's logging setup (issue 21) ------------------------


def test_a_disabled_lifewatch_logger_is_turned_back_on_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What ``fileConfig``/``dictConfig(disable_existing_loggers=True)`` do to
    every existing logger; the config itself runs under a real uvicorn in
    tests/servers/test_logs.py."""
    caplog.set_level(logging.INFO, logger="lifewatch")
    log = EventLog("orders", "stdlib")
    own = logging.getLogger("lifewatch")
    for _ in range(2):  # each time it happens, said once
        own.disabled = True
        log.error("lifespan.startup.failed", phase="migrate")
        log.info("lifespan.state", to="failed")
    assert not own.disabled
    events = [(r.levelname, r.event) for r in ours(caplog)]  # type: ignore[attr-defined]
    assert (
        events
        == [
            ("WARNING", "lifespan.logger.enabled"),
            ("ERROR", "lifespan.startup.failed"),
            ("INFO", "lifespan.state"),
        ]
        * 2
    )
    warning = ours(caplog)[0].getMessage()
    assert "logging.config" in warning and "setLevel" in warning


def test_a_logger_passed_in_and_disabled_is_turned_back_on_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "myapp.lifespan"
    caplog.set_level(logging.INFO, logger=name)
    mine = logging.getLogger(name)
    log = EventLog("orders", mine)
    mine.disabled = True
    log.error("lifespan.startup.failed", phase="migrate")
    assert [r.event for r in ours(caplog, name)] == [  # type: ignore[attr-defined]
        "lifespan.logger.enabled",
        "lifespan.startup.failed",
    ]


@pytest.fixture
def alone() -> Iterator[logging.Logger]:
    """A logger that does not propagate: no handler anywhere takes its records
    once a test takes off the ones pytest adds to such a logger."""
    logger = logging.getLogger("lifewatch.alone")
    logger.propagate = False
    # The fallback follows uvicorn's --log-level where uvicorn runs in this
    # process; an earlier test's in-process uvicorn (log_level="warning") left one.
    server = logging.getLogger("uvicorn.error")
    server_level = server.level
    server.setLevel(logging.NOTSET)
    yield logger
    server.setLevel(server_level)
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logging.disable(logging.NOTSET)


def test_with_no_handler_anywhere_records_go_to_stderr_in_uvicorns_format(
    alone: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    alone.handlers.clear()  # pytest's, added to a logger that does not propagate
    log = EventLog("orders", alone)
    log.debug("lifespan.phase.begin", phase="db")
    log.info("lifespan.phase.end", phase="db", exc_info=ValueError("password=hunter2"))
    log.warning("lifespan.check.slow", check="db")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "INFO:     lifespan.phase.end phase=db",
        "ValueError: password=******",
        "WARNING:  lifespan.check.slow check=db",
    ]


@pytest.mark.parametrize(
    "silence",
    ["a NullHandler", "a level", "logging.disable"],
)
def test_the_stderr_fallback_gives_way_to_any_handler_level_or_disable(
    alone: logging.Logger, capsys: pytest.CaptureFixture[str], silence: str
) -> None:
    alone.handlers.clear()  # pytest's, added to a logger that does not propagate
    if silence == "a NullHandler":  # the standard way to silence a library
        alone.addHandler(logging.NullHandler())
    elif silence == "a level":
        alone.setLevel(logging.ERROR)
    else:
        logging.disable(logging.WARNING)
    log = EventLog("orders", alone)
    log.info("lifespan.phase.end", phase="db")
    log.warning("lifespan.check.slow", check="db")
    assert capsys.readouterr().err == ""


# -- one error, stated once (issue 21) ----------------------------------------


@pytest.mark.parametrize("cut_by", ["the phase's timeout", "startup_timeout", "an error"])
async def test_enclosing_phases_and_the_run_name_the_failed_phase_without_repeating_it(
    cut_by: str, logs: list[dict[str, Any]], anyio_backend: str
) -> None:
    watch = Lifewatch(
        service="orders",
        registry=CollectorRegistry(),
        startup_timeout=0.2 if cut_by == "startup_timeout" else None,
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        timeout = 0.05 if "phase" in cut_by else None
        async with watch.phase("database"), watch.phase("migrate", timeout=timeout):
            if cut_by == "an error":
                raise RuntimeError("Cannot locate revision\nabc123\n  at env.py:42")
            await anyio.sleep(30)
        yield

    with pytest.raises((RuntimeError, TimeoutError)):
        async with LifespanManager(Starlette(lifespan=watch.lifespan(lifespan))):
            pass
    failed = {e["phase"]: e for e in logs if e["event"] == "lifespan.phase.failed"}
    inner = failed.pop("migrate")
    if cut_by == "an error":
        assert inner["exception"].endswith(
            "RuntimeError: Cannot locate revision\nabc123\n  at env.py:42\n"
            "lifewatch: startup phase 'migrate' failed (error)"
        )
        assert "error" not in inner
    else:
        assert inner["error"].startswith("PhaseTimeout: lifewatch: startup phase 'migrate'")
    assert failed and all(
        e["failed_phase"] == "migrate" and "error" not in e and "exception" not in e
        for e in failed.values()
    ), failed
    (run,) = [e for e in logs if e["event"] == "lifespan.startup.failed"]
    assert run["phase"] == "migrate" and "error" not in run and "exception" not in run


async def test_a_failed_startup_no_phase_recorded_is_stated_by_the_run(
    logs: list[dict[str, Any]],
) -> None:
    """A raw app under the plain middleware, raising in startup: no phase
    record told the error, so ``lifespan.startup.failed`` carries it, once."""
    from lifewatch import LifewatchMiddleware

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("token=s3cr3t rejected")

    watch = Lifewatch(service="orders", registry=CollectorRegistry())
    with pytest.raises(RuntimeError):
        async with LifespanManager(LifewatchMiddleware(raw, watch=watch)):
            pass
    (run,) = [e for e in logs if e["event"] == "lifespan.startup.failed"]
    assert run["exception"].endswith("RuntimeError: token=****** rejected"), run
    assert "error" not in run and "s3cr3t" not in repr(logs)


def test_structlog_through_the_stdlib_survives_a_disabled_logger_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """structlog's stdlib factory writes to the stdlib logger ``lifewatch``:
    the one ``fileConfig`` disables (README: one JSON format for everything)."""
    caplog.set_level(logging.INFO, logger="lifewatch")
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        log = EventLog("orders")
        logging.getLogger("lifewatch").disabled = True
        log.error("lifespan.startup.failed", phase="migrate")
    finally:
        structlog.configure(**saved)
    messages = [r.getMessage() for r in ours(caplog)]
    assert len(messages) == 2, messages
    assert "lifespan.logger.enabled" in messages[0]
    assert "lifespan.startup.failed" in messages[1] and "phase='migrate'" in messages[1]
