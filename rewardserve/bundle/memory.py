"""How much memory this process may use: its container's limit (cgroup v2 `memory.max`, or v1's
`memory.limit_in_bytes`), else the machine's. In a pod limited to 4 GiB on a 512 GiB node,
budgets sized from the node's memory would get the process killed."""

from __future__ import annotations

from pathlib import Path

from rewardserve.bundle.cpus import CGROUP_ROOT

MEMINFO = Path("/proc/meminfo")


def memory_limit(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """Bytes allowed by the cgroup's memory limit, None when unlimited or unreadable."""
    for limit in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        # v1 writes "no limit" as a huge number (a page-rounded 2**63 - 1)
        return None if text == "max" or int(text) >= 2**62 else int(text)
    return None


def available_memory(cgroup_root: Path = CGROUP_ROOT, meminfo: Path = MEMINFO) -> int | None:
    """Bytes this process may use: the container's limit, else the machine's memory; None where
    neither can be read (not Linux)."""
    limit = memory_limit(cgroup_root)
    if limit is not None:
        return limit
    try:
        line = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024
