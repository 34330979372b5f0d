"""GPU check: every GPU backend here agrees with ONNX Runtime on CPU, and how much faster it is.

Run as ``python -m bench.gpu_check``. It trains a small ensemble on synthetic data, exports
it to ONNX and times ONNX Runtime on CPU at each batch size. Where a CUDA device is present
it then checks and times PyTorch on CUDA (plain and replayed from CUDA graphs) and TensorRT
(fp32 and fp16) where it imports. The last line printed is one JSON object; the exit status
is 1 when a GPU backend disagrees with ONNX Runtime beyond its tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.backends import (
    AGREEMENT_TOLERANCE,
    CudaGraphBackend,
    OnnxRuntimeBackend,
    ScoringBackend,
    TorchBackend,
)
from models.export import export_onnx
from models.network import Ensemble
from models.tensorrt_backend import FP16_AGREEMENT_TOLERANCE, TensorRTBackend, tensorrt_available
from models.training import TrainingConfig, train_ensemble

FEATURES = 38
MEMBERS = 5
BATCH_SIZES = (1, 8, 32, 128, 512, 1024, 4096)
MAX_BATCH = max(BATCH_SIZES)
WARMUP = 5


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with 5% missing and a logistic label, as in the unit tests."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ np.linspace(-1.5, 1.5, FEATURES))))).astype(
        np.int64
    )
    x[rng.random(x.shape) < 0.05] = np.nan
    return x, y


def _synchronise() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_backend(
    backend: ScoringBackend, x: np.ndarray, sizes: tuple[int, ...], *, budget_s: float
) -> list[dict[str, Any]]:
    """Per batch size: p50 latency (ms) over the repeats and rows/s at that median."""
    rows = []
    for size in sizes:
        batch = np.ascontiguousarray(x[:size], dtype=np.float32)
        for _ in range(WARMUP):
            backend.member_probs(batch)
        samples: list[float] = []
        began = time.perf_counter()
        while len(samples) < 5 or (len(samples) < 200 and time.perf_counter() - began < budget_s):
            _synchronise()
            start = time.perf_counter_ns()
            backend.member_probs(batch)
            _synchronise()
            samples.append((time.perf_counter_ns() - start) / 1e6)
        p50 = statistics.median(samples)
        rows.append({"batch": size, "p50_ms": p50, "rows_per_s": size / (p50 / 1e3)})
    return rows


def max_abs_diff(backend: ScoringBackend, x: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference from the reference over batches of 1, 7, 128 and all rows."""
    worst = 0.0
    for size in (1, 7, 128, len(x)):
        got = backend.member_probs(x[:size])
        if got.shape != reference[:, :size].shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - reference[:, :size]).max()))
    return worst


def gpu_backends(model: Ensemble, onnx_path: Path) -> list[tuple[ScoringBackend, float]]:
    """Every GPU backend that runs here, each with its agreement tolerance."""
    backends: list[tuple[ScoringBackend, float]] = [
        (TorchBackend(model, device="cuda"), AGREEMENT_TOLERANCE),
        (CudaGraphBackend(model, max_batch=MAX_BATCH), AGREEMENT_TOLERANCE),
    ]
    if tensorrt_available():
        backends.append((TensorRTBackend(onnx_path, max_batch=MAX_BATCH), AGREEMENT_TOLERANCE))
        backends.append(
            (TensorRTBackend(onnx_path, max_batch=MAX_BATCH, fp16=True), FP16_AGREEMENT_TOLERANCE)
        )
    return backends


def print_table(timings: dict[str, list[dict[str, Any]]], baseline: str) -> None:
    base = {row["batch"]: row["rows_per_s"] for row in timings[baseline]}
    print(f"{'backend':<20} {'batch':>6} {'rows/s':>14} {'p50 ms':>10} {'vs ORT CPU':>11}")
    for name, rows in timings.items():
        for row in rows:
            speedup = row["rows_per_s"] / base[row["batch"]]
            print(
                f"{name:<20} {row['batch']:>6} {row['rows_per_s']:>14,.0f} "
                f"{row['p50_ms']:>10.4f} {speedup:>10.2f}x"
            )


def run_check(
    directory: Path, *, ort_threads: int, budget_s: float, log: Callable[[str], None]
) -> tuple[dict[str, Any], bool]:
    """(summary, every GPU backend agreed); the CPU part alone where there is no CUDA."""
    began = time.perf_counter()
    x, y = synthetic(20_000, seed=0)
    model = train_ensemble(x, y, TrainingConfig(members=MEMBERS, hidden=64, epochs=5, seed=0))
    onnx_path = export_onnx(model, directory / "model.onnx", FEATURES)
    log(f"trained and exported in {time.perf_counter() - began:.1f}s")
    probe, _ = synthetic(MAX_BATCH, seed=1)
    probe = probe.astype(np.float32)
    ort = OnnxRuntimeBackend(onnx_path, threads=ort_threads)
    reference = ort.member_probs(probe)
    timings = {ort.name: time_backend(ort, probe, BATCH_SIZES, budget_s=budget_s)}
    agreement: dict[str, dict[str, Any]] = {}
    cuda = torch.cuda.is_available()
    if cuda:
        for backend, tolerance in gpu_backends(model, onnx_path):
            diff = max_abs_diff(backend, probe, reference)
            agreement[backend.name] = {
                "max_abs_diff": diff,
                "tolerance": tolerance,
                "ok": diff <= tolerance,
            }
            log(f"{backend.name}: max abs diff vs {ort.name} {diff:.3g} (tolerance {tolerance})")
            timings[backend.name] = time_backend(backend, probe, BATCH_SIZES, budget_s=budget_s)
            close = getattr(backend, "close", None)
            if close is not None:
                close()
    print_table(timings, ort.name)
    if not cuda:
        log("no CUDA device: ran the ONNX Runtime CPU part only")
    summary = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name() if cuda else None,
        "tensorrt": cuda and tensorrt_available(),
        "ort_threads": ort_threads,
        "agreement": agreement,
        "timings": {
            name: {str(r["batch"]): {k: round(v, 4) for k, v in r.items()} for r in rows}
            for name, rows in timings.items()
        },
        "seconds": round(time.perf_counter() - began, 1),
    }
    return summary, all(entry["ok"] for entry in agreement.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    parser.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime CPU threads")
    parser.add_argument(
        "--budget-s", type=float, default=1.0, help="timing seconds per backend and batch size"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headrace-gpu-check-") as scratch:
        summary, agreed = run_check(
            Path(scratch), ort_threads=args.ort_threads, budget_s=args.budget_s, log=print
        )
    print(json.dumps(summary, sort_keys=True))
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
