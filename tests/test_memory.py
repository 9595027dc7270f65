"""Memory for what the server keeps: the memory this process may use (a container's limit, else
the machine's), the kept prompts' default budget sized from the model and that memory, and large
blocks given back to the system once freed."""

import os
import platform
import subprocess
import sys

import pytest

from rewardserve.bundle.memory import available_memory, memory_limit
from rewardserve.scoring.shared_prompts import KEPT_SEQUENCES, kept_prompts_budget

GIB = 2**30


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({}, None),
        ({"memory.max": "max\n"}, None),
        ({"memory.max": f"{4 * GIB}\n"}, 4 * GIB),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "no limit"
        ({"memory/memory.limit_in_bytes": f"{2 * GIB}\n"}, 2 * GIB),
    ],
)
def test_a_containers_memory_limit_from_cgroup_files(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory_limit(tmp_path) == limit


def test_without_a_limit_the_machines_memory_is_what_the_process_may_use(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683772 kB\nMemFree:         1000 kB\n")
    assert available_memory(tmp_path / "cgroup", meminfo) == 24683772 * 1024
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "cgroup" / "memory.max").write_text(f"{GIB}\n")
    assert available_memory(tmp_path / "cgroup", meminfo) == GIB
    assert available_memory(tmp_path / "none", tmp_path / "missing") is None


def test_the_kept_prompts_hold_a_few_whole_sequences_of_the_model_at_most_an_eighth_of_memory():
    per_token = 28 * 2 * 8 * 128 * 2  # a 0.6B Qwen3's keys and values at bf16: 112 KiB a token
    sized = kept_prompts_budget(per_token, 1024, memory=24 * GIB)
    assert sized == KEPT_SEQUENCES * 1024 * per_token == 448 * 2**20
    assert kept_prompts_budget(2 * per_token, 1024, 24 * GIB) == 2 * sized  # fp32 keys and values
    assert kept_prompts_budget(per_token, 1024, memory=2 * GIB) == GIB // 4  # a small pod
    assert kept_prompts_budget(per_token, 1024, memory=None) == sized


def returns_large_blocks(env: dict[str, str]) -> str:
    """What return_large_blocks says in a fresh interpreter (mallopt changes the whole process)."""
    code = "from rewardserve.bundle.memory import return_large_blocks; print(return_large_blocks())"
    done = subprocess.run([sys.executable, "-c", code], env=os.environ | env, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_a_server_gives_large_blocks_back_unless_the_operator_set_glibcs_threshold():
    assert returns_large_blocks({}) == "True"
    assert returns_large_blocks({"MALLOC_MMAP_THRESHOLD_": "4194304"}) == "False"
