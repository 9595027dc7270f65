"""What export reads from a causal language model served as a token-probability process reward
model (Math-Shepherd, Wang et al. 2024): `export MODEL --step-separator TAG --step-tokens GOOD,BAD`.

The model's authors score a response's steps as Math-Shepherd's model card does:

    logits = model(tokenizer(question + " " + output)).logits[:, :, [good_id, bad_id]]
    step_rewards = logits.softmax(-1)[:, :, 0][input_ids == step_tag_id]

that is, at each step tag the probability of the good token over the two, read from the LM
head's rows for those two tokens. The graph holds those two rows at every position (never the
vocabulary's); the served step rewards, the scalar made of them, and everything a token-classifier
PRM has (steps found in the text, their count checked after tokenizing) are as they are there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.modeling_outputs import TokenClassifierOutput

from rewardserve.bundle.outputs import ModelOutputs, Steps
from rewardserve.export.judge_source import VerdictRows, causal_lm_source, load_causal_lm
from rewardserve.export.source import ExportSource, OutputOptions, derive_format, one_token


class StepTokensModel(torch.nn.Module):
    """A causal LM as a token classifier whose classes are its logits for the step tokens, at
    every position (soft-capped where the model caps its logits); `causal_lm` is the whole model,
    which the reference check runs as its users do."""

    def __init__(self, causal_lm: torch.nn.Module, token_ids: list[int]) -> None:
        super().__init__()
        self.causal_lm = causal_lm
        self.config = causal_lm.config
        cap = getattr(self.config, "final_logit_softcapping", None)
        self.score = VerdictRows(causal_lm.get_output_embeddings(), token_ids, cap)

    @property
    def base_model(self) -> torch.nn.Module:
        return self.causal_lm.base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs) -> TokenClassifierOutput:
        hidden = self.base_model(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))


def load_token_prm_source(
    checkpoint: Path, options: OutputOptions, max_length: int | None = None, padding_side: str | None = None
) -> ExportSource:
    """A causal LM `checkpoint` read as a process reward model by the probability of
    `options.step_tokens[0]` against `[1]` at each `options.step_separator`."""
    if options.step_separator is None or options.step_tokens is None or len(options.step_tokens) != 2:
        raise ValueError("--step-tokens GOOD,BAD: two tokens, the good one first, read at each --step-separator")
    causal_lm = load_causal_lm(checkpoint, "--step-tokens")
    fmt, tokenizer = derive_format(checkpoint, causal_lm, max_length, padding_side)
    ids = [one_token(tokenizer, "--step-separator", options.step_separator)]
    ids += [one_token(tokenizer, "--step-tokens", token) for token in options.step_tokens]
    if len(set(ids)) != 3:
        raise ValueError(f"--step-separator and --step-tokens: three different tokens, not ids {ids}")
    steps = Steps(
        separator=options.step_separator,
        token_id=ids[0],
        label=0,
        scalar=options.step_scalar,
        class_tokens=list(options.step_tokens),
        class_token_ids=ids[1:],
    )
    model = StepTokensModel(causal_lm, ids[1:]).eval()
    return causal_lm_source(causal_lm, model, model, fmt, tokenizer, ModelOutputs(steps=steps))
