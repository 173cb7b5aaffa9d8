"""The machine a benchmark ran on, written into every result file: seconds are comparable only within one."""
import os
import platform
from pathlib import Path


def cpu_name():
    """'<CPU model> (<N> cores)' from /proc/cpuinfo, or what `platform` knows elsewhere."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({cores} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({cores} cores)"
