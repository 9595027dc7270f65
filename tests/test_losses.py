import math

import pytest
import torch

from rewardserve.training.losses import bradley_terry_loss


def test_bradley_terry_matches_hand_computed_values():
    chosen = torch.tensor([1.0, 0.0, -2.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(x) = log(1 + e^-x) for gaps 1, 0, -3
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(3))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_gradient_is_sigmoid_of_negative_gap_over_n():
    chosen = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    gap = (chosen - rejected).detach()
    expected = -torch.sigmoid(-gap) / 2
    torch.testing.assert_close(chosen.grad, expected)
    torch.testing.assert_close(rejected.grad, -expected)


@pytest.mark.parametrize("gap", [1e4, -1e4])
def test_bradley_terry_is_finite_for_huge_reward_gaps(gap):
    chosen = torch.tensor([gap], requires_grad=True)
    loss = bradley_terry_loss(chosen, torch.tensor([0.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(chosen.grad).all()
    assert loss.item() == pytest.approx(max(-gap, 0.0), abs=1e-3)
