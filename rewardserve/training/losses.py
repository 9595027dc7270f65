"""Pairwise reward-model losses, as pure functions of reward tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected).

    `logsigmoid` is computed stably (no overflow for large negative gaps), unlike
    `log(sigmoid(x))`, which underflows to log(0) = -inf once the gap is below about -100.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
