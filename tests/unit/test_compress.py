"""Compressed models: the int8 graph and the distilled student serve like the ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.backends import AGREEMENT_TOLERANCE, OnnxRuntimeBackend
from models.compress import (
    Student,
    distill_student,
    ensemble_mean_probabilities,
    export_student_onnx,
    file_size,
    quantize_int8,
    student_probabilities,
)
from models.export import export_onnx
from models.network import Ensemble
from models.training import TrainingConfig, train_ensemble


def synthetic(n: int, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    weights = np.linspace(-1.5, 1.5, d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ weights)))).astype(np.int64)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ensemble, Path]:
    x, y = synthetic(3_000)
    model = train_ensemble(x, y, TrainingConfig(members=3, hidden=32, epochs=8, seed=1))
    path = export_onnx(model, tmp_path_factory.mktemp("model") / "model.onnx", x.shape[1])
    return model, path


@pytest.fixture(scope="module")
def student(trained: tuple[Ensemble, Path]) -> Student:
    model, _ = trained
    unlabelled, _ = synthetic(4_000, seed=5)
    return distill_student(model, unlabelled, hidden=32, epochs=10, seed=2)


def test_int8_model_serves_close_to_the_float_model(
    trained: tuple[Ensemble, Path], tmp_path: Path
) -> None:
    _, path = trained
    int8_path = quantize_int8(path, tmp_path / "model.int8.onnx")
    x, _ = synthetic(500, seed=7)
    features = x.astype(np.float32)
    reference = OnnxRuntimeBackend(path).member_probs(features)
    got = OnnxRuntimeBackend(int8_path).member_probs(features)
    assert got.shape == reference.shape == (3, 500, 2)
    assert np.abs(got.mean(axis=0) - reference.mean(axis=0)).max() < 0.05
    assert file_size(int8_path) < file_size(path)


def test_int8_model_treats_missing_values_like_the_float_model(
    trained: tuple[Ensemble, Path], tmp_path: Path
) -> None:
    _, path = trained
    int8_path = quantize_int8(path, tmp_path / "model.int8.onnx")
    features = np.full((4, 12), np.nan, dtype=np.float32)
    reference = OnnxRuntimeBackend(path).member_probs(features)
    got = OnnxRuntimeBackend(int8_path).member_probs(features)
    assert np.isfinite(got).all()
    assert np.abs(got - reference).max() < 0.05


def test_student_onnx_serves_as_a_one_member_ensemble(student: Student, tmp_path: Path) -> None:
    path = export_student_onnx(student, tmp_path / "student.onnx", 12)
    x, _ = synthetic(257, seed=4)
    backend = OnnxRuntimeBackend(path)
    reference = student_probabilities(student, x)
    for batch in (x[:1], x[:8], x):
        got = backend.member_probs(batch.astype(np.float32))
        assert got.shape == (1, len(batch), 2)
        assert np.abs(got - reference[:, : len(batch)]).max() <= AGREEMENT_TOLERANCE


def test_student_agrees_with_the_ensemble(trained: tuple[Ensemble, Path], student: Student) -> None:
    model, _ = trained
    x, _ = synthetic(2_000, seed=9)
    teacher = ensemble_mean_probabilities(model, x).argmax(axis=1)
    pupil = student_probabilities(student, x)[0].argmax(axis=1)
    assert float((teacher == pupil).mean()) > 0.9


def test_student_copies_the_ensembles_standardisation(
    trained: tuple[Ensemble, Path], student: Student
) -> None:
    model, _ = trained
    assert torch.equal(student.mean, model.mean)
    assert torch.equal(student.scale, model.scale)
    with torch.no_grad():
        out = student(torch.full((3, 12), float("nan")))
    assert torch.isfinite(out).all()
