"""What a checkpoint needs beyond its weights: a real pad token, and the input format.

The input format travels with the checkpoint (`rewardserve_input_format.json`), so export
writes the very format training used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rewardserve.bundle import InputFormat
from rewardserve.bundle.chat import PAIR_LAYOUT_TEMPLATE

FORMAT_FILE = "rewardserve_input_format.json"
TOKENIZER_FILE = "tokenizer.json"
STATS_FILE = "reward_stats.json"  # reward mean/std and calibration temperature, read by export
METRICS_FILE = "training_metrics.json"
ADDED_PAD_TOKEN = "<|pad|>"

# For decoders without a chat template: an HH-style transcript that ends the prompt with the
# assistant's turn marker, so the response follows it as the model would generate it.
TRANSCRIPT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '\\n\\n' + {'user': 'Human', 'assistant': 'Assistant'}.get(m.role, m.role | capitalize) + ': ' + m.content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)


def is_pair_encoder(tokenizer) -> bool:
    """BERT/DeBERTa-style tokenizers, whose models read `[CLS] prompt [SEP] response [SEP]`."""
    return tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None


def uses_segment_ids(model_config) -> bool:
    """BERT-style models embed segment ids (0: prompt, 1: response); DeBERTa-v3 and decoders do not."""
    return getattr(model_config, "type_vocab_size", 0) >= 2


def ensure_pad_token(tokenizer, model) -> bool:
    """Give a decoder a pad token of its own; True when one was added.

    With pad == eos (or no pad at all) the EOS that ends every sequence is read as padding, so
    the reward is pooled from the wrong token, and with left padding from a pad position.
    """
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    added = pad is None or (pad == eos and not is_pair_encoder(tokenizer))
    if added:
        tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return added


def default_chat_template(tokenizer) -> str:
    """The checkpoint's own chat template, else the one that fits its pair layout."""
    return getattr(tokenizer, "chat_template", None) or (
        PAIR_LAYOUT_TEMPLATE if is_pair_encoder(tokenizer) else TRANSCRIPT_TEMPLATE
    )


def template_variables(tokenizer) -> dict[str, str]:
    """The special tokens transformers passes to a chat template (`bos_token`, `eos_token`, ...)."""
    return {name: token for name, token in tokenizer.special_tokens_map.items() if isinstance(token, str)}


def derive_input_format(
    tokenizer, model_config, max_length: int, padding_side: Literal["right", "left"] = "right"
) -> InputFormat:
    """The layout for a checkpoint: `[CLS] prompt [SEP] response [SEP]` for encoders; for decoders
    with a chat template (their own, or the one they were trained on) the chat layout, as chat
    reward models are scored on their model cards; for other decoders `[BOS] prompt response
    [EOS]`, pooled at the EOS (the last real token)."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; call ensure_pad_token first")
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    max_length = min(max_length, positions or max_length)
    template = default_chat_template(tokenizer)
    if is_pair_encoder(tokenizer):
        return InputFormat(
            prefix_ids=[tokenizer.cls_token_id],
            separator_ids=[tokenizer.sep_token_id],
            suffix_ids=[tokenizer.sep_token_id],
            pad_id=tokenizer.pad_token_id,
            max_length=max_length,
            padding_side=padding_side,
            token_type_ids=uses_segment_ids(model_config),
            chat_template=template,
        )
    decoder = dict(
        separator_ids=[],
        pad_id=tokenizer.pad_token_id,
        max_length=max_length,
        padding_side=padding_side,
        token_type_ids=False,
        position_ids=True,
        chat_template=template,
    )
    if getattr(tokenizer, "chat_template", None):
        # A chat reward model: scored as its model card scores it, the whole conversation
        # rendered with its template and read at the rendering's last token.
        variables = template_variables(tokenizer)
        return InputFormat(**decoder, prefix_ids=[], suffix_ids=[], layout="chat", template_variables=variables)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{model_config.model_type}: a decoder needs an EOS token to pool the reward from")
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return InputFormat(
        **decoder, prefix_ids=[tokenizer.bos_token_id] if adds_bos else [], suffix_ids=[tokenizer.eos_token_id]
    )


def save_input_format(checkpoint_dir: Path, fmt: InputFormat) -> None:
    (Path(checkpoint_dir) / FORMAT_FILE).write_text(fmt.model_dump_json(indent=2) + "\n")


def load_input_format(checkpoint_dir: Path) -> InputFormat:
    path = Path(checkpoint_dir) / FORMAT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; was this checkpoint written by `rewardserve train`?")
    return InputFormat.model_validate_json(path.read_text())
