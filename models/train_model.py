"""From a training set to a model directory: split, train, calibrate, conform, export."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import calibration, conformal
from models.artifact import (
    Histogram,
    ModelMetadata,
    data_hash,
    save_metadata,
    save_weights,
)
from models.cascade import Cascade, choose_threshold, fit_triage
from models.dataset import TrainingSet
from models.export import ONNX_FILE_NAME, export_onnx
from models.network import Ensemble
from models.training import TrainingConfig, train_ensemble

CONFORMAL_LEVELS = (0.10, 0.05)


@dataclass(frozen=True)
class TrainedModel:
    directory: Path
    metadata: ModelMetadata


def _member_logits(model: Ensemble, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model.member_logits(torch.as_tensor(x, dtype=torch.float32))
    out: np.ndarray = logits.numpy().astype(np.float64)
    return out


def _served_probs(member_logits: np.ndarray, temperature: float) -> np.ndarray:
    members = np.stack([calibration.softmax(m, temperature) for m in member_logits])
    mean: np.ndarray = members.mean(axis=0)
    return mean


def fit_ensemble_temperature(
    member_logits: np.ndarray,
    labels: np.ndarray,
    *,
    log_bounds: tuple[float, float] = (-3.0, 3.0),
) -> float:
    """The temperature minimising the NLL of what is served: the mean over members of
    softmax(logits / T). Golden-section search on log T (the NLL is unimodal there)."""
    rows = np.arange(len(labels))

    def loss(log_temperature: float) -> float:
        probs = _served_probs(member_logits, math.exp(log_temperature))
        return float(-np.log(np.clip(probs[rows, labels], 1e-12, 1.0)).mean())

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    low, high = log_bounds
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    loss_left, loss_right = loss(left), loss(right)
    while high - low > 1e-5:
        if loss_left <= loss_right:
            high, right, loss_right = right, left, loss_left
            left = high - ratio * (high - low)
            loss_left = loss(left)
        else:
            low, left, loss_left = left, right, loss_right
            right = low + ratio * (high - low)
            loss_right = loss(right)
    return math.exp((low + high) / 2.0)


def train_model(
    data: TrainingSet,
    directory: Path,
    config: TrainingConfig,
    *,
    name: str = "payments-fraud",
) -> TrainedModel:
    """Split by time (60% train, 20% validation for the temperature, 20% conformal)."""
    n = len(data.labels)
    if n < 100:
        raise ValueError(f"need at least 100 labelled rows, got {n}")
    train_end, val_end = int(n * 0.6), int(n * 0.8)
    x, y = data.features, data.labels
    model = train_ensemble(x[:train_end], y[:train_end], config)
    val_logits = _member_logits(model, x[train_end:val_end])
    y_val = y[train_end:val_end]
    temperature = fit_ensemble_temperature(val_logits, y_val)
    model.temperature.fill_(temperature)
    val_predicted = _served_probs(val_logits, temperature).argmax(axis=1)
    triage = fit_triage(
        x[:train_end],
        y[:train_end],
        model.mean.numpy().astype(np.float64),
        model.scale.numpy().astype(np.float64),
    )
    cascade = Cascade(triage, choose_threshold(triage, x[train_end:val_end], val_predicted))
    cal_logits = _member_logits(model, x[val_end:])
    y_cal = y[val_end:]
    before = _served_probs(cal_logits, 1.0)
    after = _served_probs(cal_logits, temperature)
    predictors = {
        f"{method}_{alpha}": conformal.calibrate(after, y_cal, alpha, method).to_state()
        for method in ("lac", "aps")
        for alpha in CONFORMAL_LEVELS
    }
    directory.mkdir(parents=True, exist_ok=True)
    export_onnx(model, directory / ONNX_FILE_NAME, x.shape[1])
    save_weights(directory, model)
    all_probs = _served_probs(_member_logits(model, x), temperature)
    metadata = ModelMetadata(
        name=name,
        feature_names=list(data.names),
        feature_version=data.feature_version,
        members=config.members,
        hidden=config.hidden,
        classes=2,
        dropout=config.dropout,
        temperature=temperature,
        conformal=predictors,
        feature_histograms={feature: Histogram.of(x[:, i]) for i, feature in enumerate(data.names)},
        confidence_histogram=Histogram.of(all_probs.max(axis=1)),
        training_data_sha256=data_hash(x, y),
        training_rows=n,
        first_event_time=data.first_event_time,
        last_event_time=data.last_event_time,
        metrics={
            "accuracy_heldout": float((after.argmax(axis=1) == y_cal).mean()),
            "ece_before": calibration.expected_calibration_error(before, y_cal),
            "ece_after": calibration.expected_calibration_error(after, y_cal),
            "positive_rate": float(y.mean()),
            "cascade_escalated_share_heldout": float(cascade.escalate(x[val_end:]).mean()),
        },
        cascade=cascade.to_state(),
    )
    save_metadata(directory, metadata)
    return TrainedModel(directory, metadata)
