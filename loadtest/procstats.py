"""CPU time and memory of a process from /proc (Linux), without a dependency.

`/proc/<pid>/stat` gives user+system CPU ticks, `/proc/<pid>/status` the resident
set now (VmRSS) and its peak (VmHWM). Two samples give the CPU share over the
window between them; psutil would do the same with one more dependency.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


class ProcSample(NamedTuple):
    wall_s: float
    cpu_s: float
    rss_kb: int
    peak_rss_kb: int


def sample(pid: int) -> ProcSample | None:
    """The process's counters now; None if it is gone (or this is not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing ')' do not.
    fields = stat[stat.rindex(")") + 2:].split()
    cpu_ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    memory = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0])
    return ProcSample(time.monotonic(), cpu_ticks / TICKS_PER_SECOND, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


def usage(role: str, first: ProcSample | None, last: ProcSample | None) -> dict[str, object]:
    """One process's line of the report: CPU % over the window, RSS at both ends, peak RSS."""
    if first is None or last is None or last.wall_s <= first.wall_s:
        return {"role": role, "cpu_percent": None, "peak_rss_mb": None, "rss_start_mb": None, "rss_end_mb": None}
    return {"role": role,
            "cpu_percent": round(100 * (last.cpu_s - first.cpu_s) / (last.wall_s - first.wall_s), 1),
            "peak_rss_mb": round(last.peak_rss_kb / 1024, 1),
            "rss_start_mb": round(first.rss_kb / 1024, 1),
            "rss_end_mb": round(last.rss_kb / 1024, 1)}
