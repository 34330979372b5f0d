"""Compression figures: size, accuracy and speed of the int8 graph and the distilled student,
each against the float ensemble graph, all served through the ONNX Runtime backend."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from models.backends import OnnxRuntimeBackend
from models.compress import distill_student, export_student_onnx, file_size, quantize_int8
from models.dataset import demo_training_set
from models.export import export_onnx
from models.network import Ensemble
from models.training import TrainingConfig, train_ensemble
from streams.settings import DEFAULT_SPEC
from streams.spec import load_spec

SPEED_BATCH = 128
SPEED_REPEATS = 7
SPEED_BATCHES_PER_REPEAT = 50


def accuracy(backend: OnnxRuntimeBackend, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the argmax of the mean over members."""
    probs = backend.member_probs(x.astype(np.float32)).mean(axis=0)
    return float((probs.argmax(axis=1) == y).mean())


def rows_per_second(backend: OnnxRuntimeBackend, x: np.ndarray, batch: int = SPEED_BATCH) -> float:
    """Median over repeats of rows/s, each repeat scoring consecutive batches of ``batch``."""
    features = np.ascontiguousarray(x, dtype=np.float32)
    starts = [(i * batch) % (len(features) - batch) for i in range(SPEED_BATCHES_PER_REPEAT)]
    backend.member_probs(features[:batch])  # warm-up
    rates = []
    for _ in range(SPEED_REPEATS):
        began = time.perf_counter_ns()
        for start in starts:
            backend.member_probs(features[start : start + batch])
        elapsed_s = (time.perf_counter_ns() - began) / 1e9
        rates.append(batch * len(starts) / elapsed_s)
    return statistics.median(rates)


def _versus(
    name: str,
    path: Path,
    reference: dict[str, float],
    x_heldout: np.ndarray,
    y_heldout: np.ndarray,
) -> dict[str, float]:
    backend = OnnxRuntimeBackend(path)
    size = float(file_size(path))
    correct = accuracy(backend, x_heldout, y_heldout)
    rate = rows_per_second(backend, x_heldout)
    return {
        f"{name}_size_bytes": size,
        f"{name}_size_reduction_pct": 100.0 * (1.0 - size / reference["float_size_bytes"]),
        f"{name}_accuracy": correct,
        f"{name}_accuracy_delta": 100.0 * (correct - reference["float_accuracy"]),
        f"{name}_rows_per_s": rate,
        f"{name}_speedup": rate / reference["float_rows_per_s"],
    }


def compression_figures(  # noqa: PLR0913, PLR0917
    onnx_path: Path,
    ensemble: Ensemble,
    x_heldout: np.ndarray,
    y_heldout: np.ndarray,
    x_unlabelled: np.ndarray,
    workdir: Path,
) -> dict[str, float]:
    """Sizes in bytes, accuracy deltas in percentage points, speedups at batch 128; the
    reference for both is the float ensemble graph at ``onnx_path``."""
    int8_path = quantize_int8(onnx_path, workdir / "model.int8.onnx")
    student = distill_student(ensemble, x_unlabelled)
    student_path = export_student_onnx(student, workdir / "student.onnx", x_heldout.shape[1])
    backend = OnnxRuntimeBackend(onnx_path)
    figures = {
        "float_size_bytes": float(file_size(onnx_path)),
        "float_accuracy": accuracy(backend, x_heldout, y_heldout),
        "float_rows_per_s": rows_per_second(backend, x_heldout),
    }
    figures.update(_versus("int8", int8_path, figures, x_heldout, y_heldout))
    figures.update(_versus("student", student_path, figures, x_heldout, y_heldout))
    return figures


def main() -> None:
    data = demo_training_set(load_spec(DEFAULT_SPEC), 20_000, seed=3)
    x, y = data.features, data.labels
    ensemble = train_ensemble(x[:12_000], y[:12_000], TrainingConfig(members=5, epochs=8, seed=3))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        onnx_path = export_onnx(ensemble, workdir / "model.onnx", x.shape[1])
        figures = compression_figures(
            onnx_path, ensemble, x[16_000:], y[16_000:], x[12_000:16_000], workdir
        )
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
