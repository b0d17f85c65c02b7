"""When did this process start? ``time_to_ready`` counts from there."""

from __future__ import annotations

import os
import time

_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """Wall-clock start of this process, so imports count toward time to ready.

    Read from ``/proc`` on Linux (what prometheus-client's process collector
    uses too); elsewhere the time lifewatch was imported is the best known.
    """
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime, clock ticks after boot); comm may hold spaces.
        fields = stat[stat.rindex(b")") + 2 :].split()
        ticks = int(fields[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    boot = float(line.split()[1])
                    return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORTED_AT
