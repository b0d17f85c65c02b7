"""What a release promises: its version, its changelog entry, its metadata."""

from __future__ import annotations

import re
import sys

from lifewatch import __version__

from .pages import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest's own dependency on 3.10
    import tomli as tomllib

CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_changelog_has_unreleased_on_top_then_one_entry_per_release() -> None:
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", CHANGELOG, re.M)
    assert releases[0] == ("Unreleased", "")
    versions = [v for v, _ in releases[1:]]
    assert versions[0] == __version__
    assert len(versions) == len(set(versions))
    assert all(date for _, date in releases[1:])


def test_released_entries_use_keep_a_changelog_headings_only() -> None:
    released = CHANGELOG[CHANGELOG.index(f"## [{__version__}]") :]
    headings = set(re.findall(r"^### (.+)$", released, re.M))
    assert headings <= KINDS, headings - KINDS


def test_python_classifiers_are_the_versions_ci_runs() -> None:
    runs = re.search(r'^all_runs="([^"]+)"', (ROOT / ".ci" / "run").read_text(), re.M)
    assert runs
    proven = {run.removesuffix("-floors") for run in runs[1].split()}
    claimed = {
        c.rsplit(" :: ", 1)[1]
        for c in PYPROJECT["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert claimed == proven


def test_development_tools_are_groups_not_extras() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == {"fastapi", "sqlalchemy", "httpx", "redis", "testing", "demo"}
    assert {"test", "bench", "docs"} <= set(PYPROJECT["dependency-groups"])
    assert set(PYPROJECT["project"]["urls"]) == {"Documentation", "Source", "Changelog", "Issues"}


def test_the_test_command_installs_the_groups_with_a_pip_that_knows_them() -> None:
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- test-command -->\n```bash\n", 1)[1].split("\n```", 1)[0]
    upgrade = command.index("pip install -U pip")
    assert upgrade < command.index("--group test") and "--group docs" in command
