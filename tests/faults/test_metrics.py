"""Fault rows for ``/metrics``: any header gets a valid exposition; a broken
multiprocess directory is a clear error or a 503 that says so, never a 500."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.support.faults import app_of, watch_with
from tests.support.probes import call
from tests.support.servers import ROOT, env

pytestmark = pytest.mark.anyio

ODD_ACCEPT = [
    b"application/openmetrics-text;version=garbage",
    b"application/openmetrics-text; version=1.0.0<script>",
    b"text/plain;version=x.y",
    b"application/openmetrics-text;version=99999999999999999999.0.0",
    b"application/openmetrics-text;escaping=\x00;version=1.0.0",
    b";;;,,,;q=;",
    b"*/*;q=garbage",
    b"application/openmetrics-text;q=0, text/plain",
    b"\xff\xfe\xfd",
    b",".join([b"a/b;q=0.5"] * 10_000),
    b"application/openmetrics-text;" + b"x=y;" * 10_000,
]
ODD_ENCODING = [b"gzip;q=0", b"gzip;q=garbage", b"*;q=0", b"GZIP;Q=0", b"\xff", b"gzip;" * 10_000]


def family_names(body: bytes, content_type: bytes) -> set[str]:
    text = body.decode()
    parse = parse_om if content_type.startswith(b"application/openmetrics-text") else parse_text
    return {family.name for family in parse(text)}


async def test_metrics_with_odd_accept_and_accept_encoding() -> None:
    """Row (issue point 5): a valid exposition whatever the scraper sends; no gzip
    when gzip is refused; nothing of the header echoed back."""
    registry = CollectorRegistry()
    app = app_of(watch_with(registry))
    for accept in ODD_ACCEPT:
        for encoding in [b"", *ODD_ENCODING]:
            headers = [(b"accept", accept)] + ([(b"accept-encoding", encoding)] if encoding else [])
            status, sent, body = await call(app, "/metrics", headers=headers)
            assert status == 200, (accept, encoding)
            assert b"content-encoding" not in sent, (accept, encoding)  # gzip never wanted here
            kind = sent[b"content-type"]
            assert b"script" not in kind and b"garbage" not in kind and b"9999" not in kind
            assert "lifespan_state" in family_names(body, kind), accept
    # q-values are weighed: refused is refused, preferred is preferred.
    _, sent, body = await call(
        app,
        "/metrics",
        headers=[(b"accept", b"text/plain;q=1, application/openmetrics-text;q=0.5")],
    )
    assert sent[b"content-type"].startswith(b"text/plain")
    _, sent, body = await call(
        app,
        "/metrics",
        headers=[
            (b"accept", b"application/openmetrics-text;version=1.0.0"),
            (b"accept-encoding", b"br;q=1, gzip;q=0.5"),
        ],
    )
    assert sent[b"content-encoding"] == b"gzip"
    assert "lifespan_state" in family_names(gzip.decompress(body), sent[b"content-type"])


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, shutil, sys
    from asgi_lifespan import LifespanManager
    from lifewatch import Lifewatch, LifewatchMiddleware
    from tests.support.apps import raw_app
    from tests.support.probes import call

    watch = Lifewatch()

    @watch.check("db")
    async def db():
        pass

    async def main():
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        app = LifewatchMiddleware(raw_app(), watch=watch)
        async with LifespanManager(app):
            ready = await call(app, "/readyz")
            metrics = await call(app, "/metrics")
        print(json.dumps({"ready": ready[0], "metrics": metrics[0], "body": metrics[2].decode()}))

    asyncio.run(main())
    """
)


def run_with(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env(PROMETHEUS_MULTIPROC_DIR=str(directory)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("fault", ["missing", "unwritable"])
def test_a_multiprocess_directory_missing_or_unwritable(tmp_path: Path, fault: str) -> None:
    """Row: the app does not start, and the one error names the setting.
    (Root writes anywhere: "unwritable" is a path under a regular file.)"""
    directory = tmp_path / "missing"
    if fault == "unwritable":
        (tmp_path / "file").write_text("")
        directory = tmp_path / "file" / "dir"
    proc = run_with(directory)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()
    assert last[-2].startswith(("FileNotFoundError", "NotADirectoryError"))  # its own type
    assert last[-1].startswith(f"lifewatch: PROMETHEUS_MULTIPROC_DIR='{directory}' must be")


def test_a_multiprocess_directory_deleted_under_a_running_pod(tmp_path: Path) -> None:
    """Row: probes still answer; a scrape says 503 and why, never 500."""
    directory = tmp_path / "deleted"
    directory.mkdir()
    proc = run_with(directory)
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["ready"] == 200
    assert answer["metrics"] == 503
    assert answer["body"] == "lifewatch: the metrics could not be collected (see the log)\n"
    logged = proc.stdout + proc.stderr
    assert "lifespan.metrics.error" in logged and "lifespan.sink.failed" in logged
