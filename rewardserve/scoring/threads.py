"""Worker threads (tokenizer, engine, ONNX Runtime's pool) run at a lower CPU priority than
the event loop.

The event loop reads every request and answers the excess with 429. Under overload the
workers have more accepted work than the CPUs can do, and the kernel shares CPU time per
thread: at equal priority one loop thread among busy workers gets a sliver, requests wait
unread in socket buffers, and a 429 takes seconds. Measured on 2 cores at 4x capacity with the
tiny test model (`rewardserve soak`), two runs each: 429 p99 of 10.9 and 12.7 s at equal
priority, 13.5 ms in both with workers at nice +10.
When the loop is idle the workers still get every CPU, so throughput does not change.

Linux nice values are per thread and inherited by the threads a thread creates, so a worker
made low-priority here also lowers the threads it starts (ONNX Runtime's pool, tokenizers'
rayon pool). Elsewhere, or without permission, this does nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def lower_this_thread(increment: int) -> None:
    """Add `increment` to the calling thread's nice value (0 leaves it as it is)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + increment, 19))


def in_lower_priority_thread(increment: int, build: Callable[[], T]) -> T:
    """`build()` run on a new thread lowered by `increment`, so that threads it starts (e.g. an
    ONNX Runtime session's pool) are lowered too; its result or its exception."""
    outcome: dict[str, object] = {}

    def run() -> None:
        lower_this_thread(increment)
        try:
            outcome["value"] = build()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="builder")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
