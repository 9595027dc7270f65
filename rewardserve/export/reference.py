"""Export's reference check: the rewards the bundle serves against the rewards the model's authors
compute, with the checkpoint's own transformers code on the same held-out inputs.

Parity (`parity.measure_parity`) compares the graph with PyTorch on the ids rewardserve
builds, so it cannot see ids built wrong: another template rendering, an EOS appended, a second
BOS, special tokens split as text, the reward read at another token. This check builds the ids
the reference way and compares both the ids and the rewards:

- chat layout: ``model(**tokenizer.apply_chat_template(conversation, return_tensors="pt")).logits[0][0]``
  with the model's own class, as reward model cards (Skywork-Reward-V2, InternLM2-Reward) score;
- pair layout, encoders: ``model(**tokenizer(prompt, response, return_tensors="pt"))``, as
  OpenAssistant's DeBERTa reward models are scored (and rewardserve's own models were trained);
- pair layout, decoders: ``tokenizer(prompt + response)`` and the EOS, read at the EOS;
- judges: ``AutoModelForCausalLM`` on ``tokenizer.apply_chat_template(judge_messages,
  add_generation_prompt=True, tokenize=False) + answer_prefix``, the softmax over the whole
  vocabulary at the last position, then the judge's rule on its verdict tokens.

A model with more outputs is compared on each (`USAGE_OF_OUTPUTS`): every label of an N-label
head (`logits[0]`); ArmoRM's `output.score`, `output.rewards` and `output.gating_output`; a
process reward model's step rewards as Qwen2.5-Math-PRM's model card reads them, the positive
class's softmax probability wherever the input ids are the step token (a causal LM's, as
Math-Shepherd's card does: the whole model's logits for the good and bad tokens, softmaxed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from rewardserve.bundle.chat import as_turns
from rewardserve.bundle.formatting import EncodedSequence, InputFormat, SequenceEncoder, Text
from rewardserve.bundle.judge import judge_messages
from rewardserve.bundle.manifest import Reference
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.outputs import ModelOutputs, Scores, step_scalar
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.export.source import ExportSource

MIN_CONVERSATIONS = 64
CONVERSATIONS = 128  # checked when the inputs have as many within max_length
TOLERANCE = 1e-4  # fp32, absolute

USAGE = {
    "chat": "model(**tokenizer.apply_chat_template(messages, return_tensors='pt')).logits[0][0]",
    "encoder": "model(**tokenizer(prompt, response, return_tensors='pt')).logits[0][0]",
    "decoder": "model(tokenizer(prompt + response).input_ids + [eos_token_id]).logits[0][0], read at the EOS",
    "judge": "log_softmax(AutoModelForCausalLM(tokenizer(tokenizer.apply_chat_template(judge_messages, "
    "add_generation_prompt=True, tokenize=False) + answer_prefix, add_special_tokens=False)).logits[0, -1])"
    "[verdict tokens], then the rule",
}
USAGE_OF_OUTPUTS = {
    "objectives": "; objectives: its .logits[0], the reward by the declared rule",
    "gated": "; output.score, output.rewards (objectives) and output.gating_output of the model's own class",
    "steps": "; step rewards: softmax(logits[0])[input_ids[0] == step token][:, label] (sigmoid for one class)",
    "step_tokens": "; step rewards: softmax(AutoModelForCausalLM(...).logits[0][:, [good, bad]])[input_ids[0] == step "
    "token][:, 0]",
}


class ReferenceMismatch(RuntimeError):
    """The bundle would serve rewards other than the model's reference usage gives."""


@dataclass(frozen=True)
class ModelCardRewards:
    """The reference's rewards on held-out inputs, computed while the PyTorch model is loaded,
    with the ids the bundle builds for the same inputs (already checked equal to the reference's)."""

    usage: str
    inputs: list[int]  # which of the inputs given were checked
    sequences: list[EncodedSequence]
    scores: Scores


def model_card_rewards(
    checkpoint: Path,
    source: ExportSource,
    encoder: SequenceEncoder,
    inputs: Sequence[tuple[Text, Text]],
    conversations: int | None = None,
) -> ModelCardRewards:
    """The reference side of the check, on the first `conversations` (default CONVERSATIONS) of
    `inputs` that fit the model's length untruncated (the reference has no truncation policy).
    ReferenceMismatch names the first input and token position where the ids differ."""
    fmt = encoder.format
    wanted = max(conversations or CONVERSATIONS, MIN_CONVERSATIONS)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.model_max_length = 1 << 30  # inputs over max_length are skipped here, not warned about
    kind = _kind(fmt)
    # A causal LM (a judge's, a token-probability PRM's) is judged as its whole self; the chat
    # layout against the model's own class (its pooling included); the pair layout against the
    # checkpoint's PyTorch reward, whose pooling is rewardserve's documented one.
    causal_lm = getattr(source.model, "causal_lm", None)
    model = causal_lm if causal_lm is not None else source.model if kind == "chat" else source.reward.model
    outputs = source.outputs
    checked, served, references = [], [], []
    with tqdm(total=wanted, desc="reference: transformers", unit="input", leave=False) as bar:
        for index, (prompt, response) in enumerate(inputs):
            if len(checked) == wanted:
                break
            reference = _reference_inputs(tokenizer, fmt, kind, prompt, response)
            if reference["input_ids"].shape[1] > fmt.max_length:
                continue
            (sequence,) = encoder.encode([prompt], [response])
            _check_ids(index, sequence.ids, reference["input_ids"][0].numpy(), tokenizer)
            with torch.inference_mode():
                on_device = {name: tensor.to(source.device) for name, tensor in reference.items()}
                # A judge's rule reads the last position only: its logits alone, not the vocabulary's at every one.
                last_only = {"logits_to_keep": 1} if kind == "judge" else {}
                answer = model(**on_device, **last_only)
                references.append(_reference_scores(answer, reference["input_ids"][0].numpy(), outputs))
            checked.append(index)
            served.append(sequence)
            bar.update(1)
    if len(checked) < MIN_CONVERSATIONS:
        raise ValueError(f"the reference check needs {MIN_CONVERSATIONS} inputs within max_length, got {len(checked)}")
    usage = USAGE[kind] + _usage_of_outputs(outputs)
    return ModelCardRewards(usage, checked, served, Scores.concatenate(references))


