"""The wheel carries the licence, the dashboard and the rules, and the installed
package finds them.

The wheel is built from this tree (hatchling, no build isolation: no
network), installed with ``--no-deps`` in a fresh venv that sees the current
venv's packages for the dependencies, and asked through the CLI, run from a
directory that has no checkout in sight.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.support.servers import ROOT


def run(argv: list[str], cwd: Path, environ: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=cwd, env=environ)
    assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def test_the_installed_wheel_holds_the_licence_and_renders_the_assets(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    source = tmp_path / "src-copy"  # built from a copy: the build writes nothing in the tree
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*_cache", "dist", "build"),
    )
    wheels = tmp_path / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        tmp_path,
        environ,
    )  # fmt: skip
    (wheel,) = wheels.glob("lifewatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        licences = [n for n in archive.namelist() if n.endswith("/LICENSE")]
        assert licences, archive.namelist()
        assert archive.read(licences[0]).decode() == (ROOT / "LICENSE").read_text()
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        assert "License-Expression: MIT" in archive.read(metadata).decode()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, environ)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    tmp_path, environ).strip())  # fmt: skip
    # The dependencies come from the current venv, after the fresh venv's own packages.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        tmp_path,
        environ,
    )  # fmt: skip

    where = run(
        [str(python), "-c", "import lifewatch._assets as a; print(a.asset_path('alerts.yaml'))"],
        tmp_path,
        environ,
    ).strip()
    assert Path(where) == site / "lifewatch" / "grafana" / "alerts.yaml", where
    for name in ("lifewatch.json", "alerts.yaml"):
        packaged = site / "lifewatch" / "grafana" / name
        assert packaged.read_text() == (ROOT / "grafana" / name).read_text()

    out = tmp_path / "out"
    run([str(python), "-m", "lifewatch", "grafana", "--namespace", "orders", "--out", str(out)],
        tmp_path, environ)  # fmt: skip
    assert "orders_state" in (out / "lifewatch.json").read_text()
    assert "orders_state" in (out / "alerts.yaml").read_text()
    dashboard = run([str(python), "-m", "lifewatch", "grafana", "--dashboard"], tmp_path, environ)
    assert dashboard == (ROOT / "grafana" / "lifewatch.json").read_text()
