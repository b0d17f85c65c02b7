"""Every example starts under a real uvicorn and answers its probes."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.servers import env, free_port, http_get, uvicorn_argv, wait_for

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve(target: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        uvicorn_argv(port, target),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> str:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        return http_get(base + "/livez")

    try:
        wait_for(f"{target} on {base}", up, timeout=30, step=0.05)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)  # SIGTERM would wait out the drain delay
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("target", "path", "body", "readyz"),
    [
        ("examples.fastapi_lifespan:app", "/orders", '{"db":"Database"}', "warn"),
        ("examples.quickstart:app", "/livez", "ok", "pass"),
        ("examples.fastapi_on_event:app", "/started", '["lifespan","connect_broker"]', "pass"),
        ("examples.composed:app", "/state", '{"db":"postgres-pool","http":"client"}', "pass"),
        ("examples.starlette_app:app", "/", "hello world", "pass"),
        ("examples.raw_asgi:app", "/anything", "raw hello", "pass"),
        ("examples.checks:app", "/livez/event-loop", "ok", "warn"),
        ("examples.blocking:app", "/livez", "ok", "warn"),
    ],
)
def test_example_serves_and_answers_probes(target: str, path: str, body: str, readyz: str) -> None:
    with serve(target) as base:
        assert httpx.get(base + path).text == body
        for probe in ("/livez", "/readyz", "/startupz"):
            response = httpx.get(base + probe)
            assert response.status_code == 200, (probe, response.text)
            assert response.text == "ok"
        health = httpx.get(base + "/readyz", headers={"accept": "application/health+json"})
        assert health.json()["status"] == readyz


@pytest.mark.blockbuster_off("examples/blocking.py blocks the loop on purpose")
async def test_blocking_example_times_out_both_phases_and_cuts_the_thread() -> None:
    from examples import blocking

    from lifewatch.testing import LifewatchHarness

    with LifewatchHarness(blocking.watch) as h:
        async with h.serving(blocking.app):
            pass
    model, cut = h.timeline.find("model"), h.timeline.find("model-in-a-thread")
    assert (model.outcome, model.reason) == ("degraded", "timeout")
    assert (cut.outcome, cut.reason) == ("degraded", "timeout")
    # Cut at its timeout (0.1 s), long before the thread's 0.5 s were over.
    assert cut.duration is not None and cut.duration < 4 * 0.1
    (overrun,) = h.events("lifespan.phase.overrun")
    assert overrun["phase"] == "model" and "in load_model: time.sleep(0.5)" in overrun["stuck_at"]
    (abandoned,) = h.events("lifespan.thread.abandoned")
    assert abandoned["phase"] == "model-in-a-thread"
    assert "in load_model: time.sleep(0.5)" in abandoned["stuck_at"]
