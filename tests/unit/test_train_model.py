"""From labelled events through the serving feature code to a model directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.artifact import load_model
from models.dataset import demo_training_set, fraud_probability
from models.export import INPUT, ONNX_FILE_NAME
from models.train_model import train_model
from models.training import TrainingConfig, member_probabilities
from streams.spec import DomainSpec


def test_a_model_directory_carries_its_metadata(payments_spec: DomainSpec, tmp_path: Path) -> None:
    data = demo_training_set(payments_spec, 3_000, seed=2)
    assert payments_spec.features is not None
    assert data.names == payments_spec.features.names
    assert data.features.shape == (len(data.labels), len(data.names))
    trained = train_model(data, tmp_path, TrainingConfig(members=2, hidden=16, epochs=3))
    model, metadata = load_model(tmp_path)
    assert metadata == trained.metadata
    assert metadata.feature_version == payments_spec.features.version
    assert set(metadata.feature_histograms) == set(data.names)
    assert sum(metadata.confidence_histogram.counts) == len(data.labels)
    assert set(metadata.conformal) == {"lac_0.1", "lac_0.05", "aps_0.1", "aps_0.05"}
    assert metadata.temperature > 0
    assert len(metadata.training_data_sha256) == 64
    session = ort.InferenceSession(
        str(tmp_path / ONNX_FILE_NAME), providers=["CPUExecutionProvider"]
    )
    x = data.features[:50].astype(np.float32)
    onnx_probs = session.run(None, {INPUT: x})[0]
    assert np.abs(onnx_probs - member_probabilities(model, x)).max() < 1e-5


def test_the_demo_rule_is_a_probability() -> None:
    assert 0.0 < fraud_probability({}) < 0.1
    risky = {"channel_is_web": 1.0, "device_risk": 0.9, "amount_over_mean_24h": 4.0}
    assert fraud_probability(risky) > 0.5
