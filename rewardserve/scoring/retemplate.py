"""Stage 2, retemplate: policy-formatted text -> the conversation it spells (`bundle/policy_text.py`),
which the bundle's own template then renders (`tokenize.py`, through `bundle/formatting.py`).

RL trainers send what their policy saw and wrote, decoded in the policy's chat format
(OpenRLHF's `/get_reward` queries; `/score` with `"policy_format"`). Scored as it is, a ChatML
query would reach a Llama-3 reward model as text it never saw in training. Parsed back to
messages, it is rendered with the model's own template, as the model's authors score.

Parsing runs on the tokenizer thread, beside tokenization: a 1024-query request would otherwise
hold the event loop.
"""

from __future__ import annotations

from typing import Literal

from rewardserve.bundle import policy_text
from rewardserve.bundle.formatting import Text
from rewardserve.scoring.errors import UnparseablePolicyTextError
from rewardserve.scoring.validate import Input, Inputs

Unparsed = Literal["refuse", "raw"]
Texts = tuple[list[Text], list[Text]]  # prompts, responses: text or chat messages


class Retemplate:
    def __init__(self, unparsed: Unparsed = "refuse") -> None:
        self.unparsed = unparsed  # what text that no format parses gets: a 422, or scored as it is

    def __call__(self, inputs: Inputs) -> Texts:
        """(prompts, responses), policy text as messages; UnparseablePolicyTextError naming the field."""
        prompts, responses = [], []
        for sequence in inputs.sequences:
            prompt, response = (
                self._parsed(sequence) if sequence.policy_format else (sequence.prompt, sequence.response)
            )
            prompts.append(prompt)
            responses.append(response)
        return prompts, responses

    def _parsed(self, sequence: Input) -> tuple[Text, Text]:
        assert isinstance(sequence.prompt, str) and isinstance(sequence.response, str)
        try:
            messages = policy_text.parse(sequence.prompt + sequence.response, sequence.policy_format)
        except policy_text.PolicyTextError as error:
            if self.unparsed == "raw":
                return sequence.prompt, sequence.response
            raise UnparseablePolicyTextError(
                f"{sequence.path}: {error}; name the format with policy_format, or start the server with "
                "REWARDSERVE_UNPARSED_POLICY_TEXT=raw to score such text as it is"
            ) from None
        if messages[-1]["role"] != "assistant":
            raise UnparseablePolicyTextError(
                f"{sequence.path}: the {sequence.policy_format} text ends with a {messages[-1]['role']} turn; "
                "the last turn is the response scored, an assistant's"
            )
        return messages[:-1], messages[-1:]
