"""optimum-intel in-process: the peer that benchmarks/optimum_intel_peer.py measures rewardserve
against. It runs in optimum-intel's own virtual environment and imports nothing of rewardserve's:

    python3.11 -m venv ../venv-optimum && ../venv-optimum/bin/pip install torch==2.13.0 \\
        'optimum-intel[openvino,nncf]' && ../venv-optimum/bin/pip uninstall -y torchvision

(torchvision's wheel there breaks `import transformers`). It loads a sequence-classification
checkpoint as a user of optimum-intel would (`OVModelForSequenceClassification`, exported at
start), at one of its precisions:
- bf16: OpenVINO's bf16 inference hint (its default on AMX CPUs);
- int8-weights: `OVWeightQuantizationConfig(bits=8)`, int8 weights, activations as OpenVINO
  chooses (it quantizes them dynamically on CPUs that can);
- w8a8: `OVQuantizationConfig` (NNCF's static post-training quantization with SmoothQuant),
  calibrated on the texts in --calibration.
Then it answers JSON lines on stdin, `{"texts": [...], "batch": N}`, each with one line on stdout:
`{"seconds": S, "rewards": [...]}`, the texts scored N a call in their order, each call's texts
padded to its longest, as the tokenizer pads (S: the calls' time, tokenizing included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODES = ("bf16", "int8-weights", "w8a8")


def load(checkpoint: Path, mode: str, calibration: list[str], tokenizer):  # noqa: ANN001, ANN201 (optimum's types)
    import nncf
    from optimum.intel import (
        OVConfig,
        OVModelForSequenceClassification,
        OVQuantizationConfig,
        OVQuantizer,
        OVWeightQuantizationConfig,
    )

    hint = {"INFERENCE_PRECISION_HINT": "bf16"}
    if mode == "bf16":
        return OVModelForSequenceClassification.from_pretrained(checkpoint, export=True, ov_config=hint)
    if mode == "int8-weights":
        weights = OVWeightQuantizationConfig(bits=8)
        return OVModelForSequenceClassification.from_pretrained(
            checkpoint, export=True, quantization_config=weights, ov_config=hint
        )
    model = OVModelForSequenceClassification.from_pretrained(checkpoint, export=True, compile=False)
    feeds = [dict(tokenizer(text, return_tensors="np", add_special_tokens=False)) for text in calibration]
    saved = Path(f"/tmp/optimum-intel-w8a8-{checkpoint.name}")
    OVQuantizer.from_pretrained(model).quantize(
        calibration_dataset=nncf.Dataset(feeds),
        ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(feeds))),
        save_directory=saved,
    )
    return OVModelForSequenceClassification.from_pretrained(saved, ov_config=hint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a sequence-classification checkpoint")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--calibration", type=Path, help="a JSON list of texts (w8a8)")
    args = parser.parse_args()
    # The answers keep stdout to themselves: what the libraries print goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    calibration = json.loads(args.calibration.read_text()) if args.calibration else []
    if args.mode == "w8a8" and not calibration:
        raise SystemExit("w8a8 needs --calibration texts")
    started = time.perf_counter()
    model = load(args.checkpoint, args.mode, calibration, tokenizer)
    print(f"optimum-intel {args.mode}: loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps({"ready": True}), file=answers)
    for line in sys.stdin:
        request = json.loads(line)
        texts, batch = request["texts"], request["batch"]
        rewards: list[float] = []
        started = time.perf_counter()
        for start in range(0, len(texts), batch):
            inputs = tokenizer(
                texts[start : start + batch], return_tensors="np", padding=True, add_special_tokens=False
            )
            rewards += model(**inputs).logits[:, 0].astype(float).tolist()
        print(json.dumps({"seconds": time.perf_counter() - started, "rewards": rewards}), file=answers)


if __name__ == "__main__":
    main()
