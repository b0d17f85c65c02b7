"""A dashboard and rules rendered for ``namespace="orders"`` work against a real Prometheus.

The same proof as ``test_dashboard.py``, for an app whose metrics are all
``orders_*`` (``tests/apps/orders.py``): a real Prometheus and Pushgateway,
the app under a real uvicorn failing once, stopped once and left running;
then every query of every panel of the *rendered* dashboard must return
data, and the rendered rules must load healthy. The shipped dashboard, which
queries ``lifespan_*``, sees nothing of this app: the test shows that too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.assets.test_dashboard import (
    BUILTINS,
    has_data,
    label_values,
    query,
    substitute,
    targets,
    wait_for_every_panel,
)
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

APP = "tests.apps.orders:app"
JOB = "orders"


def render(tmp: Path) -> tuple[dict[str, Any], Path]:
    """The dashboard and rules as the CLI writes them for the app."""
    out = tmp / "rendered"
    done = subprocess.run(
        [sys.executable, "-m", "lifewatch", "grafana", "--app", APP, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "lifewatch.json").read_text()), out / "alerts.yaml"


def test_a_dashboard_rendered_for_a_namespace_has_data_for_every_panel(tmp_path: Path) -> None:
    dashboard, rules = render(tmp_path)
    gw, prom, live, failed_port, stopped_port = free_ports(5)
    prometheus = servers.prometheus(
        tmp_path,
        prom,
        rules=str(rules),
        app={
            "job_name": JOB,
            "metrics_path": "/internal/metrics",
            "static_configs": [{"targets": [f"127.0.0.1:{live}"]}],
        },
        gateway=gw,
    )

    def app_env(port: int, mode: str) -> dict[str, str]:
        return env(
            LW_MODE=mode,
            LW_INSTANCE=f"127.0.0.1:{port}",
            LW_PUSHGATEWAY=f"http://127.0.0.1:{gw}",
            LW_JOB=JOB,
        )

    logs = tmp_path
    with (
        running(pushgateway(tmp_path, gw), logs / "pushgateway.log"),
        running(prometheus, logs / "prometheus.log"),
        running(uvicorn_argv(live, APP), logs / "live.log", app_env(live, "ok")),
    ):
        try:
            wait_for("the pushgateway", lambda: http_get(f"http://127.0.0.1:{gw}/-/ready"), 15)
            with running(
                uvicorn_argv(failed_port, APP), logs / "failed.log", app_env(failed_port, "fail")
            ) as proc:
                assert proc.wait(20) != 0
            with running(
                uvicorn_argv(stopped_port, APP), logs / "stopped.log", app_env(stopped_port, "ok")
            ) as proc:
                wait_for("the app", lambda: http_get(f"http://127.0.0.1:{stopped_port}/"), 20)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) in (0, -signal.SIGTERM)
            wait_for("Prometheus", lambda: http_get(f"http://127.0.0.1:{prom}/-/ready"), 20)

            variables = {"$job": ".*", "$instance": ".*", **BUILTINS}
            queries = [(t, r, substitute(e, variables)) for t, r, e in targets(dashboard)]
            assert queries and all("lifespan_" not in q for _, _, q in queries)

            wait_for_every_panel(prom, queries, 45)

            # The template variables find the app's job and instances.
            var = {v["name"]: v for v in dashboard["templating"]["list"]}
            job_match = var["job"]["definition"].split("(")[1].split(",")[0]
            assert job_match.startswith("orders_")
            assert JOB in label_values(prom, "job", job_match)
            instances = label_values(prom, "instance", f'orders_state{{job=~"{JOB}"}}')
            for port in (live, failed_port, stopped_port):
                assert f"127.0.0.1:{port}" in instances, instances

            # The rendered rules load healthy; the shipped dashboard sees nothing here.
            groups = json.loads(http_get(f"http://127.0.0.1:{prom}/api/v1/rules"))["data"]
            loaded = [r for g in groups["groups"] for r in g["rules"]]
            assert loaded and all(r["health"] == "ok" for r in loaded), loaded
            shipped = json.loads((ROOT / "grafana" / "lifewatch.json").read_text())
            for _, _, q in targets(shipped):
                # What is left is only the failure panels' "none failed" zero.
                found = query(prom, substitute(q, variables))
                real = [r for r in found if "none failed" not in r["metric"].values()]
                assert not has_data(real), q
        except BaseException:
            for log in sorted(logs.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}")
            raise
