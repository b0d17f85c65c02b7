"""A rolling restart, seen by a real Prometheus and Pushgateway.

Three instances of the demo app (version 1.0.0, from ``APP_VERSION``) are
scraped as three targets (file-based service discovery, as Kubernetes' would
change them). Then a rolling restart to 2.0.0, a version that starts slower:
one instance at a time, SIGTERM the old one (its shutdown is pushed), start
the new one in its place, swap the target. Afterwards every panel query of
the dashboard returns data, and the rollout panels show both versions side
by side: the new ones live, the old ones from their last words.
"""

from __future__ import annotations

import contextlib
import json
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

from .test_dashboard import (
    BUILTINS,
    load,
    query,
    substitute,
    targets,
    wait_for_every_panel,
)

JOB = "lifewatch-rollout"
OLD, NEW = "1.0.0", "2.0.0"


def query_range(port: int, promql: str, start: float, end: float) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": promql, "start": start, "end": end, "step": "1s"}
    )
    answer = json.loads(http_get(url, timeout=5))
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_a_rolling_restart_reads_as_old_and_new_side_by_side(tmp_path: Path) -> None:
    began = time.time()
    gw, prom, *ports = free_ports(8)
    old_ports, new_ports = ports[:3], ports[3:6]
    sd = tmp_path / "targets.json"

    def publish(live: list[int]) -> None:
        tmp = sd.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{p}" for p in live]}]))
        tmp.replace(sd)  # atomically, as Prometheus' file watcher wants

    live = list(old_ports)
    publish(live)
    prometheus = servers.prometheus(
        tmp_path,
        prom,
        rules=str(ROOT / "grafana" / "alerts.yaml"),
        app={
            "job_name": JOB,
            "file_sd_configs": [{"files": [str(sd)], "refresh_interval": "1s"}],
        },
        gateway=gw,
    )

    def app_env(port: int, version: str) -> dict[str, str]:
        return env(
            APP_VERSION=version,
            GIT_COMMIT="aaa111" if version == OLD else "bbb222",
            LW_SLOWER="0" if version == OLD else "1.0",
            LW_DRAIN_DELAY="0.2",
            LW_PUSHGATEWAY=f"http://127.0.0.1:{gw}",
            LW_JOB=JOB,
            LW_INSTANCE=f"127.0.0.1:{port}",
        )

    def start(stack: contextlib.ExitStack, port: int, version: str) -> Any:
        return stack.enter_context(
            running(uvicorn_argv(port), tmp_path / f"{version}-{port}.log", app_env(port, version))
        )

    def count(version: str, state: str) -> int:
        promql = (
            f'count(lifespan_state{{job="{JOB}", state="{state}"}} == 1 '
            f'and on (job, instance) lifespan_build_info{{version="{version}"}})'
        )
        result = query(prom, promql)
        return int(float(result[0]["value"][1])) if result else 0

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(running(pushgateway(tmp_path, gw), tmp_path / "pushgateway.log"))
            stack.enter_context(running(prometheus, tmp_path / "prometheus.log"))
            procs = {p: start(stack, p, OLD) for p in old_ports}
            wait_for("Prometheus", lambda: http_get(f"http://127.0.0.1:{prom}/-/ready"), 20)
            wait_for("three ready targets on 1.0.0", lambda: count(OLD, "ready") == 3, 45, 0.5)

            # The rolling restart: one instance at a time.
            for old, new in zip(old_ports, new_ports, strict=True):
                procs[old].send_signal(signal.SIGTERM)
                assert procs[old].wait(20) in (0, -signal.SIGTERM)
                procs[new] = start(stack, new, NEW)
                live[live.index(old)] = new
                publish(live)
                wait_for(
                    f"{new} ready",
                    lambda new=new: http_get(f"http://127.0.0.1:{new}/readyz") == "ok",  # type: ignore[misc]
                    20,
                )
            wait_for("three ready targets on 2.0.0", lambda: count(NEW, "ready") == 3, 45, 0.5)

            # Every panel of the dashboard has data.
            d = load()
            variables = {"$job": JOB, "$instance": ".*", **BUILTINS}
            panels = [(t, r, substitute(e, variables)) for t, r, e in targets(d)]
            wait_for_every_panel(prom, panels, 30)
            queries = {(title, ref): q for title, ref, q in panels}

            # Old and new side by side, now (the old from their pushed last words)
            # and over the rollout.
            def versions(title: str, ref: str = "A") -> dict[str, float]:
                result = query(prom, queries[(title, ref)])
                return {r["metric"].get("version", ""): float(r["value"][1]) for r in result}

            ready = wait_for(
                "both versions in time to ready",
                lambda: (v := versions("Time to ready by version")) and {OLD, NEW} <= set(v) and v,
                15,
                step=1,
            )
            startup = versions("Startup duration by version")
            assert {OLD, NEW} <= set(startup), startup
            assert startup[NEW] > startup[OLD] + 0.5, startup  # 2.0.0 sleeps 1 s more
            # (Time to ready includes imports: three old instances importing at
            # once on a shared machine can take longer than one new one.)
            assert all(v > 0 for v in ready.values()), ready
            states = {
                (r["metric"]["version"], r["metric"]["state"]): float(r["value"][1])
                for r in query(prom, queries[("Instances per version and state", "A")])
            }
            assert states.get((NEW, "ready")) == 3, states
            assert states.get((OLD, "stopped")) == 3, states
            seen = {
                r["metric"]["version"]
                for r in query_range(
                    prom, queries[("Instances per version and state", "A")], began, time.time()
                )
            }
            assert {OLD, NEW} <= seen, seen
            revisions = {
                r["metric"]["revision"] for r in query(prom, f'lifespan_build_info{{job="{JOB}"}}')
            }
            assert {"aaa111", "bbb222"} <= revisions, revisions
        except BaseException:
            for log in sorted(tmp_path.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}")
            raise
