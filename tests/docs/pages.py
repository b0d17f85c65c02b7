"""The Markdown the project publishes: README.md and every page under docs/.

A line ``--8<-- "PATH"`` (pymdownx.snippets, as mkdocs renders it) is replaced
by the file at PATH, so a block that includes an example is tested as the
example itself, never as a copy.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def expand(text: str) -> str:
    """The page as the site renders it: each snippet line replaced by its file."""
    return SNIPPET.sub(lambda m: (ROOT / m[1]).read_text().rstrip("\n"), text)


PAGES: dict[str, str] = {
    str(path.relative_to(ROOT)): expand(path.read_text())
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
}
TEXT = "\n".join(PAGES.values())
