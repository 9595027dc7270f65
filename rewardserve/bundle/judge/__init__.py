"""Judges: a causal language model asked about a response, its reward read from the
distribution of its verdict token at the answer position, in one forward pass.

- `template.py`: the text a judge reads, the model's own chat template around a rubric;
- `verdict.py`: the verdict tokens and the rule that makes a reward of their distribution,
  one file per rule (`yes_no.py`, `rating.py`, `pairwise.py`).
"""

from rewardserve.bundle.judge.template import JudgeTemplate, ResponsePair, TooLongToJudge, judge_messages, judge_text
from rewardserve.bundle.judge.verdict import Verdict

__all__ = ["JudgeTemplate", "ResponsePair", "TooLongToJudge", "Verdict", "judge_messages", "judge_text"]
