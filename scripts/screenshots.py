"""Take the docs' screenshots: the demo's timeline page and the demo's terminal.

    python scripts/screenshots.py [--out docs/images]

Starts ``python -m lifewatch demo`` on a free port, waits for ``/readyz`` to
answer 200 (the background model load over), has headless Chromium
photograph ``/lifewatch/timeline``, stops the demo with SIGINT and
photographs its log as a terminal would show it. Nothing is drawn by hand:
rerun it after changing the timeline page or the demo.
"""

from __future__ import annotations

import argparse
import html
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the demo never became ready at {url}")


def photograph(chromium: str, url: str, png: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--window-size={size}", f"--screenshot={png}", url],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
    print(f"wrote {png}")


TERMINAL = """<!doctype html><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e2e; }}
pre {{ margin: 0; padding: 16px 20px; color: #cdd6f4;
      font: 13px/1.45 "DejaVu Sans Mono", monospace; white-space: pre-wrap; }}
.prompt {{ color: #a6e3a1; }}
</style><pre><span class="prompt">$ python -m lifewatch demo</span>
{log}</pre>"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: install it (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "lifewatch", "demo", "--port", str(port), "--model-load", "1.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/readyz", time.monotonic() + 60)
        time.sleep(0.5)  # the model load's end and the cache check logged
        photograph(chromium, f"{base}/lifewatch/timeline", args.out / "timeline.png", "1100,470")
        demo.send_signal(signal.SIGINT)
        log, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    log = log.replace(str(port), "8000").replace(str(ROOT), "/srv/lifewatch")
    with tempfile.TemporaryDirectory() as where:
        page = Path(where) / "terminal.html"
        page.write_text(TERMINAL.format(log=html.escape(log.rstrip("\n"))))
        photograph(chromium, page.as_uri(), args.out / "demo.png", "1100,760")
    return 0


if __name__ == "__main__":
    sys.exit(main())
