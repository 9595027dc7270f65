"""Tiny reward models built from configs with random weights (chat RMs of each family, a
multi-objective head, ArmoRM's gated head, a process reward model) and the policy texts a
trainer sends: what the tests and the benchmarks build their fixtures from. Needs the training
extra (torch, transformers)."""
