"""What is running, for the fleet view: the service's version and revision.

Given to ``Lifewatch(version=..., revision=...)``, or else read once from
where deploys put them: ``OTEL_RESOURCE_ATTRIBUTES`` (``service.version``,
``vcs.ref.head.revision``), then the variables below (``SOURCE_COMMIT``:
Dokku, Coolify; ``SOURCE_VERSION``: Heroku), then the installed distribution
named like ``service`` (its version, and the commit a ``pip install git+...``
recorded). An unknown one is ``""``, which Prometheus treats as no label.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import unquote

VERSION_VARIABLES = ("APP_VERSION", "SERVICE_VERSION")
REVISION_VARIABLES = ("GIT_COMMIT", "GIT_SHA", "COMMIT_SHA", "SOURCE_COMMIT", "SOURCE_VERSION")
OTEL_VERSION = "service.version"
OTEL_REVISION = "vcs.ref.head.revision"


class BuildInfo(NamedTuple):
    """The ``lifespan_build_info`` labels."""

    service: str = ""
    version: str = ""
    revision: str = ""


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str:
    return next((v for v in (environ.get(n, "").strip() for n in names) if v), "")


def _distribution(service: str) -> tuple[str, str]:
    """The installed distribution's version and recorded VCS commit, if any."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(service)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return "", ""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        commit = str(direct.get("vcs_info", {}).get("commit_id", ""))
    except (ValueError, AttributeError, OSError):
        commit = ""
    return dist.version or "", commit


def resolve_build(
    service: str | None,
    version: str | None,
    revision: str | None,
    environ: Mapping[str, str] | None = None,
) -> BuildInfo:
    """The build of this process: what was given, else the environment, else metadata."""
    environ = os.environ if environ is None else environ
    otel = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep:
            otel[key.strip()] = unquote(value.strip())
    if version is None:
        version = otel.get(OTEL_VERSION, "") or _first(environ, VERSION_VARIABLES)
    if revision is None:
        revision = otel.get(OTEL_REVISION, "") or _first(environ, REVISION_VARIABLES)
    if service and (not version or not revision):
        dist_version, dist_commit = _distribution(service)
        version = version or dist_version
        revision = revision or dist_commit
    return BuildInfo(service or "", version, revision)
