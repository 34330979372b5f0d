"""What one explanation costs the worker, through the served scoring path and the lean one.

    python -m bench.explain_cost [--requests 40] [--rounds 3] [--model-dir DIR]

An explanation (``models.explain``) calls the served model once on a few thousand rows:
the chains of its permutation Shapley estimate. It needs the mean probabilities alone.
Through the path that serves predictions (``models.scoring._probabilities``) each row is
copied once per ensemble member, and entropy and mutual information are computed for every
row; ``models.scoring.class_probabilities`` takes the triage's answers as they are and
sends only the escalated rows to the ensemble. Both explain the same payments (the
worker's own features records of synthetic payments) with the same seeds.

One JSON line: CPU milliseconds per explanation each way (the median over the requests of
the fastest of ``--rounds``), the rows the model evaluated per explanation, the largest
difference between the two ways' attributions, and what each costs the worker per event
at the default share of explained decisions (``HEADRACE_EXPLAIN_SHARE``, 1%). Without
``--model-dir`` it trains the model ``headrace bench e2e`` serves (a few seconds). No
broker is needed.
"""

from __future__ import annotations

import argparse
import json
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
    background_of,
    explanation_seed,
    permutation_shapley,
    served_probability,
)
from models.scoring import LoadedModel, _probabilities
from streams.settings import Settings

TARGET = 1  # the positive class of the payments model


def served_path(model: LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
    """The positive class's probability as the prediction path computes it."""

    def probability(matrix: np.ndarray) -> np.ndarray:
        summary, _ = _probabilities(model, matrix.astype(np.float32), fast=False)
        return np.asarray(summary.mean[:, TARGET], dtype=np.float64)

    return probability


def _cpu_ms(explain: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        began = time.process_time()
        explain()
        times.append((time.process_time() - began) * 1000)
    return min(times)


def measure(model_dir: Path, requests: int, rounds: int) -> dict[str, Any]:
    settings = Settings.from_env()
    model = scorer_for(model_dir, BACKEND, settings.score_max_batch).model
    names = model.metadata.feature_names
    background, _ = background_of(model.metadata)
    rows, _ = feature_rows(settings.spec_path, requests)
    ways = {
        "served_path": served_path(model),
        "lean": served_probability(model, TARGET, fast=False),
    }
    costs: dict[str, list[float]] = {way: [] for way in ways}
    attributions: dict[str, list[np.ndarray]] = {way: [] for way in ways}
    evaluations = []
    for i, row in enumerate(rows):
        x = np.array([np.nan if row.get(n) is None else row[n] for n in names], dtype=np.float64)
        seed = explanation_seed(f"bench-{i}", model.version)
        for way, probability in ways.items():
            explain = partial(
                permutation_shapley,
                probability,
                x,
                background,
                seed=seed,
                permutations=PERMUTATIONS,
            )
            shapley = explain()  # warm, and the result compared below
            costs[way].append(_cpu_ms(explain, rounds))
            attributions[way].append(shapley.attributions)
        evaluations.append(shapley.evaluations)
    served_ms = statistics.median(costs["served_path"])
    lean_ms = statistics.median(costs["lean"])
    share = settings.explain_share
    return {
        "requests": len(rows),
        "rounds": rounds,
        "features": len(names),
        "reference_rows": len(background),
        "evaluations_median": statistics.median(evaluations),
        "served_path_ms": round(served_ms, 3),
        "lean_ms": round(lean_ms, 3),
        "speedup": round(served_ms / lean_ms, 2),
        "max_attribution_difference": float(
            max(
                np.max(np.abs(a - b))
                for a, b in zip(attributions["served_path"], attributions["lean"], strict=True)
            )
        ),
        "explain_share": share,
        "served_path_us_per_event": round(served_ms * 1000 * share, 2),
        "lean_us_per_event": round(lean_ms * 1000 * share, 2),
    }


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
