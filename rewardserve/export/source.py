"""What export reads from a checkpoint: the reward function, its input format and tokenizer.

Two kinds of checkpoint come in. One written by `rewardserve train` carries the input format
training used. Any other sequence-classification reward checkpoint (an OpenAssistant-style
DeBERTa, a Llama or Qwen2 reward model) gets a format derived from its own config and tokenizer:
`[CLS] prompt [SEP] response [SEP]` for encoders, `[BOS] prompt response [EOS]` for decoders.

What the model answers is declared here too (`bundle/outputs.py`): one scalar; named objectives
(a sequence-classification head with N labels, or a gated head shaped like ArmoRM's, loaded from
the checkpoint's own modeling code); or step rewards (a token-classification process reward
model). The graph export traces answers every one of them (`RewardGraph`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from rewardserve.bundle import InputFormat
from rewardserve.bundle.outputs import ModelOutputs, Objectives, Steps, StepScalar
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
    outputs: ModelOutputs = field(default_factory=ModelOutputs)  # what `reward` answers besides one scalar
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


class GatedObjectives(torch.nn.Module):
    """A gated multi-objective head shaped like ArmoRM's, computed from the model's own parts in
    operations that trace: ArmoRM's forward finds the gating position with a Python loop over
    token ids, which tracing would freeze into constants.

    The objectives are `regression_layer` at each row's last real token; the gating network
    reads the hidden state where the last occurrence of `pattern` starts (ArmoRM: the token ids
    of `<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`, the prompt's end); the
    score is sum(gating * (objectives @ reward_transform_matrix)). Export's reference check
    compares all three with the model's own forward."""

    def __init__(self, model: PreTrainedModel, pattern: list[int]) -> None:
        super().__init__()
        self.backbone = model.base_model
        self.regression = model.regression_layer
        self.gating = model.gating
        self.transform = model.reward_transform_matrix
        self.config = model.config
        self.pattern = pattern

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs) -> SimpleNamespace:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        positions = torch.arange(attention_mask.shape[1], device=hidden.device)
        last = (positions * attention_mask).argmax(-1)
        rewards = self.regression(hidden[rows, last])
        # Where each window of len(pattern) tokens equals the pattern; the last such start.
        starts = input_ids.shape[1] - len(self.pattern) + 1
        matches = torch.ones_like(input_ids[:, :starts], dtype=torch.bool)
        for offset, token in enumerate(self.pattern):
            matches = matches & (input_ids[:, offset : offset + starts] == token)
        gate_at = (matches.long() * (positions[:starts] + 1)).argmax(-1)
        gating = self.gating(hidden[rows, gate_at])
        score = (gating * (rewards @ self.transform)).sum(-1)
        return SimpleNamespace(score=score, rewards=rewards, gating_output=gating)


def gating_pattern(model: PreTrainedModel, text: str | None, tokenizer: Tokenizer) -> list[int]:
    """The token ids the gating network is read at: `text` tokenized, else the `token_pattern`
    ArmoRM's modeling code defines beside its class."""
    if text is not None:
        return tokenizer.encode(text, add_special_tokens=False).ids
    pattern = getattr(sys.modules[type(model).__module__], "token_pattern", None)
    if not pattern:
        raise ValueError("a gated model's gating position: its code defines no token_pattern; give --gating-pattern")
    return [int(token) for token in pattern]


