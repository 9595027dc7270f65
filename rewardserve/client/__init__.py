"""Everything that gets rewards from a model from the outside: the HTTP clients, the trainer
adapters (TRL's `reward_funcs` in `client.trl`, verl's `compute_score` in `client.verl`;
OpenRLHF needs no code: the server speaks its protocol at `/get_reward`), the scorers offline
jobs use (a server or a bundle in-process) and batch scoring. Never imports torch or training.
"""

from rewardserve.client.http import (
    AsyncRewardClient,
    Comparison,
    Ranking,
    Retry,
    RewardClient,
    RewardServerError,
    chat_item,
)

__all__ = [
    "AsyncRewardClient",
    "Comparison",
    "Ranking",
    "Retry",
    "RewardClient",
    "RewardServerError",
    "chat_item",
]
