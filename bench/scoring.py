"""Scoring benchmarks: backends by batch size, batching gain, calibration and coverage."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.compression import compression_figures
from bench.scoring_agent import agent_figures
from bench.scoring_path import feature_records, path_rate
from models import calibration
from models.artifact import load_model
from models.backends import ScoringBackend, available_backends
from models.cache import LruPredictionCache
from models.cascade import Cascade
from models.conformal import ConformalPredictor, empirical_coverage
from models.dataset import demo_training_set, shortest_window_ms
from models.export import ONNX_FILE_NAME
from models.scoring import LoadedModel, conformal_for, model_version
from models.serving import ChunkScorer
from models.train_model import train_model
from models.training import TrainingConfig, member_probabilities
from streams.spec import load_spec

BATCH_SIZES = (1, 8, 32, 128, 512)


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


def backend_figures(backend: ScoringBackend, x: np.ndarray, rows: int) -> dict[str, Any]:
    """rows/s and p50/p99 batch latency (ms) per batch size, ``rows`` rows each."""
    figures: dict[str, Any] = {}
    for size in BATCH_SIZES:
        batches = max(rows // size, 20)
        latencies = []
        for i in range(batches):
            start = (i * size) % (len(x) - size)
            batch = x[start : start + size]
            began = time.perf_counter_ns()
            backend.member_probs(batch)
            latencies.append((time.perf_counter_ns() - began) / 1e6)
        figures[str(size)] = {
            "rows_per_s": round(size * len(latencies) / (sum(latencies) / 1e3)),
            "p50_ms": round(_percentile(latencies, 50), 4),
            "p99_ms": round(_percentile(latencies, 99), 4),
        }
    return figures


def scoring_figures(
    spec_path: Path, *, events: int = 120_000, rows: int = 4_096, agent: bool = True
) -> dict[str, Any]:
    """Every figure of ``headrace bench scoring``; ``agent=False`` skips the broker runs.

    The replays start after a warm-up as long as the shortest window, so that the rows
    kept are not all from windows still filling from empty (which made the held-out
    rows, the latest, unlike the training rows). Conformal coverage and the independent
    ECE are measured on the latest 20% of a second replay with another seed: the held-out
    split of the training replay is the conformal calibration split itself.
    """
    spec = load_spec(spec_path)
    warmup_ms = shortest_window_ms(spec)
    data = demo_training_set(spec, events, seed=3, warmup_ms=warmup_ms)
    fresh = demo_training_set(spec, events, seed=4, warmup_ms=warmup_ms)
    with tempfile.TemporaryDirectory(prefix="headrace-bench-model-") as scratch:
        directory = Path(scratch)
        trained = train_model(data, directory, TrainingConfig(members=5, epochs=8, seed=3))
        model, metadata = load_model(directory)
        x = data.features.astype(np.float32)
        backends = available_backends(model, directory / ONNX_FILE_NAME)
        per_backend = {b.name: backend_figures(b, x, rows) for b in backends}
        onnx = next(b for b in backends if b.name == "onnxruntime-cpu")
        loaded = LoadedModel(
            name=metadata.name,
            version=model_version(directory),
            metadata=metadata,
            backend=onnx,
            conformal=conformal_for(metadata),
        )
        records = feature_records(data, 4_096)
        batched = path_rate(loaded, records, batch=256)
        single = path_rate(loaded, records[:1_024], batch=1)
        cascade = Cascade.from_state(metadata.cascade) if metadata.cascade else None
        with_cascade = LoadedModel(
            loaded.name,
            loaded.version,
            metadata,
            onnx,
            loaded.conformal,
            cascade,
        )
        cascaded_rate = path_rate(with_cascade, records, batch=256)
        traffic = data.features[int(len(data.labels) * 0.8) :]
        escalated_share = float(cascade.escalate(traffic).mean()) if cascade else 1.0
        split = int(len(data.labels) * 0.8)
        (directory / "compression").mkdir()
        compression = compression_figures(
            directory / ONNX_FILE_NAME,
            model,
            data.features[split:],
            data.labels[split:],
            data.features[int(len(data.labels) * 0.6) : split],
            directory / "compression",
        )
        through_agent = agent_figures(directory, feature_records(data, 20_000)) if agent else {}
        cache_hit_rate = _cache_hit_rate(loaded, feature_records(data, 20_000))
        held_out = slice(int(len(fresh.labels) * 0.8), None)
        probs = member_probabilities(model, fresh.features[held_out]).mean(axis=0)
        labels = fresh.labels[held_out]
        coverage = {
            alpha: empirical_coverage(
                ConformalPredictor.from_state(metadata.conformal[f"lac_{alpha}"]).predict_mask(
                    probs
                ),
                labels,
            )
            for alpha in (0.1, 0.05)
        }
    torch_cpu = per_backend.get("torch-cpu", {}).get("128", {}).get("rows_per_s", 0)
    ort_cpu = per_backend["onnxruntime-cpu"]["128"]["rows_per_s"]
    return {
        "backends": per_backend,
        **through_agent,
        "scoring_path_batched_vs_per_event_ratio": round(batched / single, 2),
        "scoring_path_rows_per_s_batch256": round(batched),
        "scoring_path_rows_per_s_batch1": round(single),
        "cascade_escalated_share": round(escalated_share, 4),
        "scoring_path_rows_per_s_batch256_cascade": round(cascaded_rate),
        "cache_hit_rate": round(cache_hit_rate, 4),
        "ort_vs_torch_cpu_ratio": round(ort_cpu / torch_cpu, 2) if torch_cpu else None,
        "ece_before": round(trained.metadata.metrics["ece_before"], 4),
        "ece_after": round(trained.metadata.metrics["ece_after"], 4),
        "nll_before": round(trained.metadata.metrics["nll_before"], 4),
        "nll_after": round(trained.metadata.metrics["nll_after"], 4),
        "ece_after_independent": round(calibration.expected_calibration_error(probs, labels), 4),
        "coverage_90": round(coverage[0.1], 4),
        "coverage_95": round(coverage[0.05], 4),
        "heldout_rows": len(labels),
        **compression,
    }


def _cache_hit_rate(model: LoadedModel, records: list[dict[str, Any]]) -> float:
    """The prediction cache's hit rate over the demo traffic, through the serving path."""
    cache = LruPredictionCache(100_000)
    scorer = ChunkScorer(model, max_batch=256, cache=cache)
    for start in range(0, len(records), 256):
        chunk = records[start : start + 256]
        asyncio.run(scorer.score(chunk, deadlines_ms=[None] * len(chunk), now_ms=0))
    return cache.hit_rate
