"""Which precision a bundle is served at: from a table of machines (CPU flags, CUDA, OpenVINO)
and of what the bundle's gates passed, so that these tests do not depend on this machine's CPU."""

from __future__ import annotations

import pytest

from rewardserve.bundle.cpus import cpu_description
from rewardserve.bundle.engine_choice import Machine, PrecisionUnavailable, choose

SAPPHIRE_RAPIDS = {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
ZEN4 = {"avx512f", "avx512_vnni", "avx512_bf16"}
CASCADE_LAKE = {"avx512f", "avx512_vnni"}
HASWELL = {"avx2", "fma"}

EVERY_VARIANT_PASSED = {"fp32": None, "bf16": None, "int8": None}
BF16_REFUSED = {"fp32": None, "bf16": "refused at export: bf16 refused: on 1440 held-out pairs ...", "int8": None}
FP32_ONLY = {"fp32": None}
W8A8_PASSED = EVERY_VARIANT_PASSED | {"w8a8": None}


def machine(flags: set[str], cuda: bool = False, openvino: bool = True) -> Machine:
    return Machine("test CPU", frozenset(flags), cuda=cuda, openvino=openvino)


@pytest.mark.parametrize(
    ("flags", "offered", "chosen"),
    [
        (SAPPHIRE_RAPIDS, EVERY_VARIANT_PASSED, "bf16"),
        (ZEN4, EVERY_VARIANT_PASSED, "bf16"),  # AVX-512-BF16 without AMX is native bf16 too
        (CASCADE_LAKE, EVERY_VARIANT_PASSED, "int8"),  # no bf16 instructions: VNNI's int8
        (HASWELL, EVERY_VARIANT_PASSED, "fp32"),  # neither
        (SAPPHIRE_RAPIDS, BF16_REFUSED, "int8"),
        (SAPPHIRE_RAPIDS, FP32_ONLY, "fp32"),
        (CASCADE_LAKE, {"fp32": None, "bf16": None}, "fp32"),
        (SAPPHIRE_RAPIDS, W8A8_PASSED, "w8a8"),  # AMX int8, its other nodes at bf16
        (CASCADE_LAKE, W8A8_PASSED, "w8a8"),  # VNNI, its other nodes at fp32
        (HASWELL, W8A8_PASSED, "fp32"),  # no int8 dot products: the choice is what it was without w8a8
    ],
)
def test_auto_serves_the_fastest_variant_that_passed_and_that_this_cpu_runs_natively(flags, offered, chosen):
    assert choose("auto", offered, machine(flags)).precision == chosen


def test_auto_says_why_it_passed_over_faster_precisions():
    choice = choose("auto", BF16_REFUSED | {"int8": None}, machine(HASWELL))
    assert choice.precision == "fp32"
    assert "not bf16: refused at export: bf16 refused" in choice.reason
    assert "not int8: this CPU has no int8 dot-product instructions" in choice.reason


def test_a_w8a8_variant_slower_than_bf16_at_export_is_served_by_name_and_passed_over_by_auto_saying_why():
    slower = "passed its gate at export but scored the held-out pairs at 340.8 seq/s there, no faster than bf16 502.8"
    offered = EVERY_VARIANT_PASSED | {"w8a8": slower}  # Manifest.offered(auto=True)
    choice = choose("auto", offered, machine(SAPPHIRE_RAPIDS))
    assert choice.precision == "bf16" and f"not w8a8: {slower}" in choice.reason
    assert choose("w8a8", W8A8_PASSED, machine(SAPPHIRE_RAPIDS)).precision == "w8a8"  # Manifest.offered()
    with pytest.raises(PrecisionUnavailable, match="no int8 dot-product instructions"):
        choose("w8a8", W8A8_PASSED, machine(HASWELL))


def test_bf16_without_openvino_installed_is_passed_over_with_the_install_command():
    choice = choose("auto", EVERY_VARIANT_PASSED, machine(SAPPHIRE_RAPIDS, openvino=False))
    assert choice.precision == "int8" and "pip install openvino" in choice.reason


def test_on_cuda_auto_serves_fp16_when_it_passed_and_never_a_cpu_variant():
    cuda = machine(SAPPHIRE_RAPIDS, cuda=True)
    assert choose("auto", {**EVERY_VARIANT_PASSED, "fp16": None}, cuda).precision == "fp16"
    assert choose("auto", EVERY_VARIANT_PASSED, cuda).precision == "fp32"


def test_a_bundle_of_one_reduced_graph_still_serves_and_says_it_is_slow_here():
    # Bundles from before variants held one graph: an fp16 one runs on a CPU, slowly.
    choice = choose("auto", {"fp16": None}, machine(SAPPHIRE_RAPIDS))
    assert choice.precision == "fp16"
    assert "the only precision this bundle has" in choice.reason and "fp16 runs on CUDA" in choice.reason


@pytest.mark.parametrize(
    ("requested", "flags", "offered", "why"),
    [
        ("bf16", HASWELL, EVERY_VARIANT_PASSED, "this CPU has no bf16 instructions"),  # emulated: never chosen
        ("bf16", SAPPHIRE_RAPIDS, FP32_ONLY, "the bundle has no bf16 variant"),
        ("bf16", SAPPHIRE_RAPIDS, BF16_REFUSED, "refused at export"),
        ("fp16", SAPPHIRE_RAPIDS, {"fp32": None, "fp16": None}, "no CUDA provider"),
        ("int8", HASWELL, EVERY_VARIANT_PASSED, "no int8 dot-product instructions"),
    ],
)
def test_a_precision_asked_for_by_name_is_served_or_refused_with_the_reason(requested, flags, offered, why):
    with pytest.raises(PrecisionUnavailable, match=f"precision {requested} cannot be served: .*{why}"):
        choose(requested, offered, machine(flags))


def test_a_precision_asked_for_by_name_that_the_bundle_and_machine_have_is_served():
    choice = choose("int8", EVERY_VARIANT_PASSED, machine(SAPPHIRE_RAPIDS))
    assert choice.precision == "int8" and choice.reason == "int8 asked for"


def test_the_cpu_description_reads_the_first_processor_of_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    first = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx512f amx_bf16\n"
    cpuinfo.write_text(f"{first}\nprocessor\t: 1\nmodel name\t: another\nflags\t\t: fpu\n")
    assert cpu_description(cpuinfo) == ("Intel(R) Xeon(R) Platinum 8480+", frozenset({"fpu", "avx512f", "amx_bf16"}))
    assert cpu_description(tmp_path / "absent") == ("unknown CPU", frozenset())


def test_a_machine_describes_its_cpu_with_the_flags_that_decide():
    described = Machine("Intel(R) Xeon(R) Processor", frozenset(SAPPHIRE_RAPIDS), cuda=False, openvino=True).describe()
    assert described == "Intel(R) Xeon(R) Processor (amx_bf16 avx512_bf16 amx_int8 avx512_vnni avx512f)"
