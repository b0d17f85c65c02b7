"""``python -m lifewatch k8s module:app``: the Kubernetes wiring, from the app's own settings.

``deployment`` turns a ``Lifewatch``'s settings (found by ``_target``) into a
Deployment whose probes, ``preStop`` drain and grace period agree with them;
the kubelet's probes never go to a listener bound to loopback (it connects
to the pod's IP: such a pod would never be ready);
``_assets.to_yaml`` prints it, with the Prometheus Operator resources when
asked (``--monitoring``).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from ._lifewatch import Lifewatch
from ._validate import validate_address

MARGIN_S = 5
"""Seconds of grace beyond drain + shutdown: the server finishing requests in flight."""


def _timeout_s(watch: Lifewatch, probe: str) -> int:
    """The probe's timeout: above its slowest check's, never under the kubelet's 1 s."""
    slowest = max((c.timeout for c in watch.checks.values() if probe in c.probes), default=0.0)
    return max(1, math.ceil(slowest + 0.5))


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def deployment(
    watch: Lifewatch,
    *,
    name: str,
    image: str,
    command: list[str],
    port: int = 8000,
    replicas: int = 3,
) -> dict[str, Any]:
    """A Deployment whose probes, ``preStop`` drain and grace period follow ``watch``."""
    options = watch.options
    ports: list[dict[str, Any]] = [{"name": "http", "containerPort": port}]
    probe_port: str = "http"
    local_port = port
    if options.ops_address is not None:
        ops_host, ops_port = validate_address(options.ops_address, "ops_address")
        if _loopback(ops_host):
            raise ValueError(
                f"ops_address={options.ops_address!r} listens on loopback only, and the "
                "kubelet probes the pod's IP: the pod would never be ready; use "
                f"ops_address='0.0.0.0:{ops_port}'"
            )
        ports.append({"name": "ops", "containerPort": ops_port})
        probe_port, local_port = "ops", ops_port
    metrics_port = local_port if options.ops_only else port

    def http_get(path: str | None) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": probe_port}}

    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "ports": ports,
    }
    # Startup: as long as startup may take (startup_timeout, else 5 minutes).
    startup_budget = (options.startup_timeout or 300.0) + 10.0
    if options.startupz_path is not None:
        container["startupProbe"] = {
            **http_get(options.startupz_path),
            "periodSeconds": 2,
            "timeoutSeconds": _timeout_s(watch, "startup"),
            "failureThreshold": math.ceil(startup_budget / 2),
        }
    # Readiness: the first 503 takes the pod out, seen within the drain.
    if options.readyz_path is not None:
        container["readinessProbe"] = {
            **http_get(options.readyz_path),
            "periodSeconds": max(1, min(5, math.floor(options.drain_delay) or 5)),
            "timeoutSeconds": _timeout_s(watch, "readiness"),
            "failureThreshold": 1,
        }
    if options.livez_path is not None:
        container["livenessProbe"] = {
            **http_get(options.livez_path),
            "periodSeconds": 10,
            "timeoutSeconds": _timeout_s(watch, "liveness"),
            "failureThreshold": 3,
        }
    pod: dict[str, Any] = {}
    if options.drain_delay > 0:
        drain = ["python", "-m", "lifewatch", "drain"]
        if watch.options.service:
            drain += ["--service", watch.options.service]
        container["lifecycle"] = {"preStop": {"exec": {"command": drain}}}
        # The drain channel's private directories live in the temp dir: a
        # writable /tmp, even with readOnlyRootFilesystem.
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
        pod["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    grace = math.ceil(options.drain_delay + options.shutdown_timeout + MARGIN_S)
    labels = {"app": name}
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port)}
    if options.metrics_path is not None:
        annotations["prometheus.io/path"] = options.metrics_path
    else:
        annotations["prometheus.io/scrape"] = "false"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [container],
                    **pod,
                },
            },
        },
    }


def header(watch: Lifewatch, arguments: str) -> str:
    """The comment that says where each number comes from (``arguments``: the command's)."""
    o = watch.options
    grace = math.ceil(o.drain_delay + o.shutdown_timeout + MARGIN_S)
    lines = [
        f"Generated by: python -m lifewatch {arguments}",
        f"From its Lifewatch: drain_delay={o.drain_delay:g}s, "
        f"shutdown_timeout={o.shutdown_timeout:g}s, "
        f"ops_address={o.ops_address or 'off'}.",
        f"terminationGracePeriodSeconds {grace} = drain_delay + shutdown_timeout "
        f"+ {MARGIN_S} s for the server to finish requests in flight.",
        "preStop drains (readiness 503, the app still serving) before SIGTERM, under any server.",
    ]
    if o.drain_delay > 0:
        lines += [
            "The preStop hook reaches every worker through directories private to the app's",
            "user in /tmp (no HTTP request drains): /tmp is an emptyDir, so it works with",
            "readOnlyRootFilesystem: true. Run the hook as the app's user (the container's).",
        ]
    return "".join(f"# {line}\n" for line in lines)
