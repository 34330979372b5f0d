"""Scoring a batch of feature records: probabilities, uncertainty, a conformal set.

Pure apart from the backend call: the caller passes the records and the clock readings.
A record whose feature version differs from the model's is not scored: the prediction
says so, because a model must never be fed features from a definition it was not
trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import ModelMetadata, load_model
from models.backends import ScoringBackend, choose_backend
from models.cache import feature_hash
from models.cascade import Cascade
from models.conformal import CalibrationScores, ConformalPredictor
from models.export import ONNX_FILE_NAME
from models.uncertainty import Uncertainty, mean_probabilities, summarise

LOW_CONFIDENCE = 0.7  # below this top probability, or with a set of several classes


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str  # content hash of the ONNX graph
    metadata: ModelMetadata
    backend: ScoringBackend
    conformal: ConformalPredictor
    cascade: Cascade | None = None  # when set, confident cases never reach the ensemble
    directory: Path | None = None  # the artifact it was loaded from, where there is one


def load_served_model(directory: Path, version: str, backend: str | None = None) -> LoadedModel:
    """The model artifact in ``directory`` as a worker serves it, on the named backend
    (``models.backends.choose_backend``: the first available for None, ValueError for one
    this machine lacks)."""
    model, metadata = load_model(directory)
    return LoadedModel(
        name=metadata.name,
        version=version,
        metadata=metadata,
        backend=choose_backend(model, directory / ONNX_FILE_NAME, backend),
        conformal=conformal_for(metadata),
        cascade=Cascade.from_state(metadata.cascade) if metadata.cascade else None,
        directory=directory,
    )


SERVED_CONFORMAL = "lac_0.1"  # the predictor a version serves until its alpha is adapted


def conformal_for(metadata: ModelMetadata, alpha: float | None = None) -> ConformalPredictor:
    """The served conformal predictor: the trained 90% LAC one, or LAC at ``alpha`` from
    the calibration split's scores (adaptive conformal inference moves alpha)."""
    if alpha is None:
        return ConformalPredictor.from_state(metadata.conformal[SERVED_CONFORMAL])
    if metadata.conformal_scores is None:
        raise ValueError("this model keeps no calibration scores: its alpha cannot move")
    return CalibrationScores.from_state(metadata.conformal_scores).predictor(alpha)


def model_version(directory: Path) -> str:
    return hashlib.sha256((directory / ONNX_FILE_NAME).read_bytes()).hexdigest()[:12]


def score_batch(
    model: LoadedModel,
    records: Sequence[Mapping[str, Any]],
    *,
    now_ms: int,
    batch_ms: float,
    fast: bool = False,
) -> list[dict[str, Any]]:
    """One prediction record per feature record, in order.

    ``fast`` answers by the cascade's triage model alone (the fast path for events past
    their deadline); a model without a cascade answers as usual.
    """
    outputs = model_outputs(model, records, fast=fast)
    scored = sum(output is not None for output in outputs)
    return [
        prediction_record(model, record, output, now_ms=now_ms, batch_ms=batch_ms, batch=scored)
        for record, output in zip(records, outputs, strict=True)
    ]


def model_outputs(
    model: LoadedModel, records: Sequence[Mapping[str, Any]], *, fast: bool = False
) -> list[dict[str, Any] | None]:
    """What the model says of each record (the part of a prediction a cache may keep);
    None for a record whose feature version is not the model's."""
    names = model.metadata.feature_names
    scorable = [
        i for i, r in enumerate(records) if r["feature_version"] == model.metadata.feature_version
    ]
    outputs: list[dict[str, Any] | None] = [None] * len(records)
    if not scorable:
        return outputs
    # None (a window with nothing to compute from) becomes NaN in the float array.
    matrix = np.array(
        [list(map(records[i]["features"].get, names)) for i in scorable], dtype=np.float32
    )
    summary, answered_by = _probabilities(model, matrix, fast=fast)
    sets = model.conformal.predict_sets(summary.mean)
    for row, i in enumerate(scorable):
        confidence = float(summary.confidence[row])
        outputs[i] = {
            "probabilities": [float(p) for p in summary.mean[row]],
            "predicted": int(summary.predicted[row]),
            "uncertainty": {
                "confidence": confidence,
                "entropy": float(summary.entropy[row]),
                "mutual_information": float(summary.mutual_information[row]),
                "conformal_set": list(sets[row]),
                "conformal_alpha": model.conformal.alpha,
            },
            "low_confidence": confidence < LOW_CONFIDENCE or len(sets[row]) != 1,
            "answered_by": answered_by[row],
        }
    return outputs


