"""A composed reward's spec: a TOML file naming components and how they combine.

    name = "helpful-and-correct"          # the name it is served under (default: "reward")
    clip = [-5.0, 5.0]                    # optional: the combined reward is clipped to it

    [combine]                             # optional: rule = "sum" (default) or "llama2"
    rule = "sum"

    [components.helpful]
    type = "model"                        # a model this server serves (--bundle helpful=PATH)
    weight = 1.0
    normalize = "bundle"                  # optional: "bundle" (its reference statistics) or "running"

    [components.correct]
    type = "math"                         # math-verify: 1 when the answer equals the item's label
    weight = 1.0

Every component takes `weight` (default 1), `normalize`, `timeout` (seconds) and `fallback` (the
value used, and flagged, when it fails or times out; without one the request fails, naming it).
docs/compose.md has a spec for each common case.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = 1.0
    normalize: Literal["bundle", "running"] | None = Field(
        None,
        description="bundle: (value - mean) / std with the bundle's reference statistics (model components); "
        "running: with the mean and std of every value served so far (Welford), updated after each request.",
    )
    timeout: float | None = Field(None, gt=0, description="Seconds before the component counts as failed.")
    fallback: float | None = Field(
        None, description="The value used when the component fails or times out; the response flags it."
    )


class ModelComponent(Common):
    """A model this server serves, by name: its reward, or one of its objectives."""

    type: Literal["model"]
    model: str
    objective: str | None = None


class RemoteComponent(Common):
    """Another reward server over HTTP: rewardserve's `/score`, or anything that answers vLLM's
    `/classify` (the reward read as `data[i].probs[-1]`, with `use_activation: false`)."""

    type: Literal["remote"]
    url: str = Field(description="The server's base URL, e.g. http://safety-rm:8000")
    protocol: Literal["score", "classify"] = "score"
    model: str | None = Field(None, description="The `model` each request names.")
    api_key_env: str | None = Field(None, description="An environment variable holding its Bearer key.")
    timeout: float | None = Field(30.0, gt=0)


class JudgeComponent(Common):
    """A chain-of-thought judge on an OpenAI-compatible generation engine (vLLM, SGLang): the
    rubric filled in with the prompt and the response, its verdict parsed from the completion."""

    type: Literal["judge"]
    url: str = Field(description="The engine's OpenAI API base, e.g. http://vllm:8000/v1")
    model: str
    rubric: str = Field(description="The judge's instructions, with {prompt} and {response}.")
    verdict: str = Field(description="A regular expression whose first group is the verdict's number.")
    scale: tuple[float, float] | None = Field(None, description="[low, high]: the verdict mapped to [0, 1].")
    max_tokens: int = Field(1024, ge=1)
    request_fields: dict[str, Any] = Field(
        {},
        description="More fields for each request, as the engine names them (vLLM: chat_template_kwargs, "
        "structured_outputs, ...).",
    )
    api_key_env: str | None = None
    timeout: float | None = Field(120.0, gt=0)

    @field_validator("rubric")
    @classmethod
    def _has_slots(cls, rubric: str) -> str:
        for slot in ("{prompt}", "{response}"):
            if slot not in rubric:
                raise ValueError(f"the rubric has no {slot}")
        return rubric

    @field_validator("verdict")
    @classmethod
    def _one_group(cls, verdict: str) -> str:
        if re.compile(verdict).groups < 1:
            raise ValueError("the verdict pattern needs a group: the number it captures is the verdict")
        return verdict


class MathComponent(Common):
    """math-verify (HF's verifier): `correct` when the response's final answer equals the item's
    label (the reference answer) as mathematics, else `wrong`."""

    type: Literal["math"]
    correct: float = 1.0
    wrong: float = 0.0


class FormatComponent(Common):
    """A regular expression the response must match (Python's `re.search`; DOTALL)."""

    type: Literal["format"]
    pattern: str
    match: float = 1.0
    mismatch: float = 0.0

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        re.compile(pattern)
        return pattern


class LengthComponent(Common):
    """DAPO's soft overlong penalty, in characters of the response: 0 up to `limit - buffer`,
    falling linearly to -1 at `limit`, and -1 past it."""

    type: Literal["length"]
    limit: int = Field(gt=0)
    buffer: int = Field(gt=0)

    @model_validator(mode="after")
    def _buffer_within_limit(self) -> LengthComponent:
        if self.buffer > self.limit:
            raise ValueError("buffer: over the limit")
        return self


Component = Annotated[
    ModelComponent | RemoteComponent | JudgeComponent | MathComponent | FormatComponent | LengthComponent,
    Field(discriminator="type"),
]


class Combine(BaseModel):
    """sum: the weighted sum of every component. llama2: Llama 2's rule, the `safety` model's
    reward where the item's label says the prompt is unsafe or sigmoid(safety) < `threshold`,
    else the `helpfulness` model's (each raw, before normalisation); plus the weighted sum of
    the other components."""

    model_config = ConfigDict(extra="forbid")

    rule: Literal["sum", "llama2"] = "sum"
    safety: str | None = None
    helpfulness: str | None = None
    threshold: float = Field(0.15, gt=0, lt=1)


class RewardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "reward"
    clip: tuple[float, float] | None = None
    combine: Combine = Combine()
    components: dict[str, Component] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RewardSpec:
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ValueError("clip: [low, high] with low < high")
        if self.combine.rule == "llama2":
            for role in ("safety", "helpfulness"):
                name = getattr(self.combine, role)
                if name is None:
                    raise ValueError(f"combine.{role}: Llama 2's rule needs the {role} component's name")
                if not isinstance(self.components.get(name), ModelComponent | RemoteComponent):
                    raise ValueError(f"combine.{role}: {name!r} is not a model or remote component of this spec")
        for name, component in self.components.items():
            if component.normalize == "bundle" and not isinstance(component, ModelComponent):
                raise ValueError(f"components.{name}.normalize: 'bundle' needs a served model's reference statistics")
        return self


def load_spec(path: Path) -> RewardSpec:
    """The spec in `path`; ValueError naming the file and the key that is wrong."""
    try:
        return RewardSpec.model_validate(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not TOML: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        loc = list(first["loc"])
        if loc[:1] == ["components"] and len(loc) > 2:
            del loc[2]  # the component's type, which pydantic's tagged union puts in the path
        raise ValueError(f"{path}: {'.'.join(map(str, loc))}: {first['msg']}") from None
