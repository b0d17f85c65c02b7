"""The operator assets: the Grafana dashboard and the alert rules, rendered for one app.

The source is the repository's ``grafana/`` (the wheel's ``lifewatch/grafana/``).
Rendering renames the lifewatch metric names to the app's prefix, nothing
else, and sets the thresholds derived from the app's settings where the
source marks them: in PromQL ``<number> # lifewatch:NAME``, in an annotation
``{{/* lifewatch:NAME */}}<number>``, in the dashboard a step with
``"lifewatchThreshold": "NAME"``; ``NAME`` may carry a factor
(``startup_slow*0.5``). ``to_yaml`` writes the Prometheus Operator resources.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ._metrics import Metrics
from ._options import Options
from ._validate import validate_namespace

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:  # 3.10: where it was then
        from importlib.abc import Traversable

    from ._lifewatch import Lifewatch

DASHBOARD = "lifewatch.json"
RULES = "alerts.yaml"
DEFAULT_NAMESPACE = "lifespan"
SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count", "_info")
# The threshold step of a dashboard panel that follows a setting.
MARK_KEY = "lifewatchThreshold"


def _find(name: str) -> Traversable | Path | None:
    """``name`` in the installed package, else in the checkout; None if in neither."""
    packaged = resources.files("lifewatch") / "grafana" / name
    checkout = Path(__file__).resolve().parents[2] / "grafana" / name
    return next((found for found in (packaged, checkout) if found.is_file()), None)


def asset_path(name: str) -> str | None:
    found = _find(name)
    return None if found is None else str(found)


def asset_text(name: str) -> str:
    found = _find(name)
    if found is None:
        raise FileNotFoundError(
            f"lifewatch's {name} is neither in the installed package (lifewatch/grafana/) "
            "nor in a checkout (grafana/): reinstall lifewatch from a wheel or sdist"
        )
    return found.read_text(encoding="utf-8")


def metric_families(namespace: str = DEFAULT_NAMESPACE) -> tuple[str, ...]:
    """The names of lifewatch's metric families, as ``Lifewatch(namespace=...)`` registers them."""
    bank = Metrics(CollectorRegistry(), validate_namespace(namespace))
    return tuple(family.name for collector in bank.all() for family in collector.describe())


def rename_metrics(text: str, namespace: str) -> str:
    """``text`` with every lifewatch metric name moved to ``namespace``, nothing else."""
    validate_namespace(namespace)
    if namespace == DEFAULT_NAMESPACE:
        return text
    prefix = DEFAULT_NAMESPACE + "_"
    rests = sorted((f.removeprefix(prefix) for f in metric_families()), key=len, reverse=True)
    names = "|".join(map(re.escape, rests))
    suffixes = "|".join(map(re.escape, SUFFIXES))
    # A whole metric name: no name character before the prefix or after the name.
    pattern = re.compile(
        rf"(?<![A-Za-z0-9_:]){re.escape(prefix)}(?=(?:{names})(?:{suffixes})?(?![A-Za-z0-9_:]))"
    )
    return pattern.sub(lambda _: namespace + "_", text)


def thresholds(options: Options | None = None) -> dict[str, float]:
    """The thresholds the markers name, in seconds: a slow startup or shutdown
    warns at three quarters of its timeout, before the cut (60 s without one)."""
    o = options if options is not None else Options()
    return {
        "startup_slow": 60.0 if o.startup_timeout is None else 0.75 * o.startup_timeout,
        "shutdown_slow": 0.75 * o.shutdown_timeout,
        "shutdown_timeout": o.shutdown_timeout,
        "drain_delay": o.drain_delay,
    }


def _value(spec: str, values: Mapping[str, float]) -> float:
    name, _, factor = spec.partition("*")
    if name not in values:
        raise ValueError(
            f"unknown threshold marker lifewatch:{spec}; known: {', '.join(sorted(values))}"
        )
    return values[name] * (float(factor) if factor else 1.0)


def _number(value: float) -> int | float:
    value = round(value, 3)
    return int(value) if value == int(value) else value


_NUM = r"\d+(?:\.\d+)?"
_PROMQL_MARK = re.compile(rf"(?P<num>{_NUM})(?P<mark>[ \t]*#[ \t]*lifewatch:(?P<spec>[\w.*]+))")
_TEMPLATE_MARK = re.compile(
    rf"(?P<mark>\{{\{{/\*[ \t]*lifewatch:(?P<spec>[\w.*]+)[ \t]*\*/\}}\}})(?P<num>{_NUM})"
)


