"""Ray Serve as a second transport: the scoring core in Ray Serve replicas, for trainers that
already run on Ray (verl, OpenRLHF, slime). `deployment.py` has the deployment and its builder."""

from rewardserve.ray_serve.deployment import RewardServer, reward_app

__all__ = ["RewardServer", "reward_app"]
