"""What every component is: a name, its spec, and its values for a request's sequences.

Rules, remote servers and judges read each sequence as an Item: the conversation so far (policy
text parsed back into messages, as the served models read it), the response's text, and the
label the request sent. Served models read the request's own Inputs, through their pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardserve.bundle.chat import Conversation
from rewardserve.compose.spec import Common
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import InvalidLabelError
from rewardserve.scoring.retemplate import Retemplate
from rewardserve.scoring.validate import Inputs


@dataclass(frozen=True, slots=True)
class Item:
    prompt: str | Conversation  # text, or the conversation so far
    response: str  # the response's text (an assistant turn's content)
    label: Any  # what the request sent beside it (None: nothing)
    path: str  # the request field its errors name

    def answer(self) -> str:
        """The label as a reference answer: the label itself, or its "answer"."""
        answer = self.label.get("answer") if isinstance(self.label, dict) else self.label
        if answer is None or isinstance(answer, dict | list):
            raise InvalidLabelError(
                f'{self.path}: needs a label, the reference answer (a string or number, or {{"answer": ...}})'
            )
        return str(answer)

    def prompt_text(self) -> str:
        """The prompt as a judge reads it: text, or each turn as `role: content`."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n\n".join(f"{turn['role']}: {turn['content']}" for turn in self.prompt)


def items_of(inputs: Inputs) -> list[Item]:
    """Each sequence as rules and remote components read it: policy text parsed back into its
    conversation where a format parses it (else read as it is)."""
    prompts, responses = Retemplate("raw")(inputs)
    return [
        Item(prompt, response if isinstance(response, str) else response[-1]["content"], spelled.label, spelled.path)
        for prompt, response, spelled in zip(prompts, responses, inputs.sequences, strict=True)
    ]


class Component(ABC):
    def __init__(self, name: str, spec: Common) -> None:
        self.name = name
        self.spec = spec

    @abstractmethod
    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        """One value per sequence, in order; a ServiceError when there are none."""

    async def start(self) -> None:
        """Get ready to serve (a worker process, a connection pool); most components need nothing."""
        return None

    async def stop(self) -> None:
        """Release what `start` took."""
        return None
