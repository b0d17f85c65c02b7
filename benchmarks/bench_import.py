"""``import lifewatch`` on top of ``import fastapi``, each in a fresh interpreter.

python benchmarks/bench_import.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

PROBE = """
import time
import fastapi
t = time.perf_counter()
import lifewatch
print(time.perf_counter() - t)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    ms = []
    for _ in range(args.rounds):
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
        out.check_returncode()
        ms.append(float(out.stdout.strip().splitlines()[-1]) * 1000)
    print(
        f"import lifewatch after fastapi: {statistics.median(ms):.1f} ms median "
        f"[{min(ms):.1f} .. {max(ms):.1f}] over {args.rounds} fresh interpreters"
    )


if __name__ == "__main__":
    main()
