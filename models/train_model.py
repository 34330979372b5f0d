"""From a training set to a model directory: split, train, calibrate, conform, export."""

from __future__ import annotations

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
from models.explain import background_sample
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


def train_model(
    data: TrainingSet,
    directory: Path,
    config: TrainingConfig,
    *,
    name: str = "payments-fraud",
) -> TrainedModel:
    """Split by time (60% train, 20% validation for the temperature, 20% conformal).

    The held-out metrics (accuracy, ECE and NLL before and after the temperature) are taken
    on the conformal split, which neither training nor the temperature fit has seen.
    """
    n = len(data.labels)
    if n < 100:
        raise ValueError(f"need at least 100 labelled rows, got {n}")
    train_end, val_end = int(n * 0.6), int(n * 0.8)
    x, y = data.features, data.labels
    model = train_ensemble(x[:train_end], y[:train_end], config)
    val_logits = _member_logits(model, x[train_end:val_end])
    y_val = y[train_end:val_end]
    temperature = calibration.fit_ensemble_temperature(val_logits, y_val)
    model.temperature.fill_(temperature)
    val_predicted = calibration.ensemble_softmax(val_logits, temperature).argmax(axis=1)
    triage = fit_triage(
        x[:train_end],
        y[:train_end],
        model.mean.numpy().astype(np.float64),
        model.scale.numpy().astype(np.float64),
    )
    cascade = Cascade(triage, choose_threshold(triage, x[train_end:val_end], val_predicted))
    cal_logits = _member_logits(model, x[val_end:])
    y_cal = y[val_end:]
    before = calibration.ensemble_softmax(cal_logits, 1.0)
    after = calibration.ensemble_softmax(cal_logits, temperature)
    predictors = {
        f"{method}_{alpha}": conformal.calibrate(after, y_cal, alpha, method).to_state()
        for method in ("lac", "aps")
        for alpha in CONFORMAL_LEVELS
    }
    directory.mkdir(parents=True, exist_ok=True)
    export_onnx(model, directory / ONNX_FILE_NAME, x.shape[1])
    save_weights(directory, model)
    all_probs = calibration.ensemble_softmax(_member_logits(model, x), temperature)
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
            "nll_before": calibration.ensemble_nll(cal_logits, y_cal, 1.0),
            "nll_after": calibration.ensemble_nll(cal_logits, y_cal, temperature),
            "positive_rate": float(y.mean()),
            "cascade_escalated_share_heldout": float(cascade.escalate(x[val_end:]).mean()),
        },
        cascade=cascade.to_state(),
        conformal_scores=conformal.CalibrationScores.compute(after, y_cal, "lac").to_state(),
        background=[
            [None if np.isnan(v) else float(v) for v in row]
            for row in background_sample(x[:train_end], seed=config.seed)
        ],
    )
    save_metadata(directory, metadata)
    return TrainedModel(directory, metadata)
