import math

import pytest
import torch

from rewardserve.training.losses import (
    bradley_terry_loss,
    instructgpt_loss,
    plackett_luce_loss,
    ranked_pairs,
    reward_centering,
    reward_loss,
)


def nll(gap: float) -> float:
    """-log sigmoid(gap), by hand."""
    return math.log(1 + math.exp(-gap))


def test_bradley_terry_matches_hand_computed_values():
    chosen = torch.tensor([1.0, 0.0, -2.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    expected = (nll(1) + nll(0) + nll(-3)) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_margin_loss_subtracts_the_margin_from_the_gap():
    chosen, rejected = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 0.0])
    margin = torch.tensor([2.0, 0.5])
    expected = (nll(1.0) + nll(0.5)) / 2
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_gradient_is_sigmoid_of_negative_gap_over_n():
    chosen = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    gap = (chosen - rejected).detach()
    expected = -torch.sigmoid(-gap) / 2
    torch.testing.assert_close(chosen.grad, expected)
    torch.testing.assert_close(rejected.grad, -expected)


def test_reward_centering_is_the_mean_squared_pair_sum():
    assert reward_centering(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0])).item() == pytest.approx(2.0)


def test_ranked_pairs_skip_ties_and_empty_slots():
    ranks = torch.tensor([[0, 1, 1, -1]])
    pairs = ranked_pairs(ranks)[0]
    assert pairs.nonzero().tolist() == [[0, 1], [0, 2]]


def test_instructgpt_weights_each_prompt_once_whatever_its_k():
    # Prompt 1 ranks 3 responses (3 pairs), prompt 2 is a plain pair (1 pair, empty third slot).
    rewards = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    ranks = torch.tensor([[0, 1, 2], [0, 1, -1]])
    first = (nll(1) + nll(2) + nll(1)) / 3
    second = nll(-1)
    assert instructgpt_loss(rewards, ranks).item() == pytest.approx((first + second) / 2, rel=1e-6)
    # The unbalanced Bradley-Terry loss over the same 4 pairs weights prompt 1 three times.
    assert reward_loss("bt", rewards, ranks).item() == pytest.approx((3 * first + second) / 4, rel=1e-6)


def test_plackett_luce_matches_the_ranking_likelihood_by_hand():
    rewards = torch.tensor([[1.0, 0.5, -1.0]])
    ranks = torch.tensor([[0, 1, 2]])
    e = [math.exp(r) for r in (1.0, 0.5, -1.0)]
    expected = -math.log(e[0] / sum(e)) - math.log(e[1] / (e[1] + e[2]))
    assert plackett_luce_loss(rewards, ranks).item() == pytest.approx(expected, rel=1e-6)


def test_plackett_luce_reads_the_ranking_not_the_slot_order():
    rewards = torch.tensor([[-1.0, 0.5, 1.0]])
    in_order = plackett_luce_loss(rewards.flip(1), torch.tensor([[0, 1, 2]]))
    assert plackett_luce_loss(rewards, torch.tensor([[2, 1, 0]])).item() == pytest.approx(in_order.item())


def test_plackett_luce_of_a_pair_is_bradley_terry():
    rewards = torch.tensor([[0.3, 1.2], [2.0, -1.0]])
    ranks = torch.tensor([[0, 1], [0, 1]])
    expected = bradley_terry_loss(rewards[:, 0], rewards[:, 1])
    assert plackett_luce_loss(rewards, ranks).item() == pytest.approx(expected.item(), rel=1e-6)


def test_plackett_luce_ties_share_a_risk_set():
    # Best response, then two tied ones: each tied response competes against both of them.
    rewards = torch.tensor([[2.0, 0.0, 1.0]])
    ranks = torch.tensor([[0, 1, 1]])
    e = [math.exp(r) for r in (2.0, 0.0, 1.0)]
    expected = -math.log(e[0] / sum(e)) - math.log(e[1] / (e[1] + e[2])) - math.log(e[2] / (e[1] + e[2]))
    assert plackett_luce_loss(rewards, ranks).item() == pytest.approx(expected, rel=1e-6)


GROUP_LOSSES = ["bt", "margin", "instructgpt", "plackett_luce"]


@pytest.mark.parametrize("name", GROUP_LOSSES)
def test_autograd_gradients_match_finite_differences(name):
    torch.manual_seed(0)
    rewards = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ranks = torch.tensor([[0, 1, 2, 3], [0, 1, 1, -1], [1, 0, -1, -1]])
    margins = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r: reward_loss(name, r, ranks, margins, centering=0.01), (rewards,))


@pytest.mark.parametrize("name", GROUP_LOSSES)
@pytest.mark.parametrize("gap", [1e4, -1e4])
def test_losses_are_finite_for_huge_reward_gaps(name, gap):
    rewards = torch.tensor([[gap, 0.0, -gap], [0.0, gap, 0.0]], requires_grad=True)
    ranks = torch.tensor([[0, 1, 2], [0, 1, -1]])
    loss = reward_loss(name, rewards, ranks, torch.zeros(2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(rewards.grad).all()
    if gap > 0:  # every pair is ordered right: the loss vanishes only where the order is right
        assert reward_loss(name, rewards[:1], ranks[:1], torch.zeros(1)).item() == pytest.approx(0.0, abs=1e-3)


def test_margin_loss_without_margins_is_refused():
    with pytest.raises(ValueError, match="margin"):
        reward_loss("margin", torch.zeros(1, 2), torch.tensor([[0, 1]]))