def set_thresholds(text: str, values: Mapping[str, float]) -> str:
    """The marked numbers of a rules file set from ``values``."""

    def number(m: re.Match[str]) -> str:
        return str(_number(_value(m["spec"], values)))

    text = _PROMQL_MARK.sub(lambda m: number(m) + m["mark"], text)
    return _TEMPLATE_MARK.sub(lambda m: m["mark"] + number(m), text)


def render_dashboard(
    namespace: str = DEFAULT_NAMESPACE,
    options: Options | None = None,
    *,
    source: str | None = None,
) -> str:
    """The dashboard's JSON for metrics prefixed ``namespace``, thresholds from
    ``options``; ``source`` replaces the shipped dashboard."""
    values = thresholds(options)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if isinstance(out.get(MARK_KEY), str):
                out["value"] = _number(_value(out[MARK_KEY], values))
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return rename_metrics(node, namespace) if isinstance(node, str) else node

    dashboard = json.loads(asset_text(DASHBOARD) if source is None else source)
    return json.dumps(walk(dashboard), indent=2, ensure_ascii=False) + "\n"


def render_rules(
    namespace: str = DEFAULT_NAMESPACE,
    options: Options | None = None,
    *,
    source: str | None = None,
) -> str:
    """The alert rules for metrics prefixed ``namespace``, thresholds from
    ``options``; ``source`` replaces the shipped rules."""
    values = thresholds(options)
    text = asset_text(RULES) if source is None else source
    header = (
        f"# Rendered by `python -m lifewatch grafana` for namespace={namespace!r}: "
        f"startup slow past {_number(values['startup_slow'])}s, "
        f"shutdown slow past {_number(values['shutdown_slow'])}s.\n"
    )
    return header + set_thresholds(rename_metrics(text, namespace), values)


_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class Verbatim(str):
    """A block of YAML text, placed as is (indented) under its key by ``to_yaml``."""


def _name(name: str) -> str:
    if not isinstance(name, str) or not _DNS_NAME.match(name) or ".." in name:
        raise ValueError(
            f"name must be a Kubernetes object name (lowercase letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit); got {name!r}"
        )
    return name


def _metadata(name: str, labels: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": _name(name)}
    if namespace is not None:
        meta["namespace"] = _name(namespace)
    return {**meta, "labels": {"app.kubernetes.io/name": name, **labels}}


def pod_monitor(
    watch: Lifewatch,
    *,
    name: str,
    port: str = "http",
    selector: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    k8s_namespace: str | None = None,
) -> dict[str, Any]:
    """A ``PodMonitor`` scraping ``metrics_path`` on the named port of the pods
    ``selector`` picks; ``labels``: what the Prometheus' ``podMonitorSelector`` wants."""
    path = watch.options.metrics_path
    if path is None:
        raise ValueError("the app serves no /metrics (metrics_path=None): nothing to scrape")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(name, labels or {}, k8s_namespace),
        "spec": {
            "selector": {"matchLabels": dict(selector or {"app": name})},
            "podMetricsEndpoints": [{"port": port, "path": path, "interval": "15s"}],
        },
    }


def prometheus_rule(
    watch: Lifewatch,
    *,
    name: str,
    labels: Mapping[str, str] | None = None,
    k8s_namespace: str | None = None,
) -> dict[str, Any]:
    """A ``PrometheusRule`` of the alert rules rendered for the watch;
    ``labels``: what the Prometheus' ``ruleSelector`` asks for."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(name, labels or {}, k8s_namespace),
        # The rules file is a mapping whose one key is `groups`, as `spec` wants.
        "spec": Verbatim(render_rules(watch.options.namespace, watch.options)),
    }


def dashboard_config_map(
    watch: Lifewatch,
    *,
    name: str,
    label: tuple[str, str] = ("grafana_dashboard", "1"),
    labels: Mapping[str, str] | None = None,
    k8s_namespace: str | None = None,
) -> dict[str, Any]:
    """A ``ConfigMap`` of the dashboard rendered for the watch, with the
    ``label`` Grafana's sidecar watches."""
    key, value = label
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(name, {**(labels or {}), key: value}, k8s_namespace),
        "data": {DASHBOARD: render_dashboard(watch.options.namespace, watch.options)},
    }


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _block(text: str, indent: str) -> str | None:
    """A literal block for multi-line text, when YAML reads it back exactly."""
    if (
        "\n" not in text
        or text[:1] in " \t\n"
        or text.endswith("\n\n")
        or any(c in text for c in "\r\x85\u2028\u2029")
    ):
        return None
    chomp = "" if text.endswith("\n") else "-"
    body = text.removesuffix("\n")
    return f"|{chomp}\n" + "\n".join(indent + line if line else "" for line in body.split("\n"))


