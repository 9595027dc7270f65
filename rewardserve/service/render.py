"""Stage 2, render: Inputs -> (prompt, response) texts, conversations through the bundle's chat
template (`bundle/chat.py`, the code training renders with), so both see the same text.

Rendering costs about 0.1 ms a conversation, so it runs on the tokenizer thread beside
tokenization, not on the event loop: a 1024-item chat request would otherwise hold the loop
for a tenth of a second.
"""

from __future__ import annotations

from rewardserve.bundle.chat import ChatTemplateError, split_conversation
from rewardserve.service.errors import UnrenderableChatError
from rewardserve.service.validate import Inputs

Texts = tuple[list[str], list[str]]  # prompts, responses


class Render:
    def __init__(self, chat_template: str) -> None:
        self.chat_template = chat_template

    def __call__(self, inputs: Inputs) -> Texts:
        """(prompts, responses) as text; UnrenderableChatError naming the sequence's field."""
        prompts, responses = [], []
        for sequence in inputs.sequences:
            prompt, response = sequence.prompt, sequence.response
            if not isinstance(prompt, str):
                try:
                    prompt, response = split_conversation(self.chat_template, prompt, response)
                except ChatTemplateError as error:
                    raise UnrenderableChatError(f"{sequence.path}: {error}") from None
            prompts.append(prompt)
            responses.append(response)
        return prompts, responses
