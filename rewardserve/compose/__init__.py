"""Composed rewards: one reward from several models, judges and rules, as a spec file names
them (`spec.py`). A ComposedReward (`reward.py`) is served like a model: every protocol reads it
through the same core interface, and each component's value travels beside the reward.

    spec.py          the TOML spec -> components and how they combine, checked at load
    components/      one file per kind: a served model, a remote reward server, a
                     chain-of-thought judge on a generation engine, and the rules (math, format, length)
    combine.py       weighted sum, Llama 2's safety gate, normalisation, clipping
    reward.py        ComposedReward: every component of a request at once, timeouts and fallbacks
"""
