"""Held-out HH prompts as the model reads them, and the reward gaps of preference pairs from a
bare graph: what export's agreement gate and its calibration fit read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rewardserve.bundle import EncodedSequence, InputFormat, SequenceEncoder
from rewardserve.bundle.formatting import Text
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.prefix import PrefixRunner
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.data.hh import prompt_turns
from rewardserve.data.preferences import PreferenceExample


def model_prompt(fmt: InputFormat, prompt: str) -> Text:
    """A data prompt (an HH transcript, or text) as the model reads it: the text itself in the
    pair layout, the conversation it spells in the chat layout."""
    return prompt_turns(prompt) if fmt.layout == "chat" else prompt


def example_inputs(fmt: InputFormat, examples: Sequence[PreferenceExample]) -> list[tuple[Text, Text]]:
    """(prompt, response) of every response of `examples`, in order, as the model reads them."""
    return [pair for e in examples for pair in e.model_inputs(fmt.layout)]


def example_sequences(encoder: SequenceEncoder, examples: Sequence[PreferenceExample]) -> list[EncodedSequence]:
    """Every response of `examples`, in example_inputs' order, encoded as the model reads it."""
    inputs = example_inputs(encoder.format, examples)
    return encoder.encode([p for p, _ in inputs], [r for _, r in inputs])


def example_rewards(
    runner: GraphRunner,
    examples: Sequence[PreferenceExample],
    progress: str | None = None,
    prefix: PrefixRunner | None = None,
) -> np.ndarray:
    """The reward of every response of `examples`, in example_inputs' order (with `prefix`, each
    prompt its responses share run once: offline.score_sequences)."""
    return score_sequences(
        runner, example_sequences(runner.encoder, examples), progress=progress, prefix=prefix
    ).rewards


def response_count(examples: Sequence[PreferenceExample]) -> int:
    return sum(len(e.responses) for e in examples)


def reward_gaps(runner: GraphRunner, examples: Sequence[PreferenceExample], progress: str | None = None) -> np.ndarray:
    """r(better) - r(worse) of every strictly ordered pair of `examples`, in a fixed order."""
    return gaps_of(examples, example_rewards(runner, examples, progress))


def gaps_of(examples: Sequence[PreferenceExample], rewards: np.ndarray) -> np.ndarray:
    """reward_gaps from rewards already scored in example_inputs' order (those past `examples`'
    own responses are not read), so that one scoring serves several passes."""
    rewards = iter(rewards)
    gaps = []
    for e in examples:
        scores = [float(next(rewards)) for _ in e.responses]
        gaps += [scores[i] - scores[j] for i, j in e.ordered_pairs()]
    return np.array(gaps, dtype=np.float64)
