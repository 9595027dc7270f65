"""The reward model: a pretrained transformer with a scalar head on a pooled hidden state.

Three poolings:

- ``response_mean``: the mean of the last hidden states over the response's tokens (segment 1
  of `[CLS] prompt [SEP] response [SEP]`), then a linear head. Mean pooling is how
  sentence-transformers checkpoints such as the default MiniLM were trained, so the pooled
  vector means something from the first step; their [CLS] state and BERT pooler were never
  trained for it, and the pooler's tanh can saturate, which stalls training (gradient norm
  1e-3). Pooling over the response alone keeps the shared prompt, often the longer part, from
  diluting the difference between two responses; the response tokens still attend to it.
- ``mean``: the same over all real tokens (for models without segment ids).
- ``model``: the checkpoint's own sequence-classification head (BERT's [CLS] pooler, a
  decoder's last real token); any `AutoModelForSequenceClassification` checkpoint.

Either way `model(**inputs).logits[:, 0]` is the reward, so the trainer and the exporter do not
care which one they hold. A mean-pooled checkpoint is the backbone's own HF directory plus
`reward_head.json` and `reward_head.safetensors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from rewardserve.training.config import Pooling

MeanPooling = Literal["response_mean", "mean"]
HEAD_FILE = "reward_head.json"
HEAD_WEIGHTS = "reward_head.safetensors"


class MeanPooledRewardModel(torch.nn.Module):
    """`score(mean of the backbone's last hidden states over the response's or all real tokens)`."""

    def __init__(self, backbone: PreTrainedModel, pooling: MeanPooling, outputs: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.config = backbone.config  # the Trainer reads it
        hidden = backbone.config.hidden_size
        self.score = torch.nn.Linear(hidden, outputs)  # one reward, or one per objective
        # Stiennon et al. (2020): a reward head drawn from N(0, 1/(d+1)) starts with rewards of
        # about unit variance whatever the width.
        torch.nn.init.normal_(self.score.weight, std=(hidden + 1) ** -0.5)
        torch.nn.init.zeros_(self.score.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs) -> SequenceClassifierOutput:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        # Segment 1 is the response and its closing [SEP]; padding is segment 0.
        mask = attention_mask * inputs["token_type_ids"] if self.pooling == "response_mean" else attention_mask
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return SequenceClassifierOutput(logits=self.score(pooled))

    def resize_token_embeddings(self, size: int) -> None:
        self.backbone.resize_token_embeddings(size)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, out: str | Path) -> None:
        out = Path(out)
        self.backbone.save_pretrained(out)
        save_file({k: v.contiguous() for k, v in self.score.state_dict().items()}, out / HEAD_WEIGHTS)
        head = {"pooling": self.pooling, "outputs": self.score.out_features}
        (out / HEAD_FILE).write_text(json.dumps(head, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MeanPooledRewardModel:
        head = json.loads((Path(path) / HEAD_FILE).read_text())
        model = cls(_backbone(path), head["pooling"], head.get("outputs", 1))
        model.score.load_state_dict(load_file(Path(path) / HEAD_WEIGHTS))
        return model


def _backbone(path: str | Path) -> PreTrainedModel:
    """The bare transformer; BERT-style models without their [CLS] pooler, which mean pooling
    does not use (decoders have none, and reject the argument)."""
    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(path)


def resolve_pooling(pooling: Pooling, is_encoder: bool, segment_ids: bool) -> Pooling:
    """`auto`: response-mean pooling for encoders with segment ids, else the checkpoint's own head
    (a decoder's last token). Response-mean pooling needs the segment ids that mark the response."""
    if pooling == "auto":
        return "response_mean" if is_encoder and segment_ids else "model"
    if pooling == "response_mean" and not segment_ids:
        raise ValueError("--pooling response_mean needs a model with segment ids (token_type_ids); use mean")
    return pooling


def new_reward_model(base_model: str | Path, pooling: Pooling, objectives: list[str] | None = None) -> torch.nn.Module:
    """A reward model to fine-tune from a pretrained checkpoint, with a resolved pooling: one
    reward, or one per objective named (in its config's id2label, where export reads them)."""
    outputs = len(objectives) if objectives else 1
    if pooling in ("response_mean", "mean"):
        model = MeanPooledRewardModel(_backbone(base_model), pooling, outputs)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=outputs)
    if objectives:
        model.config.id2label = dict(enumerate(objectives))
        model.config.label2id = {name: i for i, name in enumerate(objectives)}
    return model


def load_reward_model(checkpoint: str | Path, trust_remote_code: bool = False) -> torch.nn.Module:
    """A trained reward model: ours (either pooling); a sequence-classification checkpoint, with
    as many labels as its head has (one for a checkpoint that is not a classifier yet); a
    token-classification one (a process reward model); or, with `trust_remote_code`, the
    checkpoint's own class that its config's auto_map names (ArmoRM's gated head), read from its
    directory. Custom code is never run unless asked for."""
    if (Path(checkpoint) / HEAD_FILE).is_file():
        return MeanPooledRewardModel.from_pretrained(checkpoint)
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    architecture = (getattr(config, "architectures", None) or [""])[0]
    own_code = "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {})
    if own_code and not trust_remote_code:
        raise ValueError(
            f"{checkpoint}: its model class ({architecture}) is the checkpoint's own code (auto_map); read it, then "
            "export with --trust-remote-code"
        )
    if architecture.endswith("ForTokenClassification"):
        return AutoModelForTokenClassification.from_pretrained(checkpoint)
    if own_code:
        return AutoModelForSequenceClassification.from_pretrained(checkpoint, trust_remote_code=True)
    labels = config.num_labels if architecture.endswith("ForSequenceClassification") else 1
    return AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=labels)
