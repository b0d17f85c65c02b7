"""lifewatch's log lines under a real uvicorn: they survive the app's own logging
setup (alembic's ``fileConfig``), show by default, and state an error once."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.servers import env, free_port, running, uvicorn_argv, wait_for

# Alembic's default alembic.ini, its logging sections as `alembic init` writes them.
ALEMBIC_INI = """\
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

# A phase configures logging as alembic's env.py does, a later one fails.
APP = """\
import logging.config
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from lifewatch import Lifewatch

watch = Lifewatch(service="logs")
SETUP = os.environ["LOGGING_SETUP"]


@asynccontextmanager
async def lifespan(app):
    async with watch.phase("migrate"):
        if SETUP == "fileConfig":
            logging.config.fileConfig(os.environ["INI"])  # alembic's env.py
        elif SETUP == "dictConfig":
            logging.config.dictConfig({
                "version": 1,
                "disable_existing_loggers": True,
                "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
                "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
                "root": {"level": "WARNING", "handlers": ["console"]},
            })
    async with watch.phase("seed"):
        raise LookupError("no initial data")
    yield


app = watch.instrument(Starlette(lifespan=lifespan))
"""


def failed_startup(tmp_path: Path, app: str, **extra: str) -> str:
    """Run ``app`` (its source) under uvicorn until its startup fails; its output."""
    (tmp_path / "logapp.py").write_text(app)
    argv = [*uvicorn_argv(0, "logapp:app"), *extra.pop("EXTRA_ARGS", "").split()]
    environ = env(**extra)
    environ["PYTHONPATH"] += f":{tmp_path}"
    proc = subprocess.run(
        argv,
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    return output


@pytest.mark.parametrize("setup", ["fileConfig", "dictConfig"])
def test_an_app_configuring_logging_in_a_phase_does_not_silence_lifewatch(
    tmp_path: Path, setup: str
) -> None:
    """``fileConfig`` (alembic's env.py) and ``dictConfig`` disable every
    logger that exists, lifewatch's included: its records come back, with one
    warning saying what happened and how to silence lifewatch on purpose."""
    ini = tmp_path / "alembic.ini"
    ini.write_text(ALEMBIC_INI)
    output = failed_startup(tmp_path, APP, LOGGING_SETUP=setup, INI=str(ini))
    lines = output.splitlines()
    enabled = [line for line in lines if "lifespan.logger.enabled logger=lifewatch" in line]
    assert len(enabled) == 1, output
    assert "setLevel" in enabled[0] and enabled[0].startswith("WARN"), output
    failed = [line for line in lines if "lifespan.phase.failed phase=seed" in line]
    assert len(failed) == 1 and failed[0].startswith("ERROR"), output
    assert "LookupError: no initial data" in output
    assert any("lifespan.startup.failed phase=seed" in line for line in lines), output


def test_a_deliberate_level_silences_lifewatch_and_its_warning(tmp_path: Path) -> None:
    """The way to silence lifewatch on purpose, which the warning names: a
    level (``fileConfig`` keeps it), here set at import."""
    app = APP.replace(
        'SETUP = os.environ["LOGGING_SETUP"]',
        'SETUP = os.environ["LOGGING_SETUP"]\nlogging.getLogger("lifewatch").setLevel("CRITICAL")',
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(ALEMBIC_INI)
    output = failed_startup(tmp_path, app, LOGGING_SETUP="fileConfig", INI=str(ini))
    assert "Waiting for application startup" in output
    assert "lifespan." not in output, output


NESTED = """\
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from lifewatch import Lifewatch

watch = Lifewatch(service="logs")


@asynccontextmanager
async def lifespan(app):
    async with watch.phase("database"):
        async with watch.phase("migrate"):
            lines = ["Cannot locate revision", os.environ["MARKER"]]
            lines += [f"  at step {i}" for i in range(11)]
            raise RuntimeError("\\n".join(lines))
    yield


app = watch.instrument(Starlette(lifespan=lifespan))
"""


def test_a_failed_startup_states_its_error_once_besides_the_servers_traceback(
    tmp_path: Path,
) -> None:
    """Two nested phases and a 13-line error: lifewatch states it once, in the
    record of the phase it came from (with its traceback); the enclosing
    phase and the run name that phase; uvicorn's traceback is the one other
    copy, ending with lifewatch's note."""
    marker = "MIGRATION-MARKER-7f3a"
    output = failed_startup(tmp_path, NESTED, MARKER=marker)
    lines = output.splitlines()
    assert sum(line.count(marker) for line in lines) == 2, output
    assert output.count("Traceback (most recent call last)") == 2, output
    (outer,) = [line for line in lines if "lifespan.phase.failed phase=database" in line]
    assert "failed_phase=migrate" in outer, output
    (run,) = [line for line in lines if "lifespan.startup.failed" in line]
    assert "phase=migrate" in run and "RuntimeError" not in run, output
    assert lines.count("lifewatch: startup phase 'migrate' failed (error)") == 2, output


def test_with_no_logging_configured_lifewatch_lines_show_beside_uvicorns(
    tmp_path: Path,
) -> None:
    """uvicorn configures its own loggers only: lifewatch's INFO lines (startup,
    phases, drain, shutdown) would be dropped; they are written in uvicorn's
    format instead, as long as no handler anywhere would take them."""
    (tmp_path / "quietapp.py").write_text(
        textwrap.dedent(
            """
            from contextlib import asynccontextmanager
            from starlette.applications import Starlette
            from lifewatch import Lifewatch

            watch = Lifewatch(service="logs", drain_delay=0.2)

            @asynccontextmanager
            async def lifespan(app):
                async with watch.phase("database"):
                    pass
                yield

            app = watch.instrument(Starlette(lifespan=lifespan))
            """
        )
    )
    environ = env()
    environ["PYTHONPATH"] += f":{tmp_path}"
    log = tmp_path / "out.log"
    with running(uvicorn_argv(free_port(), "quietapp:app"), log, environ) as proc:
        wait_for("startup", lambda: "Application startup complete" in log.read_text(), 30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    output = log.read_text()
    for line in (
        "INFO:     lifespan.startup.begin",
        "INFO:     lifespan.phase.end phase=database lifespan_event=startup",
        "INFO:     lifespan.startup.complete",
        "INFO:     lifespan.drain.begin",
        "INFO:     lifespan.shutdown.complete",
    ):
        assert line in output, output
    assert output.index("lifespan.startup.complete") < output.index(
        "INFO:     Application startup complete"
    )


def test_with_no_logging_configured_uvicorns_log_level_applies(tmp_path: Path) -> None:
    """``uvicorn --log-level warning``: lifewatch's INFO lines stay quiet too,
    its warnings and errors still show, in uvicorn's format."""
    output = failed_startup(tmp_path, APP, LOGGING_SETUP="none", EXTRA_ARGS="--log-level warning")
    assert "INFO:" not in output, output
    assert "ERROR:    lifespan.phase.failed phase=seed" in output, output
