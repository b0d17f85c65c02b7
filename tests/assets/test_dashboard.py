"""The dashboard: importable as is, and every panel's query returns data.

The proof runs a real Prometheus (scrape interval 1 s) and a real Pushgateway,
and the demo app under a real uvicorn three times: a critical startup failure
(pushes), a full start then SIGTERM (pushes the shutdown), and one left
running (scraped). Then each query of each panel, template variables
substituted as Grafana would with "All" selected, goes through Prometheus'
HTTP API: a query that returns nothing is a broken panel.
"""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.support import servers
from tests.support.servers import (
    ROOT,
    env,
    free_ports,
    http_get,
    pushgateway,
    running,
    uvicorn_argv,
    wait_for,
)

DASHBOARD = ROOT / "grafana" / "lifewatch.json"
JOB = "lifewatch-demo"
# What Grafana puts in for the built-in variables, with a 1 s scrape interval.
BUILTINS = {"$__rate_interval": "4s", "$__interval": "1s", "$__range": "5m"}


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of every panel."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["refId"], target["expr"]))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):  # $__range before $__rate...
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def wait_for_every_panel(prom: int, queries: list[tuple[str, str, str]], timeout: float) -> None:
    """Until every (title, refId, expr) query has data, or fail naming the broken ones."""

    def broken() -> list[str]:
        out = []
        for title, ref, q in queries:
            try:
                if has_data(query(prom, q)):
                    continue
                why = "no data"
            except OSError as exc:  # URLError, HTTPError (a bad query: 400)
                why = repr(exc)
            out.append(f"{title} [{ref}]: {q} -> {why}")
        return out

    last: list[str] = []

    def all_have_data() -> bool:
        last[:] = broken()
        return not last

    try:
        wait_for("every panel to have data", all_have_data, timeout, step=1)
    except AssertionError:
        raise AssertionError("broken panels:\n  " + "\n  ".join(last)) from None


def test_dashboard_is_importable_as_is() -> None:
    d = load()
    assert d["uid"] == "lifewatch-lifespan"
    assert 39 <= d["schemaVersion"] <= 41
    assert d["id"] is None
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] is True
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "$job" in variables["instance"]["definition"]

    def datasources(node: Any) -> list[Any]:
        if isinstance(node, dict):
            found = [node["datasource"]] if "datasource" in node else []
            return found + [x for v in node.values() for x in datasources(v)]
        if isinstance(node, list):
            return [x for v in node for x in datasources(v)]
        return []

    # No hard-coded datasource uid anywhere but Grafana's own annotations.
    for ds in datasources(d["panels"]) + datasources(d["templating"]):
        assert ds == {"type": "prometheus", "uid": "${datasource}"}, ds

    titles = [p["title"] for p in d["panels"] if p["type"] != "row"]
    for wanted in (
        "Current state per instance",
        "Time to ready",
        "Startup duration per phase (slowest first)",
        "Failures by phase and reason",
        "Shutdown duration per instance",
        "Check status over time",
        "Check latency",
        "Boot vs lifespan startup duration",
        "Nested phases: duration by parent (drill-down)",
    ):
        assert wanted in titles
    # Top-level phases add up to the run; nested ones are shown apart, never stacked with them.
    for panel in d["panels"]:
        for target in panel.get("targets", []):
            if "lifespan_phase_duration_seconds" in target["expr"]:
                assert 'parent=""' in target["expr"] or 'parent!=""' in target["expr"], panel[
                    "title"
                ]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        if panel["type"] == "row":
            continue
        defaults = panel["fieldConfig"]["defaults"]
        assert "unit" in defaults or panel["type"] == "state-timeline", panel["title"]
        if "duration" in panel["title"].lower() or "latency" in panel["title"].lower():
            assert defaults["unit"] == "s", panel["title"]
        for target in panel["targets"]:
            assert "{{" in target["legendFormat"], (panel["title"], "legend names no label")
            assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"]


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = json.loads(http_get(url, timeout=5))
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    if answer["data"]["resultType"] == "scalar":
        return [{"metric": {}, "value": result}]
    return list(result)


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def label_values(port: int, label: str, match: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
        {"match[]": match}
    )
    return list(json.loads(http_get(url, timeout=5))["data"])


