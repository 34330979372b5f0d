"""The scoring path as the worker runs it, timed: feature records in, prediction records out.

Shared by ``headrace bench scoring`` and ``python -m bench.gpu_scoring``; it imports
nothing beyond ``models`` so that it runs where only the model stack is installed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from models.dataset import TrainingSet
from models.scoring import LoadedModel, score_batch


def feature_records(data: TrainingSet, count: int) -> list[dict[str, Any]]:
    """The first ``count`` rows of a training set as feature records (None: missing)."""
    return [
        {
            "event_id": f"ev-{i}",
            "entity_id": f"card-{i % 500}",
            "event_time": i,
            "feature_version": data.feature_version,
            "features": {
                name: (None if np.isnan(v) else float(v))
                for name, v in zip(data.names, data.features[i], strict=True)
            },
        }
        for i in range(count)
    ]


def path_rate(
    model: LoadedModel, records: list[dict[str, Any]], *, batch: int, repeats: int = 3
) -> float:
    """Median rows/s through score_batch (matrix building, backend, uncertainty, sets,
    records) over ``repeats`` passes of the records in batches of ``batch``."""
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        for start in range(0, len(records), batch):
            score_batch(model, records[start : start + batch], now_ms=0, batch_ms=0.0)
        rates.append(len(records) / (time.perf_counter() - began))
    return statistics.median(rates)
