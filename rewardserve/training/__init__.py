"""Reward-model training on preference pairs (needs the `train` extra: torch, transformers)."""