def _kind(fmt: InputFormat) -> str:
    if fmt.judge is not None:
        return "judge"
    return "chat" if fmt.layout == "chat" else "decoder" if fmt.position_ids else "encoder"


def _usage_of_outputs(outputs: ModelOutputs) -> str:
    if outputs.steps is not None:
        return USAGE_OF_OUTPUTS["steps" if outputs.steps.class_token_ids is None else "step_tokens"]
    if outputs.verdict is not None:
        return f" ({outputs.verdict.rule})"
    if outputs.objectives is not None:
        return USAGE_OF_OUTPUTS["gated" if outputs.gated else "objectives"]
    return ""


def _reference_scores(answer, input_ids: np.ndarray, outputs: ModelOutputs) -> Scores:
    """One input's outputs read from the model's own answer, the way its model card reads them."""
    if (verdict := outputs.verdict) is not None:  # the whole vocabulary's softmax at the answer position
        log_probs = torch.log_softmax(answer.logits[0, -1].double(), -1)[verdict.token_ids]
        rewards, probabilities = verdict.read(log_probs.cpu().numpy()[None])
        return Scores(rewards, verdict=probabilities)
    if (steps := outputs.steps) is not None:
        logits = answer.logits[0].float()
        if steps.class_token_ids is not None:  # Math-Shepherd's card: logits[:, :, candidate_tokens]
            logits = logits[:, steps.class_token_ids]
        classes = torch.softmax(logits, -1) if steps.activation == "softmax" else torch.sigmoid(logits)
        rewards = classes[torch.from_numpy(input_ids == steps.token_id)][:, steps.label].cpu().numpy()
        return Scores(np.array([step_scalar(rewards, steps.scalar)], np.float32), steps=[rewards])
    if outputs.gated:
        return Scores(
            answer.score.float().cpu().numpy().reshape(1),
            answer.rewards.float().cpu().numpy(),
            answer.gating_output.float().cpu().numpy(),
        )
    logits = answer.logits.float().cpu().numpy()
    objectives = outputs.objectives
    if objectives is None:
        return Scores(logits[:, 0])
    return Scores((logits @ np.array(objectives.weight_vector(), np.float32)).reshape(1), logits)


def check_reference(runner: GraphRunner, expected: ModelCardRewards) -> Reference:
    """The bundle (`runner`: its graph and encoder) against the reference's outputs, served as the
    server serves: in padded batches of mixed lengths. ReferenceMismatch names the input whose
    reward differs most, or the output that differs."""
    served = score_sequences(runner, expected.sequences, progress="reference: the bundle")
    diffs = np.abs(served.rewards - expected.scores.rewards)
    if diffs.max() > TOLERANCE:
        worst = int(diffs.argmax())
        raise ReferenceMismatch(
            f"input {expected.inputs[worst]}: the served reward differs from {expected.usage} by {diffs[worst]:.3g} "
            f"(over {TOLERANCE}) on the same token ids: the reward is read at another position or computed otherwise"
        )
    by_output = served.max_abs_diff(expected.scores)
    for name, diff in by_output.items():
        if diff > TOLERANCE:
            raise ReferenceMismatch(
                f"{name}: the served values differ from {expected.usage} by {diff:.3g} (over {TOLERANCE})"
            )
    return Reference(
        usage=expected.usage,
        conversations=len(expected.inputs),
        max_abs_diff=max(by_output.values()),
        by_output=by_output if len(by_output) > 1 else {},
    )


def _reference_inputs(tokenizer, fmt: InputFormat, kind: str, prompt: Text, response: Text) -> dict[str, torch.Tensor]:
    if kind == "judge":
        judge = fmt.judge
        messages = judge_messages(judge, *as_turns(prompt, response))
        text = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **judge.chat_template_kwargs
        )
        return dict(tokenizer(text + judge.answer_prefix, add_special_tokens=False, return_tensors="pt"))
    if kind == "chat":
        prompt_turns, response_turns = as_turns(prompt, response)
        conversation = [dict(m) for m in (*prompt_turns, *response_turns)]
        return dict(tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True))
    if not (isinstance(prompt, str) and isinstance(response, str)):
        raise TypeError("the pair layout's reference takes text")
    if kind == "encoder":
        return dict(tokenizer(prompt, response, return_tensors="pt"))
    ids = [*tokenizer(prompt + response)["input_ids"], tokenizer.eos_token_id]
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}


def _check_ids(index: int, served: np.ndarray, reference: np.ndarray, tokenizer) -> None:
    if np.array_equal(served, reference):
        return
    width = min(len(served), len(reference))
    at = next((i for i in range(width) if served[i] != reference[i]), width)

    def token(ids: np.ndarray) -> str:
        return repr(tokenizer.convert_ids_to_tokens(int(ids[at]))) if at < len(ids) else "the end"

    raise ReferenceMismatch(
        f"input {index}: token {at} differs: the bundle has {token(served)} where the reference has "
        f"{token(reference)} ({len(served)} tokens served, {len(reference)} in the reference)"
    )
