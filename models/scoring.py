"""Scoring a batch of feature records: probabilities, uncertainty, a conformal set.

Pure apart from the backend call: the caller passes the records and the clock readings.
A record whose feature version differs from the model's is not scored: the prediction
says so, because a model must never be fed features from a definition it was not
trained on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import ModelMetadata
from models.backends import ScoringBackend
from models.cache import feature_hash
from models.cascade import Cascade
from models.conformal import ConformalPredictor
from models.export import ONNX_FILE_NAME
from models.uncertainty import Uncertainty, summarise

LOW_CONFIDENCE = 0.7  # below this top probability, or with a set of several classes


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str  # content hash of the ONNX graph
    metadata: ModelMetadata
    backend: ScoringBackend
    conformal: ConformalPredictor
    cascade: Cascade | None = None  # when set, confident cases never reach the ensemble


def model_version(directory: Path) -> str:
    return hashlib.sha256((directory / ONNX_FILE_NAME).read_bytes()).hexdigest()[:12]


def score_batch(
    model: LoadedModel,
    records: Sequence[Mapping[str, Any]],
    *,
    now_ms: int,
    batch_ms: float,
) -> list[dict[str, Any]]:
    """One prediction record per feature record, in order."""
    names = model.metadata.feature_names
    scorable = [r for r in records if r["feature_version"] == model.metadata.feature_version]
    predictions: dict[str, dict[str, Any]] = {}
    if scorable:
        matrix = np.array(
            [[_value(r["features"].get(n)) for n in names] for r in scorable],
            dtype=np.float32,
        )
        summary, answered_by = _probabilities(model, matrix)
        sets = model.conformal.predict_sets(summary.mean)
        for i, record in enumerate(scorable):
            confidence = float(summary.confidence[i])
            predictions[record["event_id"]] = {
                "probabilities": [float(p) for p in summary.mean[i]],
                "predicted": int(summary.predicted[i]),
                "uncertainty": {
                    "confidence": confidence,
                    "entropy": float(summary.entropy[i]),
                    "mutual_information": float(summary.mutual_information[i]),
                    "conformal_set": list(sets[i]),
                    "conformal_alpha": model.conformal.alpha,
                },
                "low_confidence": confidence < LOW_CONFIDENCE or len(sets[i]) != 1,
                "answered_by": answered_by[i],
            }
    out = []
    for record in records:
        prediction = predictions.get(record["event_id"])
        base = {
            "request_id": record["event_id"],
            "event_id": record["event_id"],
            "entity_id": record["entity_id"],
            "event_time": record["event_time"],
            "model": {"name": model.name, "version": model.version},
            "route": "champion",
            "feature_version": record["feature_version"],
            "features_hash": feature_hash(record["features"]),
            "features_at": record.get("features_at"),
            "scored_at": now_ms,
            "latency_ms": {"batch_score": round(batch_ms, 3), "batch_size": len(scorable)},
        }
        if prediction is None:
            base["error"] = (
                f"feature_version {record['feature_version']} is not the model's "
                f"{model.metadata.feature_version}"
            )
        else:
            base.update(prediction)
        out.append(base)
    return out


def _probabilities(model: LoadedModel, matrix: np.ndarray) -> tuple[Uncertainty, list[str]]:
    """Mean probabilities and uncertainty per row; the cascade sends only the uncertain
    rows to the ensemble (triage answers carry zero mutual information: one model)."""
    if model.cascade is None:
        return summarise(model.backend.member_probs(matrix)), ["ensemble"] * len(matrix)
    escalate = model.cascade.escalate(matrix.astype(np.float64))
    positive = model.cascade.triage.positive_probability(matrix.astype(np.float64))
    members = np.stack([1.0 - positive, positive], axis=1)[np.newaxis].repeat(
        model.metadata.members,
        axis=0,
    )
    if escalate.any():
        members[:, escalate] = model.backend.member_probs(matrix[escalate])
    return summarise(members), ["ensemble" if e else "triage" for e in escalate]


def _value(value: float | None) -> float:
    return math.nan if value is None else float(value)
