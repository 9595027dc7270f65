"""The pairwise rule (MT-Bench's pairwise judge, Zheng et al. 2023; RewardBench's generative
judges): the judge reads the prompt with two responses, A and B, and names the better one.

Each text the judge reads gets reward = log p(A) - log p(B), the log-odds that the response in
the first slot is better. LLM judges favour a position, so a pair is read in both orders and
the orders averaged (`preference`):

    p(a better than b) = (p_A(a, b) + p_B(b, a)) / 2

so that p(a better than b) + p(b better than a) = 1 exactly.

K responses to one prompt are read as every ordered pair, K(K - 1) texts (the prompt and the
rubric's head shared by all of them). Their rewards are the least-squares Bradley-Terry scores
of the judge's pairwise log-odds (`bradley_terry`):

    s_i = (1 / K) sum_{j != i} logit p(i better than j)

the scores whose differences come closest to the judge's log-odds; for two responses,
s_a = -s_b = logit p(a better than b) / 2, so sigmoid(s_a - s_b) is the judge's own p.
"""

from __future__ import annotations

import numpy as np

from rewardserve.bundle import choice

NAME = "pairwise"
DESCRIPTION = "log p({0}) - log p({1}) of the first response being better; pairs read in both orders"


def check(labels: list[str], values: list[float] | None) -> None:
    if len(labels) != 2:
        raise ValueError(f"verdicts: the pairwise rule reads two tokens, the first response's first; got {len(labels)}")
    if values is not None:
        raise ValueError("values: the pairwise rule gives none")


def reward(log_probs: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """(rows, 2) log-probabilities (or logits) -> (rows,) log-odds that the first slot's response is better."""
    return log_probs[:, 0] - log_probs[:, 1]


def preference(forward: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """p(a better than b) of pairs read as (a, b) with rewards `forward` and as (b, a) with
    rewards `swapped`: the two orders' p(a better) averaged."""
    # each order's p(a better) is the logistic of its log-odds: Bradley-Terry's against 0
    return 0.5 * (choice.p_better(forward, 0.0) + choice.p_better(0.0, swapped))


def ordered_pairs(k: int) -> list[tuple[int, int]]:
    """Every ordered pair (i, j), i != j, of K responses: the texts a K-wise comparison reads."""
    return [(i, j) for i in range(k) for j in range(k) if i != j]


def preference_matrix(k: int, rewards: np.ndarray) -> np.ndarray:
    """(K, K) p(i better than j) from the rewards of `ordered_pairs(k)`, in that order; 0.5 on
    the diagonal."""
    forward = np.zeros((k, k))  # every off-diagonal entry is read; the diagonal is set to 0.5
    for (i, j), r in zip(ordered_pairs(k), np.asarray(rewards, dtype=np.float64), strict=True):
        forward[i, j] = r
    matrix = preference(forward, forward.T)
    np.fill_diagonal(matrix, 0.5)
    return matrix


def log_odds(p: np.ndarray) -> np.ndarray:
    """logit(p), finite where p is 0 or 1 in float64."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)


def bradley_terry(matrix: np.ndarray) -> np.ndarray:
    """(K,) least-squares Bradley-Terry scores of a (K, K) preference matrix: the mean of each
    row's log-odds (the diagonal's are 0)."""
    return np.mean(log_odds(matrix), axis=1)