def class_probabilities(
    model: LoadedModel, matrix: np.ndarray, *, fast: bool = False
) -> np.ndarray:
    """The calibrated mean probabilities (rows, classes) of a float32 feature matrix (NaN:
    missing), as ``model_outputs`` serves them: the cascade's triage answers its confident
    rows, the ensemble the others; ``fast``: the triage alone."""
    if model.cascade is None:
        return summarise(model.backend.member_probs(matrix)).mean
    # The means alone, without the members' copies of the triage answers and the
    # uncertainty ``_probabilities`` builds: an explanation asks for thousands of rows.
    means, escalate = _triage(model.cascade, matrix)
    if not fast and escalate.any():
        means[escalate] = mean_probabilities(model.backend.member_probs(matrix[escalate]))
    return means


def prediction_record(  # noqa: PLR0913 - the record and its output, then keyword-only context
    model: LoadedModel,
    record: Mapping[str, Any],
    output: Mapping[str, Any] | None,
    *,
    now_ms: int,
    batch_ms: float,
    batch: int,
    features_hash: str | None = None,
) -> dict[str, Any]:
    """The prediction record of one feature record (DESIGN.md section 2); pass
    ``features_hash`` when it is known, to spare hashing the vector again."""
    prediction: dict[str, Any] = {
        "request_id": record["event_id"],
        "event_id": record["event_id"],
        "entity_id": record["entity_id"],
        "event_time": record["event_time"],
        "model": {"name": model.name, "version": model.version},
        "route": "champion",
        "feature_version": record["feature_version"],
        "features_hash": features_hash or feature_hash(record["features"]),
        "features_at": record.get("features_at"),
        "scored_at": now_ms,
        "latency_ms": {"batch_score": round(batch_ms, 3), "batch_size": batch},
    }
    if output is None:
        prediction["error"] = (
            f"feature_version {record['feature_version']} is not the model's "
            f"{model.metadata.feature_version}"
        )
    else:
        prediction.update(output)
    return prediction


def _probabilities(
    model: LoadedModel, matrix: np.ndarray, *, fast: bool
) -> tuple[Uncertainty, list[str]]:
    """Mean probabilities and uncertainty per row; the cascade sends only the uncertain
    rows to the ensemble (triage answers carry zero mutual information: one model), and
    none at all on the fast path."""
    if model.cascade is None:
        return summarise(model.backend.member_probs(matrix)), ["ensemble"] * len(matrix)
    answers, escalate = _triage(model.cascade, matrix)
    ensemble = None if fast or not escalate.any() else model.backend.member_probs(matrix[escalate])
    # Triage answers repeat one model's output once per member: zero disagreement.
    members = answers[np.newaxis].repeat(
        model.metadata.members if ensemble is None else len(ensemble),
        axis=0,
    )
    if fast:
        return summarise(members), ["fast_path"] * len(matrix)
    if ensemble is not None:
        members[:, escalate] = ensemble
    return summarise(members), ["ensemble" if e else "triage" for e in escalate]


def _triage(cascade: Cascade, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The triage model's class probabilities (rows, 2) and the rows it escalates."""
    positive = cascade.triage.positive_probability(matrix.astype(np.float64))
    return np.stack([1.0 - positive, positive], axis=1), cascade.escalating(positive)
