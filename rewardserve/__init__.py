"""rewardserve: train, export and serve reward models for RLHF.

Importing this package (or `rewardserve.bundle` / `rewardserve.service`) never imports torch:
training and export live behind the `train` extra.
"""

__version__ = "0.1.0"
