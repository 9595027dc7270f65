"""What export reads from a causal language model served as a judge (`export MODEL --judge
PRESET_OR_FILE`): the judge's template and verdict tokens, and the model with a head of only
the LM head's rows for those tokens.

A judge file (JSON; the presets are `judges/*.json` beside this module) holds:

    rule                  "yes_no" (the positive verdict first), "rating" or "pairwise" (A's verdict first)
    rubric                the judge's user turn, with {response} once (pairwise: {response_a} and
                          {response_b} once each) and {prompt} at most once
    system                an optional system turn
    answer_prefix         the start of the answer after the generation prompt, e.g. "Rating: "
    chat_template_kwargs  what the chat template reads besides messages ({"enable_thinking": false})
    verdicts              {label: the text that follows the answer prefix}, e.g. {"yes": "Yes"};
                          a rating's labels are its scores

Each verdict must be one token where it is read: the judge's text and the text with the verdict
after it are tokenized, and the second must be the first plus one token. Export prints the ids it
chose (outputs: ...) and refuses, naming the verdict, when one splits or merges with the text
before it (Qwen's and Gemma's tokenizers split "10" into two digits).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, ValidationError, model_validator
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from rewardserve.bundle import InputFormat, SequenceEncoder
from rewardserve.bundle.judge import JudgeTemplate, ResponsePair, Verdict, judge_text
from rewardserve.bundle.judge.verdict import Rule
from rewardserve.bundle.outputs import ModelOutputs
from rewardserve.export.source import ExportSource, LastTokenReward, RewardGraph, derive_format

# A conversation the verdict tokens are found after: the text before the verdict ends with the
# generation prompt and the answer prefix, whatever the conversation.
SAMPLE = ([{"role": "user", "content": "What is two plus two?"}], [{"role": "assistant", "content": "Four."}])


class JudgeFile(BaseModel):
    """A judge as its file spells it (the module docstring)."""

    rule: Rule
    rubric: str
    system: str | None = None
    answer_prefix: str = ""
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    verdicts: dict[str, str] = Field(min_length=2)

    @model_validator(mode="after")
    def _reads_what_its_rule_reads(self) -> JudgeFile:
        if (self.rule == "pairwise") != self.template().pairwise:
            raise ValueError(
                "rubric: a pairwise judge's rubric has {response_a} and {response_b}, any other judge's {response}"
            )
        return self

    def template(self) -> JudgeTemplate:
        return JudgeTemplate(
            rubric=self.rubric,
            system=self.system,
            answer_prefix=self.answer_prefix,
            chat_template_kwargs=self.chat_template_kwargs,
        )

    def values(self) -> list[float] | None:
        if self.rule != "rating":
            return None
        try:
            return [float(label) for label in self.verdicts]
        except ValueError:
            raise ValueError(f"verdicts: a rating's labels are its scores, not {list(self.verdicts)}") from None


def presets() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in resources.files(__package__).joinpath("judges").iterdir())


def read_judge(preset_or_file: str) -> JudgeFile:
    """A preset by name, else a judge file; ValueError naming the field that is wrong."""
    preset = resources.files(__package__).joinpath("judges", f"{preset_or_file}.json")
    path = Path(preset_or_file)
    if preset.is_file():
        text = preset.read_text()
    elif path.is_file():
        text = path.read_text()
    else:
        raise ValueError(f"--judge {preset_or_file}: neither a preset ({', '.join(presets())}) nor a file")
    try:
        judge = JudgeFile.model_validate_json(text)
        judge.template()  # its slots
        return judge
    except ValidationError as exc:
        raise ValueError(f"--judge {preset_or_file}: {exc}") from None


def verdict_tokens(judge: JudgeFile, encoder: SequenceEncoder) -> Verdict:
    """Each verdict's token id where the judge reads it: after the judge's whole text, tokenized
    as the bundle tokenizes it. ValueError naming the verdict that is not one token there."""
    fmt = encoder.format
    assert fmt.judge is not None
    prompt, response = SAMPLE
    sample = ResponsePair(response, [{"role": "assistant", "content": "Five."}]) if fmt.judge.pairwise else response
    text = "".join(judge_text(fmt.judge, fmt.chat_template, fmt.template_variables, prompt, sample))
    context = encoder.tokenizer.encode(text, add_special_tokens=False).ids
    ids = []
    for label, verdict in judge.verdicts.items():
        after = encoder.tokenizer.encode(text + verdict, add_special_tokens=False).ids
        if after[: len(context)] != context or len(after) != len(context) + 1:
            pieces = [encoder.tokenizer.id_to_token(i) for i in after[len(context) - 1 :]]
            raise ValueError(
                f"verdict {label!r} ({verdict!r}) is not one token after the answer prefix "
                f"{judge.answer_prefix!r}: the text ends {pieces} (a verdict read at one position must be one token "
                "there: change its text or the answer prefix)"
            )
        ids.append(after[-1])
    return Verdict(
        rule=judge.rule,
        labels=list(judge.verdicts),
        tokens=list(judge.verdicts.values()),
        token_ids=ids,
        values=judge.values(),
    )


class VerdictRows(torch.nn.Module):
    """The LM head's rows for the verdict tokens: their logits from a hidden state, soft-capped
    as the model caps its logits (Gemma 2's final_logit_softcapping)."""

    def __init__(self, lm_head: torch.nn.Linear, token_ids: list[int], softcap: float | None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(lm_head.weight.detach()[token_ids].clone(), requires_grad=False)
        bias = getattr(lm_head, "bias", None)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach()[token_ids].clone(), requires_grad=False)
        self.softcap = softcap

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.linear(hidden, self.weight, self.bias)
        return logits if not self.softcap else torch.tanh(logits / self.softcap) * self.softcap


class JudgeModel(torch.nn.Module):
    """A causal LM as the decoder graphs read a reward model (decoder_graph.py): its backbone, its
    config and a `score` head, here the verdict rows, which LastTokenReward reads at the last
    token; `causal_lm` is the whole model, which the reference check runs as its users do."""

    def __init__(self, causal_lm: torch.nn.Module, verdict: Verdict) -> None:
        super().__init__()
        self.causal_lm = causal_lm
        self.config = causal_lm.config
        cap = getattr(self.config, "final_logit_softcapping", None)
        self.score = VerdictRows(causal_lm.get_output_embeddings(), verdict.token_ids, cap)

    @property
    def base_model(self) -> torch.nn.Module:
        return self.causal_lm.base_model


def load_judge_source(
    checkpoint: Path, judge: str, max_length: int | None = None, padding_side: str | None = None
) -> ExportSource:
    """A causal LM `checkpoint` as the judge `judge` (a preset or a file) for export."""
    spec = read_judge(judge)
    causal_lm = load_causal_lm(checkpoint, "--judge")
    fmt, tokenizer = derive_format(checkpoint, causal_lm, max_length, padding_side)
    if fmt.layout != "chat":
        raise ValueError(f"{checkpoint}: a judge is asked through its chat template, and its tokenizer has none")
    fmt = InputFormat.model_validate(fmt.model_dump() | {"judge": spec.template().model_dump()})
    verdict = verdict_tokens(spec, SequenceEncoder(tokenizer, fmt))
    outputs = ModelOutputs(verdict=verdict)
    model = JudgeModel(causal_lm, verdict).eval()
    reads = LastTokenReward(model, causal_lm.config.pad_token_id)
    return causal_lm_source(causal_lm, model, reads, fmt, tokenizer, outputs, {"judge": spec.model_dump()})


def load_causal_lm(checkpoint: Path, flag: str) -> torch.nn.Module:
    """The causal LM at `checkpoint`; ValueError naming `flag` when it is another kind of model."""
    config = AutoConfig.from_pretrained(checkpoint)
    architecture = (getattr(config, "architectures", None) or [""])[0]
    if not architecture.endswith("ForCausalLM"):
        raise ValueError(f"{flag} reads a causal language model (*ForCausalLM); {checkpoint} is {architecture}")
    return AutoModelForCausalLM.from_pretrained(checkpoint).eval()


def causal_lm_source(
    causal_lm: torch.nn.Module,
    model: torch.nn.Module,
    reads: torch.nn.Module,
    fmt: InputFormat,
    tokenizer: Tokenizer,
    outputs: ModelOutputs,
    training: dict | None = None,
) -> ExportSource:
    """The ExportSource of a causal LM read through `model` (its backbone and a head of LM head
    rows), whose outputs `reads` answers from the graph's inputs."""
    config = causal_lm.config
    return ExportSource(
        reward=RewardGraph(reads, fmt.input_names, outputs).eval(),
        model=model,
        input_format=fmt,
        tokenizer=tokenizer,
        model_type=config.model_type,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        parameters=sum(p.numel() for p in causal_lm.parameters()),
        outputs=outputs,
        stats={},
        training=training or {},
    )
