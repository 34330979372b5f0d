"""The cascade: triage answers what it is sure of, the ensemble the rest, same records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.artifact import load_model
from models.backends import OnnxRuntimeBackend
from models.cascade import Cascade, choose_threshold, fit_triage
from models.dataset import demo_training_set
from models.export import ONNX_FILE_NAME
from models.scoring import (
    LoadedModel,
    class_probabilities,
    conformal_for,
    model_outputs,
    score_batch,
)
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import DomainSpec


def test_triage_learns_a_linear_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4_000, 3))
    y = (x[:, 0] - x[:, 1] + rng.normal(scale=0.4, size=4_000) > 0).astype(np.int64)
    triage = fit_triage(x, y, np.zeros(3), np.ones(3))
    accuracy = float(((triage.positive_probability(x) >= 0.5) == y).mean())
    assert 0.85 < accuracy < 0.99  # noisy near the boundary: confident cases exist, not all
    threshold = choose_threshold(triage, x, y, agreement=0.99)
    cascade = Cascade(triage, threshold)
    escalated = cascade.escalate(x)
    answered = ~escalated
    assert 0.0 < escalated.mean() < 0.5
    assert float(((triage.positive_probability(x[answered]) >= 0.5) == y[answered]).mean()) >= 0.99
    assert Cascade.from_state(cascade.to_state()).threshold == threshold


@pytest.fixture(scope="module")
def loaded(
    payments_spec: DomainSpec, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, object]:
    directory = tmp_path_factory.mktemp("cascade-model")
    data = demo_training_set(payments_spec, 4_000, seed=6)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=3))
    _, metadata = load_model(directory)
    assert metadata.cascade is not None
    model = LoadedModel(
        name=metadata.name,
        version="test",
        metadata=metadata,
        backend=OnnxRuntimeBackend(Path(directory) / ONNX_FILE_NAME),
        conformal=conformal_for(metadata),
        cascade=Cascade.from_state(metadata.cascade),
    )
    return model, data


def records_of(data: object, count: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"e{i}",
            "entity_id": "c",
            "event_time": i,
            "feature_version": data.feature_version,  # type: ignore[attr-defined]
            "features": {
                n: (None if np.isnan(v) else float(v))
                for n, v in zip(data.names, data.features[i], strict=True)  # type: ignore[attr-defined]
            },
        }
        for i in range(count)
    ]


def test_escalated_rows_score_as_without_the_cascade(loaded: tuple[LoadedModel, object]) -> None:
    model, data = loaded
    records = records_of(data, 300)
    with_cascade = score_batch(model, records, now_ms=0, batch_ms=0.0)
    plain = score_batch(
        LoadedModel(model.name, model.version, model.metadata, model.backend, model.conformal),
        records,
        now_ms=0,
        batch_ms=0.0,
    )
    answered = {p["answered_by"] for p in with_cascade}
    assert answered <= {"triage", "ensemble"}
    for cascaded, reference in zip(with_cascade, plain, strict=True):
        assert reference["answered_by"] == "ensemble"
        if cascaded["answered_by"] == "ensemble":
            assert cascaded["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-9)
        else:
            assert cascaded["uncertainty"]["mutual_information"] == 0.0


@pytest.mark.parametrize("fast", [False, True])
def test_class_probabilities_are_the_served_ones(
    loaded: tuple[LoadedModel, object], *, fast: bool
) -> None:
    """The means an explanation asks for, without the uncertainty, are those served: with
    the cascade (triage and ensemble rows both), on its fast path, and without it."""
    model, data = loaded
    assert model.cascade is not None
    matrix = data.features[:500].astype(np.float32)  # type: ignore[attr-defined]
    records = records_of(data, 500)
    # A threshold at the median confidence: half the rows go to the ensemble.
    positive = model.cascade.triage.positive_probability(matrix.astype(np.float64))
    median = float(np.median(np.maximum(positive, 1.0 - positive)))
    halved = dataclasses.replace(model, cascade=Cascade(model.cascade.triage, median))
    plain = dataclasses.replace(model, cascade=None)
    for served_by in (halved, plain):
        outputs = model_outputs(served_by, records, fast=fast)
        served = np.array([output["probabilities"] for output in outputs if output is not None])
        answered = {output["answered_by"] for output in outputs if output is not None}
        assert len(served) == len(matrix)
        if served_by is halved and not fast:
            assert answered == {"triage", "ensemble"}  # both kinds of rows are compared
        means = class_probabilities(served_by, matrix, fast=fast)
        assert means.shape == served.shape
        np.testing.assert_allclose(means, served, rtol=0.0, atol=1e-12)


def test_a_record_of_another_feature_version_is_not_scored(
    loaded: tuple[LoadedModel, object],
) -> None:
    model, _ = loaded
    record = {
        "event_id": "x",
        "entity_id": "c",
        "event_time": 1,
        "feature_version": "other",
        "features": {},
    }
    [prediction] = score_batch(model, [record], now_ms=0, batch_ms=0.0)
    assert "error" in prediction
    assert "probabilities" not in prediction
