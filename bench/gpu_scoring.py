"""The worker's scoring path on each backend: the demo model, feature records to predictions.

Run as ``python -m bench.gpu_scoring``. ``bench.gpu_check`` times the network alone; this
times what a worker's micro-batch pays: building the feature matrix from records, the
backend call, the uncertainty summary, the conformal sets and the prediction records. It
trains the demo model on a replay of synthetic payments, checks that every backend's
probabilities agree with ONNX Runtime on CPU through that path, and reports rows/s per
batch size and backend, with MC dropout on the CPU and, where there is one, on the GPU.
It runs without a GPU too (the CPU rows alone). The last line printed is one JSON object;
the exit status is 1 when a backend disagrees beyond its tolerance.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.scoring_path import feature_records, path_rate
from models.artifact import load_model
from models.backends import AGREEMENT_TOLERANCE, McDropoutBackend, backend_factories
from models.dataset import demo_training_set, shortest_window_ms
from models.export import ONNX_FILE_NAME
from models.scoring import LoadedModel, conformal_for, model_outputs, model_version
from models.tensorrt_backend import FP16_AGREEMENT_TOLERANCE, TensorRTBackend
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import DEFAULT_SPEC
from streams.spec import load_spec

BATCH_SIZES = (1, 32, 256, 1024)
REFERENCE = "onnxruntime-cpu"
MC_SAMPLES = 10


def path_probabilities(model: LoadedModel, records: list[dict[str, Any]]) -> np.ndarray:
    """The served probabilities of each record, through the scoring path, in batches of 256."""
    rows = []
    for start in range(0, len(records), 256):
        for output in model_outputs(model, records[start : start + 256]):
            if output is None:
                raise ValueError("a record's feature version is not the model's")
            rows.append(output["probabilities"])
    return np.array(rows)


def backends_here(directory: Path) -> dict[str, tuple[Callable[[], Any], float]]:
    """Each backend to time, by name: how to build it and its agreement tolerance."""
    model, _ = load_model(directory)
    onnx = directory / ONNX_FILE_NAME
    factories = backend_factories(model, onnx)
    chosen = {REFERENCE: (factories.pop(REFERENCE), AGREEMENT_TOLERANCE)}  # compared against
    chosen |= {
        name: (build, AGREEMENT_TOLERANCE)
        for name, build in factories.items()
        if not name.endswith("mc-dropout")
    }
    if "tensorrt" in chosen:
        chosen["tensorrt-fp16"] = (
            lambda: TensorRTBackend(onnx, fp16=True),
            FP16_AGREEMENT_TOLERANCE,
        )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:  # stochastic: timed, not compared
        build = functools.partial(McDropoutBackend, model, samples=MC_SAMPLES, device=device)
        chosen[f"torch-{device}-mc-dropout"] = (build, float("inf"))
    return chosen


def run(events: int, count: int, log: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """(summary, every deterministic backend agreed with the reference)."""
    began = time.perf_counter()
    spec = load_spec(DEFAULT_SPEC)
    data = demo_training_set(spec, events, seed=3, warmup_ms=shortest_window_ms(spec))
    records = feature_records(data, count)
    with tempfile.TemporaryDirectory(prefix="headrace-gpu-scoring-") as scratch:
        directory = Path(scratch)
        train_model(data, directory, TrainingConfig(members=5, epochs=8, seed=3))
        _, metadata = load_model(directory)
        log(f"replayed {events} events and trained in {time.perf_counter() - began:.1f}s")
        reference: np.ndarray | None = None
        rates: dict[str, dict[str, int]] = {}
        cpu: dict[str, dict[str, float]] = {}  # process CPU µs per row, every thread
        agreement: dict[str, dict[str, Any]] = {}
        for name, (build, tolerance) in backends_here(directory).items():
            loaded = LoadedModel(
                name=metadata.name,
                version=model_version(directory),
                metadata=metadata,
                backend=build(),
                conformal=conformal_for(metadata),
            )
            probabilities = path_probabilities(loaded, records)
            if name == REFERENCE:
                reference = probabilities
            if reference is not None and tolerance != float("inf"):
                diff = float(np.abs(probabilities - reference).max())
                agreement[name] = {"max_abs_diff": diff, "tolerance": tolerance}
                agreement[name]["ok"] = diff <= tolerance
            rates[name], cpu[name] = {}, {}
            for size in BATCH_SIZES:
                subset = records[:512] if size == 1 else records
                cpu_began = time.process_time()
                rates[name][str(size)] = round(path_rate(loaded, subset, batch=size))
                cpu_s = (time.process_time() - cpu_began) / (3 * len(subset))  # 3 passes
                cpu[name][str(size)] = round(cpu_s * 1e6, 1)
            log(
                f"{name}: "
                + ", ".join(
                    f"batch {b} {r:,}/s ({cpu[name][b]} CPU µs/row)" for b, r in rates[name].items()
                )
            )
    cuda = torch.cuda.is_available()
    summary: dict[str, Any] = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name() if cuda else None,
        "events_replayed": events,
        "records": count,
        "mc_dropout_samples": MC_SAMPLES,
        "path_rows_per_s": rates,
        "path_cpu_us_per_row": cpu,
        "agreement": agreement,
        "seconds": round(time.perf_counter() - began, 1),
    }
    for name, by_size in rates.items():
        if name != REFERENCE and not name.endswith("mc-dropout"):
            summary[f"{name}_vs_{REFERENCE}"] = {
                size: round(rate / rates[REFERENCE][size], 2) for size, rate in by_size.items()
            }
    if cuda:
        summary["mc_dropout_cuda_vs_cpu"] = {
            size: round(rate / rates["torch-cpu-mc-dropout"][size], 2)
            for size, rate in rates["torch-cuda-mc-dropout"].items()
        }
    return summary, all(entry["ok"] for entry in agreement.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_scoring", description=__doc__)
    parser.add_argument("--events", type=int, default=60_000, help="payments replayed to train")
    parser.add_argument("--records", type=int, default=4_096, help="feature records scored")
    args = parser.parse_args(argv)
    if args.events < 5_000 or args.records < 1_024:
        parser.error("--events must be at least 5000 and --records at least 1024")
    summary, agreed = run(args.events, args.records, log=print)
    print(json.dumps(summary, sort_keys=True))
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
