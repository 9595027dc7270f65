"""What the served model can say of its scores, decided once when it loads: its name, its
calibration temperature, and its outputs (objectives, step rewards, a judge's verdicts). Every
answer reads it (`service/endpoints/`'s Answer), as does whatever else scores.
"""

from __future__ import annotations

import numpy as np

from rewardserve.bundle.outputs import ModelOutputs, Scores


class ServedModel:
    def __init__(
        self,
        model_name: str,
        temperature: float,
        outputs: ModelOutputs | None = None,
        reward_stats: tuple[float, float] | None = None,
        precision: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.precision = precision  # the engine's (a composed reward has none of its own)
        self.temperature = temperature  # choice.py: p(a better than b) = sigmoid((r_a - r_b) / T)
        self.outputs = outputs or ModelOutputs()
        # (mean, std) of its rewards on the bundle's reference set, where export measured them
        self.reward_stats = reward_stats
        self.resident_mib: int | None = None  # what loading it added to the process's memory

    @property
    def labels(self) -> list[str]:
        """The name of each output a classifier view answers (vLLM's `label`, SGLang's `id2label`):
        the objectives, or `LABEL_0` for a reward alone, as transformers names a one-label head."""
        return self.outputs.objectives.names if self.outputs.objectives is not None else ["LABEL_0"]

    def objectives(self, values: np.ndarray | None, named: list[str] | None = None) -> dict[str, list[float]] | None:
        """{objective: its value per item}, for the objectives asked for (all by default)."""
        if values is None or self.outputs.objectives is None:
            return None
        names = self.outputs.objectives.names
        return {name: values[:, names.index(name)].tolist() for name in (names if named is None else named)}

    def verdicts(self, scores: Scores) -> dict[str, list[float]] | None:
        """A judge's {verdict: its probability per item}, renormalised over the verdicts."""
        if scores.verdict is None or self.outputs.verdict is None:
            return None
        return {label: scores.verdict[:, i].tolist() for i, label in enumerate(self.outputs.verdict.labels)}

    def details(self, scores: Scores) -> dict[str, list[float]]:
        """One value per item under each name, beside the reward, for trainers that log them
        (OpenRLHF's extra_logs, verl's reward_extra_info, slime's reward dict): each objective,
        the mean and min step reward and the number of steps, and a judge's probability of each
        verdict (`p_yes`, `p_no`; `p_1`..`p_10`), renormalised over its verdicts; a composed
        reward's value of each component (and `NAME_fallback`, 1 where a component's fallback
        stood in for it)."""
        details = self.objectives(scores.objectives) or {}
        details |= {name: values.tolist() for name, values in (scores.components or {}).items()}
        details |= {f"p_{label}": values for label, values in (self.verdicts(scores) or {}).items()}
        if scores.steps is not None:
            details["step_reward_mean"] = [float(s.mean()) for s in scores.steps]
            details["step_reward_min"] = [float(s.min()) for s in scores.steps]
            details["steps"] = [float(len(s)) for s in scores.steps]
        return details
