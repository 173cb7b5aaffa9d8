"""The machine a benchmark ran on, written into every result file: seconds are comparable only within one."""
import os
import platform
from pathlib import Path


def cpu_name():
    """'<CPU model> (<N> cores)' from /proc/cpuinfo, or what `platform` knows elsewhere."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    return f"{model or platform.processor() or platform.machine()} ({cores} cores)"
