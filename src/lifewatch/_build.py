"""What is running: the service's version and revision, for the fleet view.

Given to ``Lifewatch(version=..., revision=...)``, or else read once, at
construction, from where deploys usually put them:

- version: ``OTEL_RESOURCE_ATTRIBUTES`` (``service.version=...``), then
  ``APP_VERSION``, ``SERVICE_VERSION``, then the version of the installed
  distribution named like ``service``;
- revision: ``OTEL_RESOURCE_ATTRIBUTES`` (``vcs.ref.head.revision=...``), then
  ``GIT_COMMIT``, ``GIT_SHA``, ``COMMIT_SHA``, ``SOURCE_COMMIT`` (Dokku,
  Coolify), ``SOURCE_VERSION`` (Heroku builds), then the commit a
  ``pip install git+...`` of that distribution recorded.

An unknown one is ``""``, which Prometheus treats as no label at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import unquote

VERSION_VARIABLES = ("APP_VERSION", "SERVICE_VERSION")
REVISION_VARIABLES = ("GIT_COMMIT", "GIT_SHA", "COMMIT_SHA", "SOURCE_COMMIT", "SOURCE_VERSION")
OTEL_VERSION = "service.version"
OTEL_REVISION = "vcs.ref.head.revision"


class BuildInfo:
    """The ``lifespan_build_info`` labels: service, version, revision.

    A plain class, not a dataclass: making a dataclass costs about a
    millisecond of every ``import lifewatch``.
    """

    __slots__ = ("revision", "service", "version")

    def __init__(self, service: str = "", version: str = "", revision: str = "") -> None:
        self.service = service
        self.version = version
        self.revision = revision

    def labels(self) -> tuple[str, str, str]:
        return (self.service, self.version, self.revision)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BuildInfo) and other.labels() == self.labels()

    def __hash__(self) -> int:
        return hash(self.labels())

    def __repr__(self) -> str:
        return "BuildInfo(service={!r}, version={!r}, revision={!r})".format(*self.labels())


def _otel_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep:
            found[key.strip()] = unquote(value.strip())
    return found


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


def _distribution(service: str) -> tuple[str, str]:
    """The installed distribution's version and recorded VCS commit, if any."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(service)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return "", ""
    commit = ""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        commit = str(direct.get("vcs_info", {}).get("commit_id", ""))
    except (ValueError, AttributeError, OSError):
        pass
    return dist.version or "", commit


def resolve_build(
    service: str | None,
    version: str | None,
    revision: str | None,
    environ: Mapping[str, str] | None = None,
) -> BuildInfo:
    """The build of this process: what was given, else the environment, else metadata."""
    environ = os.environ if environ is None else environ
    otel = _otel_attributes(environ)
    if version is None:
        version = otel.get(OTEL_VERSION, "") or _first(environ, VERSION_VARIABLES)
    if revision is None:
        revision = otel.get(OTEL_REVISION, "") or _first(environ, REVISION_VARIABLES)
    if service and (not version or not revision):
        dist_version, dist_commit = _distribution(service)
        version = version or dist_version
        revision = revision or dist_commit
    return BuildInfo(service or "", version, revision)
