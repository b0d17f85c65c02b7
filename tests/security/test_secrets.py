"""Secrets in log records: an exception message carrying a password, an API
key and a token, through a real lifespan, on the stdlib and the structlog way,
rendered by the app's real formatters and renderers (DESIGN §5, §8)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch

SECRETS = ("hunter2", "=abc", "xyz")


def leaky(logger: str) -> Starlette:
    """A real lifespan whose phase fails with secrets in the message and in a local."""
    watch = Lifewatch(service="orders", registry=CollectorRegistry(), logger=logger)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("database"):
            dsn = "host=db password=hunter2"  # a local: what rich and dict_tracebacks print
            raise RuntimeError(f"connect failed: password={dsn[-7:]} api_key=abc token: xyz")
        yield

    return watch.instrument(Starlette(lifespan=lifespan))


async def started(app: Starlette) -> RuntimeError:
    """The exception the app's startup raised, as the server gets it."""
    with pytest.raises(RuntimeError) as raised:
        async with LifespanManager(app):
            pass
    return raised.value


def unchanged(error: RuntimeError) -> None:
    """DESIGN §0: the app's exception is itself, message and all; lifewatch only adds its note."""
    assert str(error) == "connect failed: password=hunter2 api_key=abc token: xyz"
    assert error.__notes__ == ["lifewatch: startup phase 'database' failed (error)"]


def stdlib_formatters() -> dict[str, logging.Formatter]:
    from structlog.stdlib import ExtraAdder, ProcessorFormatter

    def processor(*processors: Any) -> logging.Formatter:
        return ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, ExtraAdder()],
            processors=[ProcessorFormatter.remove_processors_meta, *processors],
        )

    return {
        "logging.Formatter": logging.Formatter("%(levelname)s %(name)s %(message)s"),
        "ProcessorFormatter(ConsoleRenderer)": processor(
            structlog.dev.ConsoleRenderer(colors=False)
        ),
        "ProcessorFormatter(dict_tracebacks, JSONRenderer)": processor(
            structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()
        ),
    }


@pytest.mark.parametrize("formatter", list(stdlib_formatters()))
async def test_no_secret_reaches_what_a_stdlib_formatter_writes(
    formatter: str, anyio_backend: str
) -> None:
    """Message, fields, traceback (rendered by lifewatch: the formatter never
    gets the exception to render, locals and all) and notes: no secret, in
    what the app's real formatter writes and on the records themselves."""
    app = leaky("stdlib")
    records: list[logging.LogRecord] = []
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(stdlib_formatters()[formatter])
    handler.addFilter(lambda r: bool(records.append(r)) or True)
    logger = logging.getLogger("lifewatch")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        unchanged(await started(app))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    written = out.getvalue()
    assert "lifespan.phase.failed" in written and "Traceback" in written
    assert "password=******" in written and "api_key=******" in written
    assert "token: ******" in written and "startup phase 'database' failed" in written
    seen = written + repr([r.__dict__ for r in records])
    assert not [s for s in SECRETS if s in seen]
    assert all(r.exc_info is None for r in records)


def structlog_renderers() -> dict[str, list[Any]]:
    return {
        "ConsoleRenderer": [
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        "format_exc_info, JSONRenderer": [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        "dict_tracebacks, JSONRenderer": [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
    }


@pytest.mark.parametrize("renderer", list(structlog_renderers()))
async def test_no_secret_reaches_what_structlog_renders(renderer: str, anyio_backend: str) -> None:
    """The structlog way, through its real renderers: the traceback goes as
    the ``exception`` string lifewatch rendered and scrubbed, never as
    ``exc_info`` (``dict_tracebacks`` would write every frame's locals)."""
    app = leaky("structlog")
    out = io.StringIO()
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, *structlog_renderers()[renderer]],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    try:
        unchanged(await started(app))
    finally:
        structlog.configure(**saved)
    written = out.getvalue()
    assert "lifespan.phase.failed" in written and "Traceback" in written
    assert "password=******" in written and "token: ******" in written
    assert not [s for s in SECRETS if s in written]
