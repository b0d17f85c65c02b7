"""Fault rows for the Pushgateway: a hung one bounds nothing but its own push;
credentials authenticate through prometheus-client's handlers, never logged."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from lifewatch import Lifewatch, Pushgateway
from lifewatch._pushgateway import PushgatewaySink
from tests.support.servers import binary, free_port, http_get, running, wait_for
from tests.test_pushgateway import black_hole

SECRET = "S3cr3t-pw"


def sink_of(watch: Lifewatch) -> PushgatewaySink:
    return next(s for s in watch._lifecycle.bus.sinks if isinstance(s, PushgatewaySink))


def test_a_hung_pushgateway(logs: list[dict[str, Any]]) -> None:
    """Row: a gateway that accepts and never answers. The push gives up within
    its timeout, says so once, and its thread is gone."""
    timeout = 0.5
    threads = threading.active_count()
    with black_hole() as url:
        watch = Lifewatch(
            registry=CollectorRegistry(),
            pushgateway=Pushgateway(
                url.replace("http://", f"http://ops:{SECRET}@"), timeout=timeout
            ),
        )
        sink = sink_of(watch)
        started = time.monotonic()
        thread = sink.push("startup failed")
        assert sink.wait() is True
        took = time.monotonic() - started
    assert took < timeout * 1.5, f"{took:.2f}s for a {timeout}s timeout"
    assert not thread.is_alive() and threading.active_count() == threads
    failed = [e for e in logs if e["event"] == "lifespan.pushgateway.failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "warning"
    assert SECRET not in repr(logs) and "***@" in failed[0]["url"]


def _web_config(tmp: Path) -> Path:
    hashed = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = tmp / "web.yml"
    config.write_text(f"basic_auth_users:\n  ops: '{hashed}'\n")
    return config


def test_pushgateway_credentials_authenticate_and_never_show(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """Row (issue point 9): basic auth from the URL or from options, through
    prometheus-client's ``basic_auth_handler``; the password is on no surface."""
    port = free_port()
    argv = [
        binary("prometheus-pushgateway"),
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={_web_config(tmp_path)}",
    ]
    with running(argv, tmp_path / "pushgateway.log"):
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                http_get(f"{base}/-/healthy")
            except Exception as exc:  # 401 is an answer: it is up
                return "401" in str(exc)
            return True

        wait_for("the pushgateway", up, 20)
        ways = {
            "in-url": Pushgateway(base.replace("http://", f"http://ops:{SECRET}@"), job="a"),
            "options": Pushgateway(base, job="b", username="ops", password=SECRET),
            "wrong": Pushgateway(base, job="c", username="ops", password="nope"),
        }
        for way in ways.values():
            assert SECRET not in repr(way)
            sink = sink_of(Lifewatch(registry=CollectorRegistry(), pushgateway=way))
            sink.push("shutdown complete")
            assert sink.wait() is True
        import base64
        import urllib.request

        auth = base64.b64encode(f"ops:{SECRET}".encode()).decode()
        request = urllib.request.Request(
            f"{base}/metrics", headers={"Authorization": f"Basic {auth}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    jobs = {
        s.labels.get("job")
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("lifespan_")
    }
    assert {"a", "b"} <= jobs and "c" not in jobs
    failed = [e for e in logs if e["event"] == "lifespan.pushgateway.failed"]
    assert len(failed) == 1 and "401" in failed[0]["error"]
    assert SECRET not in repr(logs)
