"""CPUs for the engine: the affinity mask, capped by a container's CPU quota (cgroup v1 or v2)."""

import os

import pytest

from rewardserve.bundle.cpus import available_cpus, cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({}, None),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3.0),
    ],
)
def test_cpu_quota_from_cgroup_files(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota


def test_available_cpus_rounds_a_quota_up_and_never_exceeds_the_affinity_mask(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{(AFFINITY + 4) * 100000} 100000\n")
    assert available_cpus(tmp_path) == AFFINITY
    (tmp_path / "cpu.max").write_text("garbage")
    assert available_cpus(tmp_path) == AFFINITY
