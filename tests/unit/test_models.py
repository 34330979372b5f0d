"""The ensemble: it learns, it exports to ONNX, and every backend here agrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.backends import (
    AGREEMENT_TOLERANCE,
    CudaGraphBackend,
    available_backends,
    choose_backend,
    graph_bucket,
)
from models.export import export_onnx
from models.network import Ensemble
from models.training import (
    TrainingConfig,
    fit_standardisation,
    member_probabilities,
    train_ensemble,
)


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


def test_standardisation_ignores_missing_values() -> None:
    x = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0]])
    mean, scale = fit_standardisation(x)
    assert mean.tolist() == [2.0, 0.0, 5.0]
    assert scale.tolist() == [1.0, 1.0, 1.0]


def test_the_ensemble_learns_better_than_chance(trained: tuple[Ensemble, Path]) -> None:
    model, _ = trained
    x, y = synthetic(2_000, seed=9)
    probs = member_probabilities(model, x).mean(axis=0)
    accuracy = float(((probs[:, 1] > 0.5).astype(int) == y).mean())
    assert accuracy > 0.75
    assert probs.shape == (2_000, 2)
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_members_differ(trained: tuple[Ensemble, Path]) -> None:
    model, _ = trained
    x, _ = synthetic(200, seed=3)
    members = member_probabilities(model, x)
    assert members.shape[0] == 3
    assert np.abs(members[0] - members[1]).max() > 1e-3


def test_every_backend_here_agrees_with_pytorch(trained: tuple[Ensemble, Path]) -> None:
    model, path = trained
    x, _ = synthetic(257, seed=4)
    reference = member_probabilities(model, x)
    backends = available_backends(model, path)
    assert {b.name for b in backends} >= {"onnxruntime-cpu", "torch-cpu"}
    for backend in backends:
        for batch in (x[:1], x[:8], x):
            got = backend.member_probs(batch.astype(np.float32))
            assert got.shape == (3, len(batch), 2), backend.name
            assert np.abs(got - reference[:, : len(batch)]).max() <= AGREEMENT_TOLERANCE, (
                backend.name
            )


def test_choosing_an_unknown_backend_says_what_is_available(trained: tuple[Ensemble, Path]) -> None:
    model, path = trained
    assert choose_backend(model, path, "onnxruntime-cpu").name == "onnxruntime-cpu"
    with pytest.raises(ValueError, match="available: "):
        choose_backend(model, path, "tensorrt")


def test_mc_dropout_samples_every_member_reproducibly(trained: tuple[Ensemble, Path]) -> None:
    model, path = trained
    backend = choose_backend(model, path, "torch-cpu-mc-dropout")
    x, _ = synthetic(64, seed=5)
    first = backend.member_probs(x.astype(np.float32))
    again = backend.member_probs(x.astype(np.float32))
    deterministic = member_probabilities(model, x)
    assert first.shape == (3 * 8, 64, 2)
    assert np.array_equal(first, again)  # seeded: a replay gives the same answer
    assert np.abs(first[0] - first[3]).max() > 1e-3  # pass 1 and pass 2 of member 0 differ
    assert np.abs(first.mean(axis=0) - deterministic.mean(axis=0)).mean() < 0.05
    assert not model.training  # dropout is off again afterwards


def test_backends_leave_the_callers_model_where_and_as_it_was(
    trained: tuple[Ensemble, Path],
) -> None:
    """``Module.to`` moves in place: without a copy each, a CPU backend built after a CUDA
    one pulls the CUDA one's weights back to the CPU, and eval() changes the caller's mode."""
    model, path = trained
    model.train()
    try:
        backends = available_backends(model, path)
        choose_backend(model, path, "torch-cpu-mc-dropout")
        assert model.training
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        x, _ = synthetic(16, seed=6)
        for backend in backends:
            assert backend.member_probs(x.astype(np.float32)).shape == (3, 16, 2), backend.name
    finally:
        model.eval()


def test_graph_buckets_are_powers_of_two_up_to_the_largest() -> None:
    sizes = (1, 2, 3, 8, 9, 256, 257, 4096, 5000)
    assert [graph_bucket(n, 4096) for n in sizes] == [1, 2, 4, 8, 16, 256, 512, 4096, 4096]
    assert graph_bucket(100, 64) == 64
    with pytest.raises(ValueError, match="at least one row"):
        graph_bucket(0, 4096)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_pad_chunk_and_agree(trained: tuple[Ensemble, Path]) -> None:
    model, path = trained
    backend = CudaGraphBackend(model, max_batch=64)
    x, _ = synthetic(200, seed=7)
    reference = member_probabilities(model, x)
    for rows in (1, 3, 63, 64, 65, 200, 5):  # padded, exact, chunked, then a bucket again
        got = backend.member_probs(x[:rows].astype(np.float32))
        assert got.shape == (3, rows, 2)
        assert np.abs(got - reference[:, :rows]).max() <= AGREEMENT_TOLERANCE, rows
    assert choose_backend(model, path).name in {"tensorrt", "torch-cuda-graph"}