def test_every_panel_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    started = time.monotonic()
    gw, prom, live, failed_port, stopped_port = free_ports(5)
    prometheus = servers.prometheus(
        tmp_path,
        prom,
        rules=str(ROOT / "grafana" / "alerts.yaml"),
        app={"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{live}"]}]},
        gateway=gw,
    )
    push = {"LW_PUSHGATEWAY": f"http://127.0.0.1:{gw}", "LW_JOB": JOB}

    def app_env(port: int, mode: str) -> dict[str, str]:
        return env(LW_MODE=mode, LW_INSTANCE=f"127.0.0.1:{port}", **push)

    logs = tmp_path
    with (
        running(pushgateway(tmp_path, gw), logs / "pushgateway.log"),
        running(prometheus, logs / "prometheus.log"),
        running(uvicorn_argv(live), logs / "live.log", app_env(live, "ok")),
    ):
        try:
            wait_for("the pushgateway", lambda: http_get(f"http://127.0.0.1:{gw}/-/ready"), 15)
            # 1. A critical startup failure: its last words are pushed.
            with running(
                uvicorn_argv(failed_port), logs / "failed.log", app_env(failed_port, "fail")
            ) as proc:
                assert proc.wait(20) != 0
            # 2. A full start, then SIGTERM: the shutdown is pushed.
            with running(
                uvicorn_argv(stopped_port), logs / "stopped.log", app_env(stopped_port, "ok")
            ) as proc:
                wait_for("the app", lambda: http_get(f"http://127.0.0.1:{stopped_port}/"), 20)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) in (0, -signal.SIGTERM)
            # 3. Left running, scraped every second.
            wait_for("Prometheus", lambda: http_get(f"http://127.0.0.1:{prom}/-/ready"), 20)

            d = load()
            variables = {"$job": ".*", "$instance": ".*", **BUILTINS}
            queries = [(t, r, substitute(e, variables)) for t, r, e in targets(d)]

            wait_for_every_panel(prom, queries, 45)

            # The template variables offer what the panels need.
            var = {v["name"]: v for v in d["templating"]["list"]}
            jobs = label_values(prom, "job", var["job"]["definition"].split("(")[1].split(",")[0])
            assert JOB in jobs
            instances = label_values(prom, "instance", f'lifespan_state{{job=~"{JOB}"}}')
            for port in (live, failed_port, stopped_port):
                assert f"127.0.0.1:{port}" in instances, instances

            # Pushed series are what show a failed startup and a shutdown.
            state = dict(zip((t for t, _, _ in queries), (q for _, _, q in queries), strict=False))
            now = query(prom, state["Current state per instance"])
            assert {
                "instance": f"127.0.0.1:{failed_port}",
                "state": "failed",
            } in [r["metric"] for r in now], now
            shut = query(prom, state["Shutdown duration per instance"])
            assert f"127.0.0.1:{stopped_port}" in [r["metric"]["instance"] for r in shut], shut
            failures = query(prom, state["Failures by phase and reason"])
            assert {"event": "startup", "phase": "migrations", "reason": "error"} in [
                r["metric"] for r in failures
            ]

            # The alert rules load into a real Prometheus, healthy.
            rules = json.loads(http_get(f"http://127.0.0.1:{prom}/api/v1/rules"))["data"]
            loaded = [r for g in rules["groups"] for r in g["rules"]]
            assert len(loaded) == 7 and all(r["health"] != "err" for r in loaded), loaded
        except BaseException:
            for log in sorted(logs.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}")
            raise
    print(f"proof took {time.monotonic() - started:.1f}s for {len(targets(load()))} queries")
