"""Feature attributions for one prediction: Shapley values by permutation sampling.

What is explained is the function the worker served: the calibrated probability of the
target class (the positive class of a binary model), cascade included, so a row the
triage model answers is explained as the triage answer, and a fast-path answer by the
triage alone. The players are the model's features; a feature "absent" from a coalition
takes its value from a reference row (interventional Shapley values).

The estimator (Strumbelj and Kononenko's permutation sampling, walked as chains): every
reference row ``z`` is paired with ``permutations`` orderings of the features (drawn in
antithetic pairs: an ordering and its reverse). A chain starts at ``z`` and replaces its
features by the explained row's values one at a time, in the ordering; each step's
change of the probability is the marginal contribution of the feature it set. An
attribution is the mean of its feature's contributions over all chains. Every chain
telescopes to ``f(x) - f(z)`` and every reference row starts the same number of chains,
so the attributions add up to ``f(x) - base_value`` exactly, ``base_value`` being the
mean probability over the reference rows (efficiency, up to float rounding). For an
additive function every chain gives each feature its exact share, so the estimate is
exact; with interactions it converges to the Shapley values as chains are added.

A step that sets a feature to the value it already had (the explained row and the
reference row agree on it, both missing included) changes nothing: its row repeats the
one before it and its contribution is exactly 0, so it is not evaluated; nor is a row
that already equals the explained row. For payments a third of the steps are such
repeats. The other rows are given to the model a block of whole chains at a time, about
a thousand rows a call (``ROWS_PER_CALL``), built in the type the model reads: a call on
all of them at once made a few megabytes of temporaries an explanation, which the
allocator handed back to the system and faulted in again the next time (BENCHMARKS.md).
The orderings come from a generator seeded by the request id and the model version: an
explanation is reproduced exactly by whoever computes it again (``headrace replay
--request-id``).

Reference rows: the artifact's ``background`` (a seeded sample of the training split,
:func:`background_sample`, saved by ``train_model``). An artifact trained before it was
kept has none; its reference is then one row of missing values, which the network and the
triage model both read as the training means (they impute a missing feature with its
training mean), so the base value is the probability at the training means.

Which requests are explained is :func:`explain_sampled`: a pure function of the request
id, the same on every worker and in every replay.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.artifact import ModelMetadata
from models.router import BUCKETS, bucket
from models.scoring import LoadedModel, class_probabilities

METHOD = "permutation_shapley"
BACKGROUND_ROWS = 64  # reference rows an artifact keeps: 128 chains, about 5k rows
PERMUTATIONS = 2  # orderings per reference row: one antithetic pair
ROWS_PER_CALL = 1024  # rows the model is given at a time (``_chain_rows``)
_SAMPLE_SALT = b"headrace.explain"  # blake2b's person: independent of canary and shadow
_SEED_SALT = b"headrace.shapley"

Probability = Callable[[np.ndarray], np.ndarray]  # (rows, features) -> (rows,)


def explain_sampled(request_id: str, share: float) -> bool:
    """Whether the request is explained: its bucket (blake2b of the id) falls below
    ``share`` of the 10,000 buckets. 0 explains nothing, 1 everything."""
    if share <= 0.0:
        return False
    return bucket(request_id, salt="", person=_SAMPLE_SALT) < round(share * BUCKETS)


def explanation_seed(request_id: str, version: str) -> int:
    """The generator seed of one request's explanation under one model version."""
    digest = hashlib.blake2b(
        f"{version}\x00{request_id}".encode(), digest_size=8, person=_SEED_SALT
    ).digest()
    return int.from_bytes(digest, "big")


def background_sample(x: np.ndarray, *, rows: int = BACKGROUND_ROWS, seed: int = 0) -> np.ndarray:
    """``rows`` rows of ``x`` (all of them when it has fewer), drawn without replacement
    by a seeded generator, in their original order."""
    if len(x) <= rows:
        return np.array(x, dtype=np.float64)
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=rows, replace=False))
    return np.array(x[chosen], dtype=np.float64)


