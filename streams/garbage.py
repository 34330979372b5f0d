"""The worker's garbage collector: what start-up allocated frozen, young collections rarer.

A worker holds a few hundred thousand long-lived objects before its first event (torch,
ONNX Runtime, faust, the model) and more as it runs (entity states, seen ids, caches).
CPython collects its youngest generation every 700 net allocations and, every hundred of
those, walks every tracked object that is not frozen. Freezing what start-up made takes it
out of every collection; a higher first threshold makes the young collections rarer
(``HEADRACE_GC_THRESHOLD``; 0 leaves CPython's collector as it is).
"""

from __future__ import annotations

import gc


def tune_collector(threshold: int) -> tuple[int, int, int]:
    """Freeze the objects alive now and set the first generation's threshold; the
    thresholds in force after. With ``threshold`` 0, change nothing."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if threshold:
        gc.collect()
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)
    first, second, third = gc.get_threshold()
    return first, second, third
