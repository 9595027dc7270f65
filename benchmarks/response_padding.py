"""How far a decoder's reward read after its prompt's keys and values lies from the same
sequence's reward run whole, by how far the response is padded: on export's own held-out
sequences, at the bundle's OpenVINO precisions. What the response bucket
(bundle/runtime.py's OPENVINO_RESPONSE_BUCKET) is chosen by: where the two agree within
MAX_WHOLE_VS_SPLIT, a prompt no other sequence shares runs whole.

    python benchmarks/response_padding.py --bundle models/real-size/qwen3-0.6b/bundle-auto-2048   # ~12 min

Export's gate measures the same thing at the runtime's bucket (PrefixVariant.max_abs_diff_whole,
beside the agreement it judges). Each sequence that differs is printed with its prompt's and
response's tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import rewardserve.bundle.runtime as runtime_module
from rewardserve.bundle import SequenceEncoder, load_bundle
from rewardserve.bundle.manifest import OPENVINO_PRECISIONS
from rewardserve.bundle.prefix import PrefixRunner
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences
from rewardserve.export.gaps import example_rewards, example_sequences
from rewardserve.export.onnx_export import LARGE_MODEL_PASSES
from rewardserve.export.parity import export_runner
from rewardserve.export.precision import W8A8_CALIBRATION_EXAMPLES


def gated_examples(count: int) -> list:
    """The held-out HH examples export's gate reads (`rewardserve export`'s defaults; a chat
    checkpoint that rewardserve did not train reads HH's text as is)."""
    heldout, _ = load_preferences(default_data_files(), split="heldout")
    return heldout[: min(count, len(heldout) - W8A8_CALIBRATION_EXAMPLES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precisions", nargs="+", default=["w8a8"], choices=sorted(OPENVINO_PRECISIONS))
    parser.add_argument("--multiples", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--examples", type=int, default=LARGE_MODEL_PASSES.gate_examples)
    args = parser.parse_args()

    manifest = load_bundle(args.bundle)
    encoder = SequenceEncoder.from_file(args.bundle / manifest.tokenizer_file, manifest.input_format)
    examples = gated_examples(args.examples)
    sequences = example_sequences(encoder, examples)  # in example_rewards' order
    served_bucket = runtime_module.OPENVINO_RESPONSE_BUCKET
    for precision in args.precisions:
        graph = args.bundle / manifest.graph_file(precision)
        runner = export_runner(graph, encoder, manifest.outputs, precision)  # splits every prompt, as export
        whole = example_rewards(runner, examples, f"{precision}: whole sequences")
        for multiple in args.multiples:
            runtime_module.OPENVINO_RESPONSE_BUCKET = multiple
            after = example_rewards(
                runner, examples, f"{precision}: responses padded to {multiple}", PrefixRunner(runner)
            )
            gaps = np.abs(after - whole)
            print(
                f"{precision}, responses padded to a multiple of {multiple}: {int((gaps > 0).sum())} of {len(gaps)} "
                f"rewards differ from the whole sequence's; largest {gaps.max(initial=0.0):.2g}"
            )
            for index in np.flatnonzero(gaps):  # (prompt, response) tokens of each that differs, and by how much
                sequence = sequences[index]
                print(f"    {sequence.response_start} + {len(sequence) - sequence.response_start}: {gaps[index]:.2g}")
        runtime_module.OPENVINO_RESPONSE_BUCKET = served_bucket


if __name__ == "__main__":
    main()
