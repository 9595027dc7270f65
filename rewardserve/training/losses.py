"""Reward-model losses, as pure functions of reward tensors.

Pairwise losses take the rewards of the better and the worse response of each pair. Group
losses take a prompt's K responses as one row of a (G, K) grid, with `ranks` (G, K): 0 is the
best response, equal ranks are ties, and a negative rank marks an empty slot (prompts with
fewer than K responses).

Everything goes through `logsigmoid`/`logsumexp`, so reward gaps of 1e4 give finite losses
and gradients (`log(sigmoid(x))` is -inf once x is below about -100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rewardserve.training.config import LOSS_NAMES, LossName


def bradley_terry_loss(
    better: torch.Tensor, worse: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Mean of -log sigmoid(r_better - r_worse - margin).

    With a margin this is Llama 2's margin loss: a pair labelled "much better" must be separated
    by more than one labelled "slightly better" before its loss flattens.
    """
    gap = better - worse
    if margin is not None:
        gap = gap - margin
    return -F.logsigmoid(gap).mean()


def reward_centering(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """mean((r_better + r_worse)^2): keeps rewards centred on zero (Eisenstein et al., 2023),
    since the pairwise losses see only differences and leave the offset free to drift."""
    return ((better + worse) ** 2).mean()


def ranked_pairs(ranks: torch.Tensor) -> torch.Tensor:
    """(G, K, K) bool: True where response i of a prompt is strictly preferred to response j."""
    valid = ranks >= 0
    both = valid.unsqueeze(2) & valid.unsqueeze(1)
    return both & (ranks.unsqueeze(2) < ranks.unsqueeze(1))


def instructgpt_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """InstructGPT's K-wise loss: each prompt's C(K, 2) pairs weighted 1/C(K, 2), so every prompt
    counts once however many responses it has (treating the pairs as independent examples
    over-weights prompts with large K and overfits, Ouyang et al., 2022)."""
    pairs = ranked_pairs(ranks)
    gaps = rewards.unsqueeze(2) - rewards.unsqueeze(1)
    per_pair = torch.where(pairs, -F.logsigmoid(gaps), torch.zeros_like(gaps))
    per_prompt = per_pair.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
    has_pairs = pairs.any(dim=2).any(dim=1)
    return per_prompt[has_pairs].mean()


def plackett_luce_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Listwise negative log-likelihood of each prompt's ranking under Plackett-Luce, averaged
    over prompts: response i is picked from the responses not yet placed above it,
    -sum_i [r_i - logsumexp_{j: rank_j >= rank_i} r_j].

    Tied responses share one risk set (Breslow's approximation), so a tie is never read as a
    preference. Without ties this is the exact Plackett-Luce likelihood; for K = 2 it equals the
    Bradley-Terry loss.
    """
    valid = ranks >= 0
    at_or_below = valid.unsqueeze(1) & (ranks.unsqueeze(1) >= ranks.unsqueeze(2))
    # Each slot's own reward is always in its set: empty slots then get a finite (unused)
    # logsumexp instead of logsumexp([]) = -inf, whose gradient would be NaN.
    at_or_below = at_or_below | torch.eye(ranks.shape[1], dtype=torch.bool, device=ranks.device)
    candidates = rewards.unsqueeze(1).expand(-1, ranks.shape[1], -1)
    log_norm = torch.logsumexp(candidates.masked_fill(~at_or_below, float("-inf")), dim=2)
    # The worst tier's term is 0 without ties; a tie at the bottom still contributes.
    terms = torch.where(valid, log_norm - rewards, torch.zeros_like(rewards))
    return terms.sum(dim=1)[valid.sum(dim=1) >= 2].mean()


def reward_loss(
    name: LossName,
    rewards: torch.Tensor,
    ranks: torch.Tensor,
    margins: torch.Tensor | None = None,
    centering: float = 0.0,
) -> torch.Tensor:
    """The training objective `--loss` names, on a (G, K) grid of rewards.

    `bt` and `margin` treat every ranked pair as one example (for pair data, G pairs);
    `margins` (G,) is each prompt's margin, applied to its pairs by the `margin` loss.
    `centering` adds `centering * reward_centering` over the same pairs.
    """
    pairs = ranked_pairs(ranks)
    prompt, i, j = pairs.nonzero(as_tuple=True)
    better, worse = rewards[prompt, i], rewards[prompt, j]
    if name == "bt":
        loss = bradley_terry_loss(better, worse)
    elif name == "margin":
        if margins is None:
            raise ValueError("the margin loss needs margins (a `margin` or `preference_strength` column)")
        loss = bradley_terry_loss(better, worse, margins[prompt])
    elif name == "instructgpt":
        loss = instructgpt_loss(rewards, ranks)
    elif name == "plackett_luce":
        loss = plackett_luce_loss(rewards, ranks)
    else:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    if centering:
        loss = loss + centering * reward_centering(better, worse)
    return loss
