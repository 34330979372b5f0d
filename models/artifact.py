"""A trained model as a directory: the ONNX graph, the PyTorch weights, the metadata.

The metadata travels with the model: feature names and order, the feature-definition
version, normalisation, temperature, conformal thresholds, reference histograms of every
feature and of the model's confidence (drift detection compares the serving distribution
with them), the training data's hash and time range, held-out metrics, and a seeded sample of
training rows (the reference that explanations are computed against, ``models.explain``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from models.network import Ensemble

WEIGHTS_FILE = "model.pt"
METADATA_FILE = "metadata.json"
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]
    missing: int = 0

    @classmethod
    def of(cls, values: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
        present = values[~np.isnan(values)]
        if present.size == 0:
            return cls(edges=[0.0, 1.0], counts=[0], missing=int(values.size))
        low, high = float(present.min()), float(present.max())
        if high <= low:
            high = low + 1.0
        counts, edges = np.histogram(present, bins=bins, range=(low, high))
        return cls(
            edges=[float(e) for e in edges],
            counts=[int(c) for c in counts],
            missing=int(values.size - present.size),
        )


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    feature_names: list[str]
    feature_version: str
    members: int
    hidden: int
    classes: int
    dropout: float
    temperature: float
    conformal: dict[str, Any]  # e.g. {"lac_0.1": {...predictor state...}}
    feature_histograms: dict[str, Histogram]
    confidence_histogram: Histogram
    training_data_sha256: str
    training_rows: int
    first_event_time: int
    last_event_time: int
    metrics: dict[str, float] = field(default_factory=dict)
    cascade: dict[str, Any] | None = None  # models.cascade.Cascade state, when trained
    # The calibration split's LAC scores (models.conformal.CalibrationScores state): a
    # threshold at any level, for adaptive conformal inference while serving.
    conformal_scores: dict[str, Any] | None = None
    # A seeded sample of training rows (null: missing), the reference of ``models.explain``;
    # None in artifacts trained before it was kept.
    background: list[list[float | None]] | None = None


def data_hash(features: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(features, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def save_metadata(directory: Path, metadata: ModelMetadata) -> Path:
    path = directory / METADATA_FILE
    path.write_bytes(orjson.dumps(asdict(metadata), option=orjson.OPT_INDENT_2))
    return path


def load_metadata(directory: Path) -> ModelMetadata:
    raw = orjson.loads((directory / METADATA_FILE).read_bytes())
    raw["feature_histograms"] = {k: Histogram(**v) for k, v in raw["feature_histograms"].items()}
    raw["confidence_histogram"] = Histogram(**raw["confidence_histogram"])
    return ModelMetadata(**raw)


def save_weights(directory: Path, model: Ensemble) -> Path:
    path = directory / WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    return path


def load_model(directory: Path) -> tuple[Ensemble, ModelMetadata]:
    metadata = load_metadata(directory)
    model = Ensemble(
        len(metadata.feature_names),
        members=metadata.members,
        hidden=metadata.hidden,
        classes=metadata.classes,
        dropout=metadata.dropout,
    )
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, weights_only=True))
    model.eval()
    return model, metadata
