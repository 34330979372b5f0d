"""What a retraining window that reaches back before a concept drift does to the candidate.

    python -m bench.retrain_window [--rows 4000] [--seed 7]

The demo's worker retrains on the labels of events after its error alert
(``HEADRACE_RETRAIN_SETTLE_S``): the new concept's data alone when the alert comes after
the drift. This bench trains candidates as ``headrace model retrain`` does (3 MLPs, 4
epochs) on ``--rows`` rows of synthetic payments, after as many rows that fill the feature
windows. The first share of the rows is labelled by the concept before the drift
(``models.dataset.fraud_probability``), the rest by the one after it
(``drifted_fraud_probability``). Each candidate's error rate is measured on as many
held-out rows of the drifted concept. One JSON line: the error rate per share of old
labels, and the held-out rows' share of fraud (what a model that never says fraud gets
wrong). No broker is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.dataset import demo_training_set, drifted_fraud_probability
from models.training import TrainingConfig, member_probabilities, train_ensemble
from streams.settings import Settings
from streams.spec import load_spec

OLD_SHARES = (0.0, 0.3, 0.5, 0.7, 1.0)
RETRAINING = TrainingConfig(members=3, epochs=4)  # as headrace.retrain trains a candidate


def drifted_labels(features: np.ndarray, names: Sequence[str], seed: int) -> np.ndarray:
    """Each row's label drawn from the drifted concept's fraud probability."""
    rng = random.Random(seed)
    labels = []
    for row in features:
        values = {n: None if math.isnan(v) else float(v) for n, v in zip(names, row, strict=True)}
        labels.append(int(rng.random() < drifted_fraud_probability(values)))
    return np.array(labels, dtype=np.int64)


def measure(rows: int, seed: int) -> dict[str, Any]:
    spec = load_spec(Settings.from_env().spec_path)
    data = demo_training_set(spec, 3 * rows, seed=seed)
    if len(data.labels) < 3 * rows:
        raise ValueError(f"{len(data.labels)} valid payments; need {3 * rows}")
    new = drifted_labels(data.features, data.names, seed)
    # The first third warms the feature windows up (a stream's first rows have empty
    # windows), the second trains, the third is held out.
    train_x, train_old, train_new = (
        data.features[rows : 2 * rows],
        data.labels[rows : 2 * rows],
        new[rows : 2 * rows],
    )
    test_x, test_y = data.features[2 * rows : 3 * rows], new[2 * rows : 3 * rows]
    errors = {}
    for share in OLD_SHARES:
        old = int(rows * share)
        labels = np.concatenate([train_old[:old], train_new[old:]])
        model = train_ensemble(train_x, labels, RETRAINING)
        predicted = member_probabilities(model, test_x).mean(axis=0).argmax(axis=1)
        errors[f"{share:g}"] = round(float((predicted != test_y).mean()), 4)
    return {
        "rows": rows,
        "held_out_rows": len(test_y),
        "fraud_share_after_drift": round(float(test_y.mean()), 4),
        "error_rate_by_old_share": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrain_window", description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000, help="rows a candidate trains on")
    parser.add_argument("--seed", type=int, default=7, help="the payments' and labels' seed")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    print(json.dumps(measure(args.rows, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
