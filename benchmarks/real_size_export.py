"""Export of real-size decoder reward models: wall time and peak memory of `rewardserve export`.

    python benchmarks/real_size_export.py --shape qwen3-0.6b          # ~10 min on 2 cores
    python benchmarks/real_size_export.py --shape llama-3.2-1b --precision auto
    python benchmarks/real_size_export.py --precision bf16 --set-aside-gate \
        --out models/real-size/qwen3-0.6b/bundle-bf16-speed          # for served speed figures only

Builds (once, under --work) a sequence-classification reward model with the named model's
dimensions and random weights, a byte-level BPE tokenizer trained here on HH-RLHF text with the
model's vocabulary size, and its chat template (ChatML for Qwen3, Llama 3's for Llama), as a
user's checkpoint on disk would be. Then runs `rewardserve export` on it in a child process and
reports its wall time and peak resident memory against the size of the fp32 weights. Random
weights are fine for time and memory; they cannot judge a reduced precision's gate.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences

CHATML = (
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (
    "{{- bos_token }}{%- for m in messages %}{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' "
    "+ m.content + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# name: (config family, dimensions, special tokens, bos, eos, pad, template)
SHAPES = {
    "qwen3-0.6b": (
        "qwen3",
        dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
             num_key_value_heads=8, head_dim=128, vocab_size=32000, tie_word_embeddings=True),
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", CHATML,
    ),
    "llama-3.2-1b": (
        "llama",
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, head_dim=64, vocab_size=32000, tie_word_embeddings=True),
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
         "<|finetune_right_pad_id|>"],
        "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>", LLAMA3,
    ),
}  # fmt: skip


def build(shape: str, out: Path, causal_lm: bool = False) -> Path:
    """The checkpoint directory of `shape`, built once: a sequence classifier, or (`causal_lm`)
    the causal LM a judge is exported from."""
    if (out / "config.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    family, dimensions, specials, bos, eos, pad, template = SHAPES[shape]
    examples, _ = load_preferences(default_data_files(), split="train")
    texts = [e.prompt + r for e in examples for r in e.responses]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=dimensions["vocab_size"],
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad)
    fast.chat_template = template
    fast.save_pretrained(out)
    ids = {"pad_token_id": fast.pad_token_id, "eos_token_id": fast.eos_token_id, "bos_token_id": fast.bos_token_id}
    config = AutoConfig.for_model(family, **dimensions, **ids, num_labels=1, max_position_embeddings=4096)
    config.vocab_size = len(fast)
    torch.manual_seed(0)
    model = (AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification).from_config(config)
    print(f"{shape}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters", flush=True)
    model.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--work", type=Path, default=Path("models/real-size"))
    parser.add_argument("--precision", default="fp32", help="export's --precision (default: fp32)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--out", type=Path, help="the bundle (default: WORK/SHAPE/bundle)")
    parser.add_argument(
        "--set-aside-gate",
        action="store_true",
        help="ship the reduced precision whatever its agreement, for speed figures only: random weights give "
        "near-tied rewards that the gate cannot judge (the bundle is then not fit to serve rewards)",
    )
    args = parser.parse_args()

    checkpoint = build(args.shape, args.work / args.shape / "checkpoint")
    weights = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    cli = [sys.executable, "-m", "rewardserve.cli"]
    if args.set_aside_gate:
        bars = "p.MIN_DECISIONS_MATCHING, p.MAX_ACCURACY_DROP = 0.0, 1.0"
        cli = [sys.executable, "-c", f"import sys, rewardserve.export.precision as p; {bars}; "
               "from rewardserve.cli import main; sys.exit(main(sys.argv[1:]))"]  # fmt: skip
    out = args.out or args.work / args.shape / "bundle"
    command = [*cli, "export", str(checkpoint), "--out", str(out), "--precision", args.precision]
    command += ["--max-length", str(args.max_length)]
    started = time.perf_counter()
    result = subprocess.run(command)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kilobytes on Linux
    print(
        f"\n{args.shape}: export exited {result.returncode} after {seconds / 60:.1f} min; peak RSS "
        f"{peak / 1e9:.1f} GB = {peak / weights:.1f}x the fp32 weights ({weights / 1e9:.2f} GB)"
    )


if __name__ == "__main__":
    main()
