"""Named points where a test can hold a real run, to kill or signal it at a known moment.

Set LLAMA_LAB_HOLD="POINT STEP FILE" (e.g. "checkpoint-weights 12 /tmp/held") and the process,
on reaching POINT at STEP, creates FILE and waits while FILE exists: the test then kills it there,
or signals it and deletes FILE to let it go on. Unset (always, outside tests) it costs one dict
lookup. This is the one place the variable is read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "LLAMA_LAB_HOLD"
POINTS = (
    "step-done",  # a training step finished, before the loop checks for a stop request, logs or saves
    "checkpoint-weights",  # a checkpoint's weights written into its hidden folder, nothing else yet
    "checkpoint-files",  # its weights and optimizer files written, not yet sealed (state.json, rename)
    "checkpoint-sealed",  # renamed into place and complete; older checkpoints not yet pruned
)
MAX_HOLD_S = 600  # a held process whose test died carries on by itself


def hold(point: str, step: int) -> None:
    """Wait here while the test that asked for (point, step) holds the run."""
    request = os.environ.get(ENV)
    if not request:
        return
    want_point, want_step, file = request.split(maxsplit=2)
    if want_point not in POINTS:
        raise ValueError(f"{ENV}={request!r}: the point must be one of {', '.join(POINTS)}")
    if (want_point, int(want_step)) != (point, step):
        return
    marker = Path(file)
    marker.write_text(f"{point} {step} {os.getpid()}\n")
    deadline = time.monotonic() + MAX_HOLD_S
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
