"""The agreement gate on a decoder reward model trained here: random-weight models give
near-tied rewards that no gate can judge, so this trains a small Qwen3-shaped chat RM on HH-RLHF
and exports it at each reduced precision this machine can gate, printing what each did on the
held-out pairs against fp32.

    cd benchmarks && python decoder_gate.py      # ~3 min on 2 cores

The model is the test suite's tiny Qwen3 chat RM (rewardserve/testing/chat_models.py: 2 layers, hidden 64,
grouped-query attention, Qwen3's ChatML, a BPE tokenizer trained on HH text), initialised at
random and trained with rewardserve's trainer as tests/test_precisions.py trains it (200 steps of
8 pairs, Bradley-Terry; with its chat template it trains on the chat layout) on helpful-base's
train split, and judged on its held-out split. So small a model learns only shallow cues: trained
on all three HH files (helpfulness and harmlessness pull apart) it stayed at chance (accuracy
0.49) with near-tied rewards, and the gate refused every variant (int8 70%, int4 97.6%, bf16
90%); so did a 4-layer, hidden-256 shape with an 8k vocabulary within the steps that fit here.
Each precision is exported apart, so a refusal does not hide the others' figures. w8a8 is
calibrated on the last 32 held-out examples, which no precision's gate then reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.manifest import Agreement, Manifest
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences
from rewardserve.export.onnx_export import export_bundle
from rewardserve.export.precision import PrecisionRefused
from rewardserve.testing.chat_models import build_chat_rm  # the test suite's chat RMs
from rewardserve.training.config import TrainConfig
from rewardserve.training.trainer import train_reward_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("../models/decoder-gate"))
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write each precision's figures here (vllm_figures.py reads it)")
    args = parser.parse_args()

    helpful_base = default_data_files()[:1]
    train, _ = load_preferences(helpful_base, split="train")
    heldout, _ = load_preferences(helpful_base, split="heldout")
    trained = trained_once(args, train, heldout)
    parity = [(e.prompt, r) for e in heldout[:64] for r in e.responses]
    fp32 = export_bundle(trained, args.work / "bundle", parity, heldout)
    lines = [
        f"{trained}: layout {fp32.input_format.layout}, graph {fp32.graph.builder} {fp32.graph.fused_operators}",
        f"parity {fp32.parity.max_abs_diff:.2g}; reference ({fp32.reference.usage}) {fp32.reference.max_abs_diff:.2g}",
    ]
    machine = Machine.this()
    precisions = ["int8", "int4"] + [p for p in ("bf16", "w8a8") if machine.cannot_run(p) is None]
    figures = {}
    for precision in precisions:
        try:
            manifest = export_bundle(trained, args.work / f"bundle-{precision}", parity, heldout, precision=precision)
            gate, verdict = manifest.variants[precision].agreement, "ships"
        except PrecisionRefused as refused:
            manifest, gate, verdict = None, refused.agreement, "refused"
        figures[precision] = variant_figures(precision, gate, manifest)
        lines.append(
            f"{precision}: {verdict}; orders {gate.decisions_matching:.2%} of {gate.pairs} held-out pairs as fp32 "
            f"does, accuracy {gate.accuracy:.4f} against fp32's {gate.accuracy_fp32:.4f}"
            + (f"; {manifest.variants[precision].seq_per_s:.0f} seq/s in the gate's pass" if verdict == "ships" else "")
        )
        if verdict == "ships" and manifest.variants[precision].kept_at_bf16 is not None:  # w8a8's mixed precision
            at_bf16 = manifest.variants[precision].kept_at_bf16
            lines.append(f"{precision}: {len(at_bf16)} products at bf16, the head's included: {at_bf16}")
        after = manifest.prefix.at(precision) if verdict == "ships" and manifest.prefix is not None else None
        if after is not None:  # the variant's own prefix graph, each pair's prompt run once
            lines.append(
                f"{precision} after a prompt's keys and values: {'ships' if after.passed else 'refused'}; orders "
                f"{after.agreement.decisions_matching:.2%} as fp32 does, accuracy {after.agreement.accuracy:.4f}; "
                f"max |after the prompt - whole| {after.max_abs_diff_whole:.2g}, responses padded to "
                f"{after.response_bucket} tokens"
            )
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine.describe(), "variants": figures}, indent=1))


def trained_once(args: argparse.Namespace, train: list, heldout: list) -> Path:
    """The trained chat RM in --work, trained there on the first run."""
    trained = args.work / "trained"
    if not (trained / "rewardserve_input_format.json").is_file():
        texts = [e.prompt + r for e in train[:200] for r in e.responses]
        base = build_chat_rm("qwen3", args.work / "base", texts, args.hidden_size)
        config = TrainConfig(
            base_model=str(base),
            output_dir=str(trained),
            max_length=256,
            batch_size=8,
            max_steps=args.max_steps,
            learning_rate=2e-3,
            checkpoint_steps=0,
        )
        train_reward_model(config, train, heldout[:64], provenance={"data": "HH-RLHF helpful-base, train split"})
    return trained


def variant_figures(precision: str, gate: Agreement, manifest: Manifest | None) -> dict:
    """What vllm_figures.py lists of one precision: the gate's verdict and agreement, how far its
    rewards moved from PyTorch fp32's (its parity) and after a prompt from whole (None: refused)."""
    variant = manifest.variants[precision] if manifest is not None else None
    parity = variant.parity if variant is not None else None
    after = manifest.prefix.at(precision) if manifest is not None and manifest.prefix is not None else None
    after_prompt = None if after is None else {"ships": after.passed, "max_abs_diff_whole": after.max_abs_diff_whole}
    return {
        "ships": manifest is not None,
        "decisions_matching": gate.decisions_matching,
        "pairs": gate.pairs,
        "max_abs_diff": parity.max_abs_diff if parity is not None else None,
        "after_prompt": after_prompt,
    }


if __name__ == "__main__":
    main()
