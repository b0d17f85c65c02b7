"""Style is part of the build: ruff and mypy --strict run with the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# .ci/run checks style in one of its runs (one interpreter), not in each.
checked_elsewhere = pytest.mark.skipif(
    os.environ.get("LIFEWATCH_SKIP_STYLE") == "1",
    reason="LIFEWATCH_SKIP_STYLE=1: another run of .ci/run checks the style",
)


def run(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@checked_elsewhere
def test_ruff_check() -> None:
    run("ruff", "check", "src", "tests", "examples", "benchmarks", "scripts")


@checked_elsewhere
def test_ruff_format() -> None:
    run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "scripts")


@checked_elsewhere
def test_mypy_strict() -> None:
    run("mypy")


def test_py_typed_ships() -> None:
    assert (ROOT / "src" / "lifewatch" / "py.typed").exists()
