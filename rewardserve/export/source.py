"""What export reads from a checkpoint: the reward function, its input format and tokenizer.

Two kinds of checkpoint come in. One written by `rewardserve train` carries the input format
training used. Any other sequence-classification reward checkpoint (an OpenAssistant-style
DeBERTa, a Llama or Qwen2 reward model) gets a format derived from its own config and tokenizer:
`[CLS] prompt [SEP] response [SEP]` for encoders, `[BOS] prompt response [EOS]` for decoders.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from rewardserve.bundle import InputFormat
from rewardserve.export import decoder_graph
from rewardserve.training.checkpoint import (
    FORMAT_FILE,
    METRICS_FILE,
    STATS_FILE,
    TOKENIZER_FILE,
    derive_input_format,
    is_pair_encoder,
    load_input_format,
)
from rewardserve.training.reward_model import MeanPooledRewardModel, load_reward_model

DEFAULT_MAX_LENGTH = 4096  # for checkpoints of others; a longer context costs memory in every batch
GPU_HEADROOM = 1.5  # free GPU memory needed, in model sizes: the weights and one batch's activations


@dataclass
class ExportSource:
    """A reward model ready to trace, and everything the bundle needs besides the graph."""

    reward: torch.nn.Module | None  # forward(*inputs in input_format.input_names order) -> (batch,) rewards
    model: torch.nn.Module | None  # the checkpoint's own class, which `reward` wraps (weights shared)
    input_format: InputFormat
    tokenizer: Tokenizer
    model_type: str
    num_heads: int
    hidden_size: int
    parameters: int  # how large the model is: export sizes its passes by it
    stats: dict = field(default_factory=dict)  # reward mean/std and temperature measured in training
    training: dict = field(default_factory=dict)  # training metrics and provenance, when we trained it

    @contextlib.contextmanager
    def on_gpu(self) -> Iterator[None]:
        """The model on the GPU for the block, where there is one with room for it (its PyTorch
        passes: parity's reference rewards and the model card's), then back on the CPU, where the
        graph is written from it. Without one, nothing moves."""
        room = torch.cuda.is_available() and torch.cuda.mem_get_info()[0] > GPU_HEADROOM * self._bytes()
        if not room:
            yield
            return
        self.model.to("cuda")
        try:
            yield
        finally:
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def _bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forget_model(self) -> None:
        """Drop the PyTorch model once export has what it needs from it (its rewards, its graph):
        the sessions that score the graph take its place in memory, not a second copy beside it."""
        self.reward = self.model = None
        gc.collect()


class LastTokenReward(torch.nn.Module):
    """A decoder's classification head read at each row's last real token, found from the
    attention mask, so that neither padding side nor pad id moves it.

    transformers reads the last token that is not the pad id. The pair layout ends every
    sequence with an EOS that is often the pad id too (Qwen2 and many Llama reward models ship
    so), and reads that EOS: `pad_id` None. The chat layout reads where the model's own class
    does, the last real token that is not `pad_id`, which export's reference check compares.
    """

    def __init__(self, model: PreTrainedModel, pad_id: int | None = None) -> None:
        super().__init__()
        self.backbone = model.base_model
        self.score = model.score
        self.config = model.config
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs) -> SequenceClassifierOutput:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        readable = attention_mask if self.pad_id is None else attention_mask * (input_ids != self.pad_id)
        last = (positions * readable).argmax(-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return SequenceClassifierOutput(logits=self.score(pooled))


class RewardGraph(torch.nn.Module):
    """What the ONNX graph computes: one reward per sequence from positional inputs."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True))).logits[:, 0]


def load_source(
    checkpoint: Path,
    max_length: int | None = None,
    padding_side: Literal["right", "left"] | None = None,
) -> ExportSource:
    """Read a checkpoint for export; `max_length` and `padding_side` override what it declares.
    The model keeps transformers' default attention, as its users run it (tracing switches to
    the eager pattern for itself: graph.py)."""
    checkpoint = Path(checkpoint)
    model = load_reward_model(checkpoint).eval()
    if (checkpoint / FORMAT_FILE).is_file():
        fmt = load_input_format(checkpoint)
        tokenizer = Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE))
    else:
        fmt, tokenizer = _derive_format(checkpoint, model, max_length, padding_side)
    updates = {"max_length": max_length, "padding_side": padding_side}
    fmt = fmt.model_copy(update={k: v for k, v in updates.items() if v is not None})
    if fmt.max_length > (limit := _max_positions(model.config) or fmt.max_length):
        raise ValueError(f"--max-length {fmt.max_length} is over the model's {limit} positions")
    config = model.config
    return ExportSource(
        # eval(): a fresh Module is in training mode, and dropout would then be on in the
        # PyTorch model that parity compares the graph against.
        reward=RewardGraph(_pool_by_mask(model, fmt), fmt.input_names).eval(),
        model=model,
        input_format=fmt,
        tokenizer=tokenizer,
        model_type=config.model_type,
        num_heads=getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0),
        hidden_size=getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0),
        parameters=sum(p.numel() for p in model.parameters()),
        stats=_read_json(checkpoint / STATS_FILE),
        training=_read_json(checkpoint / METRICS_FILE),
    )


def _pool_by_mask(model: torch.nn.Module, fmt: InputFormat) -> torch.nn.Module:
    """The model whose reward does not depend on the padding side or the pad id."""
    if isinstance(model, MeanPooledRewardModel):
        return model  # pools by the attention mask (and segment ids) already
    if fmt.position_ids:  # the decoder layouts
        return LastTokenReward(model, model.config.pad_token_id if fmt.layout == "chat" else None)
    if fmt.padding_side == "left":
        raise ValueError(f"{model.config.model_type}: its head reads [CLS] at position 0; export with right padding")
    return model


def _derive_format(
    checkpoint: Path, model: PreTrainedModel, max_length: int | None, padding_side: str | None
) -> tuple[InputFormat, Tokenizer]:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if not tokenizer.is_fast:
        raise ValueError(f"{checkpoint}: export needs a fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token_id is None and not is_pair_encoder(tokenizer):
        # Pad positions are masked out and never pooled, so any id serves; no new token is added.
        tokenizer.pad_token = tokenizer.eos_token
    # Encoders read [CLS] at position 0; the decoder graphs written from the weights read rows by
    # their lengths (decoder_graph.py). Rewards do not depend on the side otherwise.
    right = is_pair_encoder(tokenizer) or model.config.model_type in decoder_graph.FAMILIES
    side = padding_side or ("right" if right else tokenizer.padding_side)
    length = max_length or min(_max_positions(model.config) or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)
    fmt = derive_input_format(tokenizer, model.config, length, side)
    return fmt, tokenizer.backend_tokenizer


def _max_positions(config) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
