"""scripts/screenshots.py makes every picture the docs show, with headless Chromium."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

from tests.support.servers import env

from .pages import PAGES, ROOT

SHOWN = sorted({Path(m).name for t in PAGES.values() for m in re.findall(r"\]\(([^)]+\.png)\)", t)})


def test_every_picture_the_docs_show_is_committed() -> None:
    assert {"timeline.png", "demo.png"} <= set(SHOWN)
    for name in SHOWN:
        assert (ROOT / "docs" / "images" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_the_script_takes_every_picture_the_docs_show(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/screenshots.py", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in SHOWN:
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 800 and height >= 400, (name, width, height)
