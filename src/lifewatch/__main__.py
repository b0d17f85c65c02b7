"""``python -m lifewatch demo``: see what lifewatch shows, in one command."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Sequence
from typing import Any


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"port must be a number from 1 to 65535; got {text!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be a number from 1 to 65535; got {port}")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 0 to 3600; got {text!r}"
        )
    return value


def _free(host: str, port: int) -> str | None:
    """None if we can listen there, else one line saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
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
    parser = argparse.ArgumentParser(prog="lifewatch", description=__doc__)
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
    args = parser.parse_args(argv)

    try:
        import uvicorn
    except ImportError:
        print(
            "lifewatch demo needs uvicorn and fastapi: pip install 'lifewatch[demo]'",
            file=sys.stderr,
        )
        return 2
    problem = _free(args.host, args.port)
    if problem is not None:
        print(f"lifewatch demo: {problem}", file=sys.stderr)
        return 2

    from ._demo import build_app, configure_logging, configure_tracing
    from ._lifewatch import Lifewatch

    configure_logging(args.json, args.verbose)
    watch = Lifewatch(
        service="lifewatch-demo",
        tracer_provider=configure_tracing(),
        timeline_path="/lifewatch/timeline",
    )
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
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", **quiet_uvicorn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
