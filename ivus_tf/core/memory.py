"""How much memory this machine (or its container) gives a process: the bound of the batch-size guards."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_bytes() -> int:
    """Physical memory, or the container's cgroup limit when that is lower; 0 when unknown."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        physical = 0
    limits = [physical] if physical > 0 else []
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (1 << 60):
            limits.append(int(text))
    return min(limits) if limits else 0


def gigabytes(count: float) -> str:
    """`12.3 GB` (decimal gigabytes, one decimal; two below 1 GB)."""
    return f"{count / 1e9:.{2 if count < 1e9 else 1}f} GB"
