"""examples/observability.py: the SDK and JSON structlog, configured as the README says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.servers import env

ROOT = Path(__file__).resolve().parents[2]


def test_json_logs_carry_the_ids_of_exported_spans() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.observability"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    logs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]
    db = next(r for r in logs if r["event"] == "lifespan.phase.end" and r["phase"] == "database")
    assert db["level"] == "info" and db["service"] == "orders" and db["timestamp"].endswith("Z")
    failed = next(r for r in logs if r["event"] == "lifespan.phase.failed")
    # The traceback as text lifewatch rendered and scrubbed: dict_tracebacks
    # gets no exc_info to turn into frames and locals.
    assert failed["exception"].startswith("Traceback (most recent call last)")
    assert "ConnectionError" in failed["exception"]
    # ConsoleSpanExporter prints each span as indented JSON: the ids match the log's.
    assert f'"span_id": "0x{db["span_id"]}"' in done.stdout
    assert f'"trace_id": "0x{db["trace_id"]}"' in done.stdout
    assert '"name": "lifespan.startup database"' in done.stdout
