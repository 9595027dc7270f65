"""OpenVINO's RoPE kernel against the rotation in five nodes, on a decoder bundle as served:
the bundle's IRs as export writes them (rotate-half as a Split into halves, a Negative, a
Concat, two products and a sum: decoder_writer._rotate) against a copy whose IRs rotate as
OpenVINO's RoPE fusion reads them (the halves by explicit sizes, the second times -1), which its
CPU plugin runs as one RoPE kernel a rotation. Side by side in one run.

    python benchmarks/rope_kernel.py --bundle models/real-size/qwen3-0.6b/bundle-auto-2048   # ~6 min

The copy is a temporary bundle of hard links beside `--bundle`, its IRs rewritten and the
manifest's hashes updated. Each round times, on each bundle in turn (each first in turn): held-out
whole sequences one a call, and a GRPO group's responses in one call after their prompt
(prefix_served.py's groups). Printed: each way's median, the ratio, how many RoPE kernels each
compiled, and how far their rewards are apart (the kernel rounds differently from bf16 nodes; on
a model with random weights that moves the rewards by a few hundredths). On the 0.6B shape at
w8a8 the kernel ran as OpenVINO's reference implementation and was no faster, so export keeps
the five nodes (docs/performance.md, "Rotations as one RoPE kernel").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from attention_precision import finish_copy, linked_copy, side_by_side
from prefix_served import held_out_texts, make_groups

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.prefix import prompt_ids


def rotations_as_rope_fusion_reads_them(ov, model) -> int:
    """Rewrite each rotate-half of `model`: its halves by a VariadicSplit on the last axis, the
    second times -1 (OpenVINO's RoPEFusion pattern). Returns how many."""
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Negative" or node.input_value(0).get_node().get_type_name() != "Split":
            continue
        split = node.input_value(0).get_node()
        x = split.input_value(0)
        half = x.get_partial_shape()[3].get_length() // 2
        halves = ov.opset13.variadic_split(x, np.array(3, np.int64), np.array([half, half], np.int64))
        for index in range(2):
            for target in list(split.output(index).get_target_inputs()):
                target.replace_source_output(halves.output(index))
        negated = ov.opset13.multiply(halves.output(1), np.array(-1.0, np.float32))
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(negated.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


def fused_copy(bundle: Path, out: Path) -> int:
    """`bundle` into `out` with its IRs' rotations in RoPE fusion's form; returns how many."""
    import openvino as ov

    linked_copy(bundle, out, lambda path: path.suffix in (".xml", ".bin"))
    rewritten = 0
    for xml in bundle.glob("*.xml"):
        model = ov.Core().read_model(str(xml))
        rewritten += rotations_as_rope_fusion_reads_them(ov, model)
        ov.save_model(model, str(out / xml.name), compress_to_fp16=False)
    finish_copy(bundle, out)
    return rewritten


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.bundle.parent) as scratch:
        if not fused_copy(args.bundle, Path(scratch)):
            raise SystemExit(f"{args.bundle}'s IRs have no rotation in five nodes to rewrite")
        runtimes = {
            "RoPE kernel": BundleRuntime(Path(scratch), precision=args.precision, prefix_reuse=True),
            "five nodes": BundleRuntime(args.bundle, precision=args.precision, prefix_reuse=True),
        }
        compare(runtimes, args.rounds)


def rope_kernels(runtime: BundleRuntime) -> int:
    """How many RoPE kernels OpenVINO compiled the bundle's backbone into."""
    compiled = runtime.session._backbone.get_compiled_model().get_runtime_model()
    return sum(node.get_rt_info()["layerType"].astype(str) == "RoPE" for node in compiled.get_ordered_ops())


def compare(runtimes: dict[str, BundleRuntime], rounds: int) -> None:
    first = next(iter(runtimes.values()))
    bucket = first.length_bucket
    kernels = {name: rope_kernels(runtime) for name, runtime in runtimes.items()}
    print(f"at {first.choice.precision}; RoPE kernels compiled: {kernels}")
    texts = held_out_texts()
    group = make_groups(first, 300, 8, 1, texts)[0]
    sequences = first.encoder.encode([group["prompt"]] * 8, group["responses"])
    wholes = [first.encoder.encode([g["prompt"]], g["responses"])[0] for g in make_groups(first, 300, 1, 6, texts)]
    states = {id(r): r.prefix.prompt_states(prompt_ids(sequences[0])) for r in runtimes.values()}

    def whole(runtime: BundleRuntime) -> np.ndarray:
        return np.concatenate([runtime.score(runtime.encoder.pad([s], bucket)).rewards for s in wholes])

    def responses(runtime: BundleRuntime) -> np.ndarray:
        kept = states[id(runtime)]
        return runtime.prefix.score_responses(kept, [s.ids[kept.length :] for s in sequences], bucket).rewards

    calls = {f"{len(wholes)} whole sequences, one a call": whole, "8 responses after a 300-token prompt": responses}
    for label, call in calls.items():
        (fused, nodes), answers = side_by_side(runtimes, call, rounds)
        apart = float(np.abs(np.subtract(*answers)).max())
        print(
            f"{label}: RoPE kernel {fused * 1e3:.0f} ms, five nodes {nodes * 1e3:.0f} ms ({nodes / fused:.3f}x); "
            f"rewards at most {apart:.3g} apart",
            flush=True,
        )


if __name__ == "__main__":
    main()
