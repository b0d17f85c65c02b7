"""``python -m lifewatch``: the demo, and the operator's commands (``demo``,
``probe``, ``drain``, ``k8s``, ``grafana``: see ``--help``)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import sys
from collections.abc import Sequence
from typing import Any


def _port(text: str) -> int:
    if text.isdecimal() and 1 <= int(text) <= 65535:
        return int(text)
    shown = int(text) if text.isdecimal() else text
    raise argparse.ArgumentTypeError(f"port must be a number from 1 to 65535; got {shown!r}")


def _seconds(text: str) -> float:
    with contextlib.suppress(ValueError):
        if 0 <= (value := float(text)) <= 3600:
            return value
    raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to 3600; got {text!r}")


def _free(host: str, port: int) -> str | None:
    """None if we can listen there, else one line saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror}"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use; try --port {port + 1}"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lifewatch", description="The lifewatch demo, and the operator's commands."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a demo app under uvicorn")
    demo.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    demo.add_argument("--json", action="store_true", help="JSON logs instead of console lines")
    demo.add_argument(
        "--verbose", action="store_true", help="also phase begins and one line per span"
    )
    demo.add_argument(
        "--model-load",
        type=_seconds,
        default=4.0,
        metavar="SECONDS",
        help="how long the background model load takes (default 4)",
    )
    probe = sub.add_parser(
        "probe", help="GET a probe URL: exit 0 on 200, 1 otherwise (a HEALTHCHECK without curl)"
    )
    probe.add_argument("url", help="e.g. http://127.0.0.1:8000/livez")
    probe.add_argument(
        "--timeout", type=_seconds, default=2.0, metavar="S", help="seconds (default 2)"
    )
    drain = sub.add_parser(
        "drain",
        help="a preStop hook: drain every worker of the app run by this user, "
        "return when the drain is over",
    )
    drain.add_argument(
        "--service", help="the app's Lifewatch(service=...) (default: none, as Lifewatch())"
    )
    drain.add_argument(
        "--timeout",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="seconds each worker has to begin draining (default 2)",
    )
    k8s = sub.add_parser("k8s", help="print the Kubernetes Deployment wiring for module:app")
    k8s.add_argument("target", metavar="module:app", help="the app, as uvicorn takes it")
    k8s.add_argument("--name", help="Deployment and container name (default: the service)")
    k8s.add_argument("--image", default="registry.example.com/app:1.0", help="container image")
    k8s.add_argument("--port", type=_port, default=8000, help="the app's port (default 8000)")
    k8s.add_argument("--replicas", type=int, default=3, help="default 3")
    k8s.add_argument(
        "--command",
        dest="command_line",
        help="the container command, as one string (default: uvicorn on --port)",
    )
    k8s.add_argument(
        "--monitoring",
        action="store_true",
        help="add a PodMonitor, a PrometheusRule and a dashboard ConfigMap (Prometheus Operator)",
    )
    k8s.add_argument(
        "--monitoring-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label the Prometheus selects monitors and rules by (e.g. release=kube-prometheus)",
    )
    k8s.add_argument(
        "--dashboard-label",
        default="grafana_dashboard=1",
        metavar="KEY=VALUE",
        help="the label Grafana's sidecar looks for (default grafana_dashboard=1)",
    )
    from ._assets import add_grafana_command, grafana_command

    add_grafana_command(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command in ("k8s", "grafana") and "" not in sys.path:
        sys.path.insert(0, "")  # the app's module is found from here, as uvicorn does
    if args.command == "grafana":
        return grafana_command(args)
    if args.command == "probe":
        from ._client import Failed
        from ._client import probe as get_probe

        try:
            line = get_probe(args.url, args.timeout)
        except Failed as exc:
            print(f"lifewatch probe: {exc}", file=sys.stderr)
            return 1
        print(f"lifewatch probe: {args.url}: {line}", file=sys.stderr)
        return 0
    if args.command == "drain":
        from ._channel import drain as drain_workers

        return drain_workers(args.service, args.timeout)
    if args.command == "k8s":
        return _k8s(args, argv)
    return _demo(args)


def _k8s(args: argparse.Namespace, argv: list[str]) -> int:
    import shlex

    from ._assets import dashboard_config_map, pod_monitor, prometheus_rule, to_yaml
    from ._k8s import deployment, header
    from ._target import TargetError, find_watch

    try:
        watch = find_watch(args.target)
        labels = _labels(args.monitoring_label, "--monitoring-label")
        ((key, value),) = _labels([args.dashboard_label], "--dashboard-label").items()
        module = args.target.partition(":")[0]
        name = args.name or watch.options.service or module.rsplit(".", 1)[-1].replace("_", "-")
        command = ["uvicorn", args.target, "--host", "0.0.0.0", "--port", str(args.port)]
        if args.command_line is not None:
            command = shlex.split(args.command_line)
        manifest = deployment(
            watch,
            name=name,
            image=args.image,
            command=command,
            port=args.port,
            replicas=args.replicas,
        )
        documents = [manifest]
        if args.monitoring:
            # Scraped on the ops port when there is one (the only place with ops_only).
            port = "ops" if watch.options.ops_address is not None else "http"
            pods = manifest["spec"]["template"]["metadata"]["labels"]
            documents += [
                pod_monitor(watch, name=name, port=port, selector=pods, labels=labels),
                prometheus_rule(watch, name=name, labels=labels),
                dashboard_config_map(watch, name=f"{name}-dashboard", label=(key, value)),
            ]
    except (TargetError, ValueError) as exc:
        print(f"lifewatch k8s: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(header(watch, shlex.join(argv)) + to_yaml(*documents))
    return 0


def _labels(pairs: list[str], flag: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE; got {pair!r}")
        labels[key] = value
    return labels


def _demo(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        problem: str | None = "it needs uvicorn and fastapi: pip install 'lifewatch[demo]'"
    else:
        problem = _free(args.host, args.port)
    if problem is not None:
        print(f"lifewatch demo: {problem}", file=sys.stderr)
        return 2

    from ._demo import build_app, configure_logging, configure_tracing, wants_colour
    from ._lifewatch import Lifewatch

    # lifewatch's lines go to stdout, uvicorn's to stderr: each coloured only on a terminal.
    configure_logging(args.json, args.verbose, colour=wants_colour(sys.stdout))
    watch = Lifewatch(service="lifewatch-demo", tracer_provider=configure_tracing())
    app = build_app(watch, args.model_load)
    base = f"http://{args.host}:{args.port}"
    print(
        f"\nlifewatch demo on {base}\n"
        f"  probes:   {base}/livez  {base}/readyz?verbose  {base}/startupz\n"
        f"            (/readyz is 503 until the {args.model_load:g} s background model load ends,\n"
        f"            then 200 with status warn: the cache is down but not critical)\n"
        f"  JSON:     curl -H 'Accept: application/health+json' {base}/readyz\n"
        f"  metrics:  {base}/metrics\n"
        f"  timeline: {base}/lifewatch/timeline  (JSON: {base}/lifewatch/timeline.json)\n"
        "  Ctrl+C shuts down through the shutdown phases.\n",
        file=sys.stderr,
        flush=True,
    )
    # --json: the logging configured above renders uvicorn's lines too.
    quiet_uvicorn: dict[str, Any] = {"log_config": None} if args.json else {}
    colour = wants_colour(sys.stderr)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="info", use_colors=colour, **quiet_uvicorn
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