class RewardGraph(torch.nn.Module):
    """What the ONNX graph computes from positional inputs: one reward per sequence; or, as
    `outputs` declares, (reward, objectives[, gating]) or the step class's probability at every
    position (ModelOutputs.graph_outputs' order)."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], outputs: ModelOutputs | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.outputs = outputs or ModelOutputs()
        objectives = self.outputs.objectives
        # The scalar rule of a head with N labels, applied in the graph: a weight per objective.
        weights = None if objectives is None or self.outputs.gated else torch.tensor(objectives.weight_vector())
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        steps = self.outputs.steps
        if steps is not None:
            logits = out.logits.float()
            if steps.activation == "softmax":
                return torch.softmax(logits, dim=-1)[..., steps.label]
            return torch.sigmoid(logits[..., steps.label])
        if self.outputs.verdict is not None:  # a judge: its verdict tokens' logits (export/judge_source.py)
            return out.logits.float()
        if self.outputs.gated:  # ArmoRM's output: the gated score, the objectives, the gating weights
            return out.score.float(), out.rewards.float(), out.gating_output.float()
        if self.weights is not None:
            logits = out.logits.float()
            return logits @ self.weights, logits
        return out.logits[:, 0]


@dataclass(frozen=True)
class OutputOptions:
    """What export is told of a model with more than one output (the CLI's flags)."""

    objectives: list[str] | None = None  # names, in the head's order (default: the config's id2label)
    reward_objective: str | None = None  # the scalar is this objective ...
    reward_weights: list[float] | None = None  # ... or this weighted sum of them
    step_separator: str | None = None  # a PRM's step token
    step_label: int = 1
    step_scalar: StepScalar = "min"
    step_tokens: list[str] | None = (
        None  # a causal LM read as a PRM: its good and bad step tokens (token_prm_source.py)
    )
    trust_remote_code: bool = False  # load the checkpoint's own modeling code (ArmoRM's gated head)
    gating_pattern: str | None = None  # where a gated head's gating network reads (default: its code's)
    judge: str | None = None  # a causal LM served as this judge: a preset or a judge file (judge_source.py)


def declared_outputs(model: torch.nn.Module, tokenizer: Tokenizer, options: OutputOptions) -> ModelOutputs:
    """What `model` answers, from its class and head and `options`; ValueError when something
    export cannot know is missing (objective names, the scalar's rule, the step token)."""
    objective_flags = options.objectives or options.reward_objective or options.reward_weights
    if type(model).__name__.endswith("ForTokenClassification"):
        if objective_flags:
            raise ValueError(
                "a token classifier is read as a process reward model: --objectives and --reward-* do not apply"
            )
        return ModelOutputs(steps=_steps(model, tokenizer, options))
    if options.step_separator is not None:
        raise ValueError(
            f"--step-separator is for token-classification models (process reward models), not {type(model).__name__}"
        )
    gated = hasattr(model, "gating") and hasattr(model, "regression_layer")
    if gated:
        count = model.regression_layer.out_features
    else:  # rewardserve's own head holds its size; a transformers head's config does
        count = model.score.out_features if isinstance(model, MeanPooledRewardModel) else model.config.num_labels
    if count == 1 and not gated:
        if objective_flags:
            raise ValueError(
                "the model has one output: --objectives, --reward-objective and --reward-weights are for N"
            )
        return ModelOutputs()
    names = options.objectives or _label_names(model.config, count)
    if len(names) != count:
        raise ValueError(f"--objectives names {len(names)} objectives; the model's head has {count}")
    if gated:
        if options.reward_objective or options.reward_weights:
            raise ValueError("a gated model's reward is its own gating network's; --reward-* do not apply")
        return ModelOutputs(objectives=Objectives(names=names, scalar="gating"))
    if options.reward_weights is not None:
        rule = {"scalar": "weights", "weights": options.reward_weights}
    elif options.reward_objective is not None:
        rule = {"scalar": "objective", "objective": options.reward_objective}
    else:
        raise ValueError(
            f"the model has {count} objectives ({', '.join(names)}): say which makes the reward with "
            "--reward-objective NAME or --reward-weights w1,...,wN"
        )
    return ModelOutputs(objectives=Objectives(names=names, **rule))


def _label_names(config, count: int) -> list[str]:
    """The config's label names, when they are names (transformers fills in LABEL_0, LABEL_1, ...)."""
    labels = getattr(config, "id2label", None) or {}
    names = [labels.get(i, labels.get(str(i), f"LABEL_{i}")) for i in range(count)]
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        raise ValueError(
            f"the model's {count} objectives have no names in its config (id2label): name them with --objectives"
        )
    return names


def one_token(tokenizer: Tokenizer, flag: str, text: str) -> int:
    """The id of `text`, a step's token; ValueError naming `flag` when it is not one token."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) != 1:
        pieces = [tokenizer.id_to_token(i) for i in ids]
        raise ValueError(f"{flag} {text!r} is {len(ids)} tokens ({pieces}); a step reward is read at one token")
    return ids[0]


def _steps(model: torch.nn.Module, tokenizer: Tokenizer, options: OutputOptions) -> Steps:
    separator = options.step_separator
    if separator is None:
        raise ValueError(
            "a token-classification model is read as a process reward model: name its step token with --step-separator"
        )
    token_id = one_token(tokenizer, "--step-separator", separator)
    labels = model.config.num_labels
    if not 0 <= options.step_label < labels:
        raise ValueError(f"--step-label {options.step_label}: the model has {labels} classes")
    activation = "softmax" if labels > 1 else "sigmoid"
    return Steps(
        separator=separator,
        token_id=token_id,
        label=options.step_label,
        activation=activation,
        scalar=options.step_scalar,
    )


def load_source(
    checkpoint: Path,
    max_length: int | None = None,
    padding_side: Literal["right", "left"] | None = None,
    output_options: OutputOptions = OutputOptions(),
) -> ExportSource:
    """Read a checkpoint for export; `max_length` and `padding_side` override what it declares.
    The model keeps transformers' default attention, as its users run it (tracing switches to
    the eager pattern for itself: graph.py)."""
    checkpoint = Path(checkpoint)
    model = load_reward_model(checkpoint, trust_remote_code=output_options.trust_remote_code).eval()
    if (checkpoint / FORMAT_FILE).is_file():
        fmt = load_input_format(checkpoint)
        tokenizer = Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE))
    else:
        fmt, tokenizer = derive_format(checkpoint, model, max_length, padding_side)
    updates = {"max_length": max_length, "padding_side": padding_side}
    fmt = fmt.model_copy(update={k: v for k, v in updates.items() if v is not None})
    if fmt.max_length > (limit := _max_positions(model.config) or fmt.max_length):
        raise ValueError(f"--max-length {fmt.max_length} is over the model's {limit} positions")
    config = model.config
    outputs = declared_outputs(model, tokenizer, output_options)
    if outputs.gated:
        pooled = GatedObjectives(model, gating_pattern(model, output_options.gating_pattern, tokenizer))
    else:  # a token classifier reads every position
        pooled = model if outputs.steps else _pool_by_mask(model, fmt)
    return ExportSource(
        # eval(): a fresh Module is in training mode, and dropout would then be on in the
        # PyTorch model that parity compares the graph against.
        reward=RewardGraph(pooled, fmt.input_names, outputs).eval(),
        model=model,
        input_format=fmt,
        tokenizer=tokenizer,
        model_type=config.model_type,
        num_heads=getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0),
        hidden_size=getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0),
        parameters=sum(p.numel() for p in model.parameters()),
        outputs=outputs,
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


def derive_format(
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