def background_of(metadata: ModelMetadata) -> tuple[np.ndarray, str]:
    """The reference rows of a model and what they are: ``training_sample``, or one row of
    missing values, ``training_means``, for an artifact without a sample (module doc)."""
    width = len(metadata.feature_names)
    if metadata.background:
        rows = np.array(metadata.background, dtype=np.float64)  # null: NaN, missing
        if rows.ndim == 2 and rows.shape[1] == width:
            return rows, "training_sample"
    return np.full((1, width), np.nan), "training_means"


@dataclass(frozen=True)
class ShapleyValues:
    attributions: np.ndarray  # (features,), in the model's feature order
    base_value: float  # mean f over the reference rows
    value: float  # f(x)
    chains: int  # reference rows x orderings
    evaluations: int  # rows the model was asked for (repeats skipped)


def permutation_shapley(  # noqa: PLR0913 - the function, the point, the reference, then knobs
    f: Probability,
    x: np.ndarray,
    background: np.ndarray,
    *,
    seed: int,
    permutations: int = PERMUTATIONS,
    dtype: type[np.floating[Any]] = np.float64,
    rows_per_call: int = ROWS_PER_CALL,
) -> ShapleyValues:
    """Shapley values of ``f`` at ``x`` against the rows of ``background`` (module doc).

    ``f`` is given the rows in ``dtype`` (the model's own input type, so it need not copy
    them), whole chains at a time, about ``rows_per_call`` rows a call (at least one
    chain's); its answers are read as float64."""
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    if rows_per_call < 1:
        raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
    x = np.asarray(x, dtype=np.float64)
    background = np.atleast_2d(np.asarray(background, dtype=np.float64))
    rows, width = background.shape
    if x.shape != (width,):
        raise ValueError(f"x has shape {x.shape}, the reference rows {width} features")
    rng = np.random.default_rng(seed)
    chains = rows * permutations
    orders = np.empty((chains, width), dtype=np.int64)
    drawn = rng.permuted(np.tile(np.arange(width), (math.ceil(chains / 2), 1)), axis=1)
    orders[0::2] = drawn[: (chains + 1) // 2]
    orders[1::2] = drawn[: chains // 2, ::-1]  # the antithetic partner of each ordering
    start = np.repeat(np.arange(rows), permutations)  # each chain's reference row
    rank = np.argsort(orders, axis=1)  # rank[c, j]: the step at which chain c sets j
    # changed[c, k]: step k + 1 of chain c sets a feature whose value differs from its
    # reference row's; a step that changes nothing repeats the row before it.
    same = (background == x) | (np.isnan(background) & np.isnan(x))
    changed = ~np.take_along_axis(same[start], orders, axis=1)
    # to_come[c, k]: a step after step k still changes something; where none does, the
    # row at step k is x itself.
    to_come = np.logical_or.accumulate(changed[:, ::-1], axis=1)[:, ::-1]
    is_x = ~to_come[:, 1:]
    evaluate = changed[:, : width - 1] & ~is_x
    values = np.concatenate(
        [
            np.asarray(f(matrix), dtype=np.float64)
            for matrix in _chain_rows(x, background, (start, rank, evaluate), dtype, rows_per_call)
        ]
    )
    at_background, at_x = values[:rows], float(values[rows])
    path = np.empty((chains, width + 1))
    known = np.ones((chains, width + 1), dtype=bool)
    path[:, 0] = at_background[start]
    inner = np.zeros((chains, width - 1))
    inner[evaluate] = values[rows + 1 :]
    inner[is_x] = at_x
    path[:, 1:width] = inner
    path[:, width] = at_x
    known[:, 1:width] = evaluate | is_x
    # Every other row repeats the last one before it that was evaluated (z at step 0).
    last = np.maximum.accumulate(np.where(known, np.arange(width + 1), 0), axis=1)
    path = np.take_along_axis(path, last, axis=1)
    contributions = np.diff(path, axis=1)  # [c, k]: what the feature set at step k added
    attributions = np.take_along_axis(contributions, rank, axis=1).mean(axis=0)
    return ShapleyValues(
        attributions=attributions,
        base_value=float(at_background.mean()),
        value=at_x,
        chains=chains,
        evaluations=len(values),
    )


def _chain_rows(
    x: np.ndarray,
    background: np.ndarray,
    chains: tuple[np.ndarray, np.ndarray, np.ndarray],
    dtype: type[np.floating[Any]],
    rows_per_call: int,
) -> Iterator[np.ndarray]:
    """The rows to evaluate, in blocks of whole chains: first the reference rows and ``x``,
    then, chain by chain, the rows strictly between each chain's start and ``x`` that
    ``evaluate`` marks. Row k of chain c takes from ``x`` the features it sets before step
    k (``rank[c, j] < k``). A block holds about ``rows_per_call`` rows, so its temporaries
    stay in the cache and in the allocator's free lists (module doc)."""
    start, rank, evaluate = chains
    count, width = rank.shape
    x_row = x.astype(dtype)
    reference = background.astype(dtype)
    steps = np.arange(1, width)[np.newaxis, :, np.newaxis]
    per_block = max(1, rows_per_call // max(1, width - 1))
    head: np.ndarray | None = np.vstack([reference, x_row[np.newaxis]])
    for first in range(0, count, per_block):
        block = slice(first, first + per_block)
        from_x = rank[block, np.newaxis, :] < steps
        middle = np.where(from_x, x_row, reference[start[block]][:, np.newaxis, :])
        rows = middle[evaluate[block]]
        if head is not None:
            rows = np.vstack([head, rows])
            head = None
        if len(rows):
            yield rows
    if head is not None:  # no chains at all
        yield head


def served_probability(model: LoadedModel, target: int, *, fast: bool) -> Probability:
    """The model's calibrated probability of class ``target``, as it is served."""

    def probability(matrix: np.ndarray) -> np.ndarray:
        served = class_probabilities(model, matrix.astype(np.float32, copy=False), fast=fast)
        return np.asarray(served[:, target], dtype=np.float64)

    return probability


def explain_prediction(
    model: LoadedModel,
    record: Mapping[str, Any],
    prediction: Mapping[str, Any],
    *,
    computed_at: int,
    permutations: int = PERMUTATIONS,
) -> dict[str, Any]:
    """The explanation record of one scored features record: attributions of the positive
    class's probability (the predicted class's, for more than two classes)."""
    metadata = model.metadata
    names = metadata.feature_names
    features = record["features"]
    x = np.array([_value(features.get(name)) for name in names], dtype=np.float64)
    target = 1 if metadata.classes == 2 else int(prediction["predicted"])
    fast = prediction.get("answered_by") == "fast_path"
    request_id = str(prediction["request_id"])
    seed = explanation_seed(request_id, model.version)
    background, reference = background_of(metadata)
    shapley = permutation_shapley(
        served_probability(model, target, fast=fast),
        x,
        background,
        seed=seed,
        permutations=permutations,
        dtype=np.float32,  # what the model reads
    )
    served = prediction.get("probabilities") or []
    return {
        "request_id": request_id,
        "event_id": prediction.get("event_id", request_id),
        "entity_id": prediction.get("entity_id"),
        "model": {"name": model.name, "version": model.version},
        "route": prediction.get("route"),
        "target_class": target,
        "feature_names": list(names),
        "feature_values": [None if math.isnan(v) else float(v) for v in x],
        "attributions": [float(a) for a in shapley.attributions],
        "base_value": shapley.base_value,
        "probability": shapley.value,
        "served_probability": float(served[target]) if target < len(served) else None,
        "answered_by": prediction.get("answered_by"),
        "method": METHOD,
        "samples": shapley.chains,
        "permutations": permutations,
        "reference": reference,
        "reference_rows": len(background),
        "evaluations": shapley.evaluations,
        "seed": seed,
        "computed_at": computed_at,
    }


def top_features(explanation: Mapping[str, Any], count: int) -> list[tuple[str, Any, float]]:
    """(name, value, attribution) of the ``count`` features with the largest |attribution|."""
    ranked = sorted(
        zip(
            explanation["feature_names"],
            explanation["feature_values"],
            explanation["attributions"],
            strict=True,
        ),
        key=lambda item: -abs(item[2]),
    )
    return [(str(name), value, float(a)) for name, value, a in ranked[:count]]


def _value(value: float | None) -> float:
    return math.nan if value is None else float(value)
