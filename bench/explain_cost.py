"""What one explanation costs the worker: the model given every row at once, or a block
of chains at a time.

    python -m bench.explain_cost [--requests 40] [--rounds 3] [--model-dir DIR]

An explanation (``models.explain``) evaluates the served model on a few thousand rows: the
chains of its permutation Shapley estimate. Given all of them in one call (``one_call``,
float64 rows converted to the model's float32), it made a few megabytes of temporaries,
which the allocator handed back to the system and faulted in again at the next
explanation. ``blocked`` (what the worker does) builds the rows in float32, about
``ROWS_PER_CALL`` a call. Both explain the same payments (the worker's own features
records of synthetic payments) with the same seeds.

In a worker an explanation runs between batches of events, which evict the caches and
reuse the heap. So before every timed explanation this bench does the same: it reads a
16 MB array and allocates and frees 20,000 small objects.

One JSON line: for each way, the median CPU milliseconds and minor page faults per
explanation (over requests x rounds), what it costs the worker per event at the default
share of explained decisions (``HEADRACE_EXPLAIN_SHARE``, 1%), the rows the model
evaluated per explanation, and the largest difference between the two ways'
attributions. Without ``--model-dir`` it trains the model ``headrace bench e2e`` serves
(a few seconds). No broker is needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.e2e import BACKEND, train
from bench.e2e_baseline import scorer_for
from bench.per_event_costs import feature_rows
from models.artifact import METADATA_FILE
from models.explain import (
    PERMUTATIONS,
    ROWS_PER_CALL,
    ShapleyValues,
    background_of,
    explanation_seed,
    permutation_shapley,
    served_probability,
)
from streams.settings import Settings

TARGET = 1  # the positive class of the payments model
ONE_CALL = 2**62  # rows_per_call for the every-row-at-once way
_EVICT = np.ones(2 * 1024 * 1024)  # 16 MB, more than this machine's caches per core
_Explain = Callable[[np.ndarray, np.ndarray, int], ShapleyValues]


def _between_explanations() -> None:
    """What a worker's batches do between two explanations: evict, churn the heap."""
    _EVICT.sum()
    churn = [bytearray(200) for _ in range(20_000)]
    del churn


def _timed(explain: Callable[[], ShapleyValues]) -> tuple[float, int, ShapleyValues]:
    """CPU milliseconds, minor page faults and the result of one explanation."""
    _between_explanations()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    began = time.process_time()
    shapley = explain()
    cpu_ms = (time.process_time() - began) * 1000
    return cpu_ms, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, shapley


def measure(model_dir: Path, requests: int, rounds: int) -> dict[str, Any]:
    settings = Settings.from_env()
    model = scorer_for(model_dir, BACKEND, settings.score_max_batch).model
    names = model.metadata.feature_names
    background, _ = background_of(model.metadata)
    rows, _ = feature_rows(settings.spec_path, requests)
    f = served_probability(model, TARGET, fast=False)
    ways: dict[str, _Explain] = {
        "one_call": lambda x, bg, seed: permutation_shapley(
            f, x, bg, seed=seed, permutations=PERMUTATIONS, rows_per_call=ONE_CALL
        ),
        "blocked": lambda x, bg, seed: permutation_shapley(
            f, x, bg, seed=seed, permutations=PERMUTATIONS, dtype=np.float32
        ),
    }
    costs: dict[str, list[float]] = {way: [] for way in ways}
    faults: dict[str, list[int]] = {way: [] for way in ways}
    attributions: dict[str, list[np.ndarray]] = {way: [] for way in ways}
    evaluations = []
    for i, row in enumerate(rows):
        x = np.array([np.nan if row.get(n) is None else row[n] for n in names], dtype=np.float64)
        seed = explanation_seed(f"bench-{i}", model.version)
        for _ in range(rounds):
            for way, explain in ways.items():
                cpu_ms, faulted, shapley = _timed(partial(explain, x, background, seed))
                costs[way].append(cpu_ms)
                faults[way].append(faulted)
                if len(costs[way]) % rounds == 0:  # the request's last round
                    attributions[way].append(shapley.attributions)
        evaluations.append(shapley.evaluations)
    share = settings.explain_share
    figures: dict[str, Any] = {
        "requests": len(rows),
        "rounds": rounds,
        "features": len(names),
        "reference_rows": len(background),
        "evaluations_median": statistics.median(evaluations),
        "rows_per_call": ROWS_PER_CALL,
        "explain_share": share,
    }
    for way in ways:
        ms = statistics.median(costs[way])
        figures[f"{way}_ms"] = round(ms, 3)
        figures[f"{way}_page_faults"] = statistics.median(faults[way])
        figures[f"{way}_us_per_event"] = round(ms * 1000 * share, 2)
    figures["speedup"] = round(figures["one_call_ms"] / figures["blocked_ms"], 2)
    figures["max_attribution_difference"] = float(
        max(
            np.max(np.abs(a - b))
            for a, b in zip(attributions["one_call"], attributions["blocked"], strict=True)
        )
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=40, help="payments explained")
    parser.add_argument("--rounds", type=int, default=3, help="timings per explanation")
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained model")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.model_dir is not None and not (args.model_dir / METADATA_FILE).is_file():
        parser.error(f"--model-dir {args.model_dir} holds no trained model (no {METADATA_FILE})")
    if args.model_dir is not None:
        print(json.dumps(measure(args.model_dir, args.requests, args.rounds)))
        return 0
    with tempfile.TemporaryDirectory(prefix="explain-cost-") as directory:
        model_dir = train(Settings.from_env().spec_path, Path(directory))
        print(json.dumps(measure(model_dir, args.requests, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
