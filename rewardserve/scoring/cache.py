"""An exact-duplicate reward cache: GRPO groups share prompts, and trainers re-score.

Keyed by the bundle's digest and the formatted input (the token ids the model sees and where
the response starts), so two texts that format to the same ids share a reward, and a reward
can never be served for another bundle's model. Rewards of fp32/fp16 graphs do not depend on
their batch-mates (parity "alone vs batched" in the manifest), so a cached reward is the
reward. int8 graphs scale activations per batch: there a cached reward may differ from a fresh
one by that same manifest figure.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from rewardserve.bundle import EncodedSequence
from rewardserve.bundle.outputs import Extra


class RewardCache:
    """Least-recently-used rewards of formatted sequences, with the model's other outputs for
    them (objectives, step rewards) where it has any; the batcher counts hits and misses."""

    def __init__(self, bundle_digest: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1 (leave the cache out to disable it)")
        self._salt = bytes.fromhex(bundle_digest)[:64]
        self.capacity = capacity
        self._rewards: OrderedDict[bytes, tuple[float, Extra | None]] = OrderedDict()

    def key(self, sequence: EncodedSequence) -> bytes:
        digest = hashlib.blake2b(key=self._salt, digest_size=16)
        digest.update(sequence.response_start.to_bytes(4, "little"))
        digest.update(sequence.ids.tobytes())
        return digest.digest()

    def get(self, key: bytes) -> tuple[float, Extra | None] | None:
        scored = self._rewards.get(key)
        if scored is not None:
            self._rewards.move_to_end(key)
        return scored

    def put(self, key: bytes, reward: float, extra: Extra | None = None) -> None:
        self._rewards[key] = (reward, extra)
        self._rewards.move_to_end(key)
        if len(self._rewards) > self.capacity:
            self._rewards.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rewards)
