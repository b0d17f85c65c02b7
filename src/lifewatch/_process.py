"""When did this process start? ``time_to_ready`` counts from there."""

from __future__ import annotations

import os
import time

_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """Wall-clock start of this process, read from ``/proc`` as prometheus-client's
    process collector does; elsewhere, the time lifewatch was imported."""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime, clock ticks after boot); comm may hold spaces.
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORTED_AT