def _emit(value: Any, indent: str, out: list[str], key: str | None) -> None:
    head = f"{indent}{_scalar(key)}:" if key is not None else None
    if isinstance(value, Verbatim):
        assert head is not None, "verbatim YAML goes under a key"
        out.append(head)
        out.extend(indent + "  " + line if line.strip() else "" for line in value.splitlines())
    elif isinstance(value, dict) and value:
        if head is not None:
            out.append(head)
            indent += "  "
        for k, v in value.items():
            _emit(v, indent, out, str(k))
    elif isinstance(value, list) and value:
        if head is not None:
            out.append(head)
        for item in value:
            lines: list[str] = []
            _emit(item, indent + "  ", lines, None)
            first = lines[0]
            out.append(f"{indent}- {first[len(indent) + 2 :]}")
            out.extend(lines[1:])
    else:
        if isinstance(value, (dict, list)):
            text = "{}" if isinstance(value, dict) else "[]"
        elif isinstance(value, str) and (block := _block(value, indent + "  ")) is not None:
            text = block
        else:
            text = _scalar(value)
        out.append(f"{head} {text}" if head is not None else f"{indent}{text}")


def to_yaml(*documents: Mapping[str, Any]) -> str:
    """The documents as YAML, ``---`` between them; no YAML library needed."""
    parts = []
    for document in documents:
        lines: list[str] = []
        _emit(dict(document), "", lines, None)
        parts.append("\n".join(lines) + "\n")
    return "---\n".join(parts)


def add_grafana_command(sub: Any) -> None:
    p = sub.add_parser(
        "grafana",
        help="write the Grafana dashboard and the alert rules for an app's settings",
        description="Write the Grafana dashboard and the Prometheus alert rules, renamed for "
        "the app's metric prefix and with thresholds from its settings.",
    )
    p.add_argument("--app", metavar="MODULE:APP", help="the app (or its Lifewatch) to read")
    p.add_argument(
        "--namespace", metavar="NAME", help="the metric prefix (default: the app's, or lifespan)"
    )
    p.add_argument("--out", metavar="DIR", type=Path, help=f"write {DASHBOARD} and {RULES} there")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--dashboard", action="store_true", help=f"only {DASHBOARD}")
    which.add_argument("--rules", action="store_true", help=f"only {RULES}")


def grafana_command(args: argparse.Namespace) -> int:
    """``python -m lifewatch grafana``: one file to stdout, or both into ``--out``."""

    def fail(message: str) -> int:
        print(f"lifewatch grafana: {message}", file=sys.stderr)
        return 2

    options: Options | None = None
    if args.app is not None:
        from ._target import TargetError, find_watch

        try:
            options = find_watch(args.app).options
        except TargetError as exc:
            return fail(str(exc))
    namespace = args.namespace
    if namespace is None:
        namespace = options.namespace if options is not None else DEFAULT_NAMESPACE
    render = {DASHBOARD: render_dashboard, RULES: render_rules}
    wanted = [DASHBOARD] if args.dashboard else [RULES] if args.rules else [DASHBOARD, RULES]
    try:
        texts = {name: render[name](namespace, options) for name in wanted}
    except ValueError as exc:  # the namespace
        return fail(str(exc))
    if args.out is None:
        if len(wanted) != 1:
            return fail("say --dashboard or --rules to print one file, or --out DIR for both")
        sys.stdout.write(texts[wanted[0]])
        return 0
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (args.out / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write to {args.out}: {exc.strerror or exc}")
    for name in wanted:
        print(f"wrote {args.out / name} (namespace={namespace})", file=sys.stderr)
    return 0
