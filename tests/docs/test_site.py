"""The docs site: it builds strictly, and its reference pages match the code.

``mkdocs build --strict`` fails on a broken link, a missing page, a snippet
whose file is gone or a docstring the API page cannot render.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lifewatch import Options

from .pages import PAGES, ROOT


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    environ = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=environ,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pages = list((tmp_path / "site").rglob("index.html"))
    assert len(pages) >= 12, pages
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("lifewatch.Lifewatch", "lifewatch.LifewatchMiddleware", "lifewatch.Options"):
        assert f'id="{name}"' in api, name


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        if page.startswith("docs/"):
            assert page.removeprefix("docs/") in nav, page


def test_every_setting_has_a_row_on_the_settings_page() -> None:
    page = PAGES["docs/reference/settings.md"]
    rows = re.findall(r"^\| `(\w+)` \|", page, re.M)
    assert sorted(rows) == sorted(f.name for f in dataclasses.fields(Options))


def normalized(text: str) -> str:
    """The help without its usage lines (their wrapping differs between Pythons)."""
    body = re.sub(r"\Ausage:.*?\n\n", "", text.strip() + "\n", flags=re.S)
    return " ".join(body.replace("optional arguments:", "options:").split())


CLI = re.findall(r"<!-- cli: (.+?) -->\n```text\n(.*?)\n```", PAGES["docs/reference/cli.md"], re.S)


@pytest.mark.parametrize(("command", "documented"), CLI, ids=[c for c, _ in CLI])
def test_the_cli_page_is_what_help_prints(command: str, documented: str) -> None:
    words = shlex.split(command)
    assert words[0] == "lifewatch"
    done = subprocess.run(
        [sys.executable, "-m", "lifewatch", *words[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS="88"),
    )
    assert done.returncode == 0, done.stderr
    assert normalized(documented) == normalized(done.stdout)
    flags = sorted(set(re.findall(r"--[a-z-]+", done.stdout)))
    assert flags == sorted(set(re.findall(r"--[a-z-]+", documented)))


def test_the_cli_page_covers_every_command() -> None:
    commands = {c for c, _ in CLI}
    top = dict(CLI)["lifewatch"]
    listed = re.search(r"\{([a-z0-9,]+)\}", top)
    assert listed
    assert commands == {"lifewatch", *(f"lifewatch {c}" for c in listed[1].split(","))}
