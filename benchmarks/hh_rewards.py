"""Rewards of every held-out HH sequence from a bundle, with whichever rewardserve is imported, to
compare two checkouts: that a change leaves a bundle's rewards as they were.

    PYTHONPATH=OLD_CHECKOUT python benchmarks/hh_rewards.py BUNDLE old.npy
    python benchmarks/hh_rewards.py BUNDLE new.npy --versus old.npy
"""

from __future__ import annotations

import argparse

import numpy as np

import rewardserve
from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.offline import score_sequences
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("out", help="where the rewards go (.npy)")
    parser.add_argument("--versus", help="rewards saved by another checkout (.npy) to compare with")
    args = parser.parse_args()
    heldout, _ = load_preferences(default_data_files(), split="heldout")
    prompts = [e.prompt for e in heldout for _ in e.responses]
    responses = [r for e in heldout for r in e.responses]
    runtime = BundleRuntime(args.bundle)
    rewards = score_sequences(runtime, runtime.encoder.encode(prompts, responses)).rewards
    np.save(args.out, rewards)
    print(f"{len(rewards)} held-out HH sequences scored by {rewardserve.__file__}")
    if args.versus:
        other = np.load(args.versus)
        print(f"max |this - versus| = {np.abs(rewards - other).max():.3g}; identical: {np.array_equal(rewards, other)}")


if __name__ == "__main__":
    main()
