"""How many CPUs this process may really use: its affinity mask, capped by a container CPU quota.

`os.cpu_count()` reports the host's cores. In a container limited to 2 CPUs on a 64-core node,
an ONNX Runtime pool of 64 threads gets throttled by the quota and runs slower than 2 threads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 `cpu.max` or v1 CFS quota), None when unlimited."""
    v2 = cgroup_root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    for v1 in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct"):
        quota_file, period_file = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    return None


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by the CPU quota rounded up."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota = cpu_quota(cgroup_root)
    except (OSError, ValueError):  # an unreadable or odd cgroup file: trust the affinity mask
        quota = None
    return affinity if quota is None else max(1, min(affinity, math.ceil(quota)))


CPUINFO = Path("/proc/cpuinfo")


def cpu_description(cpuinfo: Path = CPUINFO) -> tuple[str, frozenset[str]]:
    """This CPU's model name and instruction-set flags, as the kernel reports them (empty where
    there is no /proc/cpuinfo, e.g. macOS: nothing then counts as supported)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown CPU", frozenset()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # the first processor's block is enough: cores of one machine share flags
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name", "unknown CPU"), frozenset(fields.get("flags", "").split())
