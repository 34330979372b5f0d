"""The TensorRT backend: absent stacks are reported, present ones agree with PyTorch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from models.backends import AGREEMENT_TOLERANCE, TorchBackend
from models.export import export_onnx
from models.network import Ensemble
from models.tensorrt_backend import (
    FP16_AGREEMENT_TOLERANCE,
    TensorRTBackend,
    plan_key,
    plan_path,
    read_cached_plan,
    tensorrt_available,
    write_cached_plan,
)
from models.training import TrainingConfig, train_ensemble

needs_tensorrt = pytest.mark.skipif(
    not tensorrt_available(), reason="needs tensorrt and a CUDA device"
)


def synthetic(n: int, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ np.linspace(-1.5, 1.5, d))))).astype(np.int64)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x, y


def test_without_tensorrt_it_says_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: ImportError
    assert tensorrt_available() is False


def test_without_cuda_python_it_says_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    assert tensorrt_available() is False


def test_building_without_tensorrt_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeError, match="needs tensorrt and cuda-python"):
        TensorRTBackend(tmp_path / "model.onnx")


def test_availability_here_matches_the_installed_stack() -> None:
    importable = all(importlib.util.find_spec(name) is not None for name in ("tensorrt", "cuda"))
    if importable:
        pytest.skip("tensorrt and cuda-python are installed; the device decides")
    assert tensorrt_available() is False


def test_a_cached_plan_is_used_only_for_its_key(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    key = plan_key(b"graph", fp16=False, max_batch=64, trt_version="10.0", gpu="x sm_90")
    other = plan_key(b"graph", fp16=True, max_batch=64, trt_version="10.0", gpu="x sm_90")
    assert key != other
    path = plan_path(onnx, fp16=False)
    assert path.name == "model.onnx.plan"
    assert plan_path(onnx, fp16=True).name == "model.onnx.fp16.plan"
    assert read_cached_plan(path, key) is None
    write_cached_plan(path, key, b"engine bytes")
    assert read_cached_plan(path, key) == b"engine bytes"
    assert read_cached_plan(path, other) is None
    path.write_bytes(b"not a plan")
    assert read_cached_plan(path, key) is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ensemble, Path]:
    x, y = synthetic(3_000)
    model = train_ensemble(x, y, TrainingConfig(members=3, hidden=32, epochs=8, seed=1))
    path = export_onnx(model, tmp_path_factory.mktemp("model") / "model.onnx", x.shape[1])
    return model, path


@needs_tensorrt
@pytest.mark.parametrize(
    ("fp16", "tolerance"), [(False, AGREEMENT_TOLERANCE), (True, FP16_AGREEMENT_TOLERANCE)]
)
def test_tensorrt_agrees_with_pytorch(
    trained: tuple[Ensemble, Path], fp16: bool, tolerance: float
) -> None:
    model, path = trained
    x, _ = synthetic(257, seed=4)
    torch_backend = TorchBackend(model, device="cpu")
    backend = TensorRTBackend(path, max_batch=256, fp16=fp16)
    try:
        assert backend.name == ("tensorrt-fp16" if fp16 else "tensorrt")
        for batch in (1, 7, 128, 257):  # 257 runs as two engine calls
            rows = x[:batch].astype(np.float32)
            got = backend.member_probs(rows)
            want = torch_backend.member_probs(rows)
            assert got.shape == want.shape == (3, batch, 2)
            assert got.dtype == np.float64
            assert np.abs(got - want).max() <= tolerance, (backend.name, batch)
    finally:
        backend.close()
    backend.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        backend.member_probs(x[:1].astype(np.float32))


@needs_tensorrt
def test_a_restart_loads_the_cached_engine(trained: tuple[Ensemble, Path]) -> None:
    _, path = trained
    first = TensorRTBackend(path, max_batch=64)
    first.close()
    assert first.plan_path.exists()
    again = TensorRTBackend(path, max_batch=64)
    again.close()
    assert not again.built
    wider = TensorRTBackend(path, max_batch=128)  # another batch range is another engine
    wider.close()
    assert wider.built
