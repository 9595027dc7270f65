"""Memory: how much this process may use (its container's limit, cgroup v2 `memory.max` or v1's
`memory.limit_in_bytes`, else the machine's: in a pod limited to 4 GiB on a 512 GiB node, budgets
sized from the node's memory would get the process killed), and large blocks given back to the
system once freed (`return_large_blocks`)."""

from __future__ import annotations

import ctypes
import os
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


# glibc's malloc maps a large block apart from its heap and unmaps it when freed, but after a
# large block is freed it raises that threshold to the block's size (up to 32 MiB), so later
# blocks of that size come from the heap, which fragments and rarely shrinks. A server's large
# blocks are transient (a call's copies of a prompt's keys and values, its inputs and outputs):
# on the 0.6B shape at w8a8 the heap kept them, and the server held 1.95x its fp32 weights after
# GRPO groups of P = 700 (1.35x with the threshold fixed at 128 KiB, glibc's own default).
MMAP_THRESHOLD = 128 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
OPERATOR_SETTING = "MALLOC_MMAP_THRESHOLD_"  # glibc's environment variable, which wins


def return_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes, so that every block that large goes back
    to the system when freed. False where it was not set: not glibc, or the operator set
    MALLOC_MMAP_THRESHOLD_ (glibc read that at start; it is left alone)."""
    if OPERATOR_SETTING in os.environ:
        return False
    try:
        # The C library this process already runs (find_library would start ldconfig to look).
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # no mallopt there (macOS); musl's answers 0: False too
        return False
