"""The names a prefix graph reads and writes (export/decoder_graph.py writes them): each
layer's keys and values of the tokens before a row come in as `past.<layer>.key|value` and go
out as `present.<layer>.key|value`, beside `prefix_lengths`, how many tokens came before it.
A leaf module: the session backends (openvino_session.py), the runner (runtime.py) and the
prompt and response calls (prefix.py) all read it.

Scored whole, a sequence has no tokens before it: `EmptyPast` adds those inputs to a batch, for
any session whose graph reads a past (`empty_past`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PAST = "past."
PRESENT = "present."
PREFIX_LENGTHS = "prefix_lengths"


class EmptyPast:
    """A prefix graph's inputs for whole sequences: an empty past of each layer's shape, in the
    dtype the session holds keys and values in (fp32, or bf16 bits under OpenVINO at bf16)."""

    def __init__(self, shapes: dict[str, Any], dtype: np.dtype) -> None:
        self.shapes = shapes  # past input name -> (batch, kv heads, tokens, head size)
        self.dtype = dtype

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(arrays["input_ids"])
        empty = {name: np.zeros((rows, shape[1], 0, shape[3]), self.dtype) for name, shape in self.shapes.items()}
        whole = {"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]}
        return whole | empty | {PREFIX_LENGTHS: np.zeros(rows, np.int64)}  # it reads no position ids


def empty_past(session: Any) -> EmptyPast | None:
    """What `session`'s graph needs beside a batch to score whole sequences; None when it reads
    no past (it is not a prefix graph)."""
    shapes = {i.name: i.shape for i in session.get_inputs() if i.name.startswith(PAST)}
    return EmptyPast(shapes, getattr(session, "past_dtype", np.dtype(np.float32))) if shapes else None
