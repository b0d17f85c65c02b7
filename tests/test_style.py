"""Style is part of the build: ruff and mypy --strict run with the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check() -> None:
    run("ruff", "check", "src", "tests", "benchmarks")


def test_ruff_format() -> None:
    run("ruff", "format", "--check", "src", "tests", "benchmarks")


def test_mypy_strict() -> None:
    run("mypy")


def test_py_typed_ships() -> None:
    assert (ROOT / "src" / "lifewatch" / "py.typed").exists()
