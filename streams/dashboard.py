"""The live dashboard's figures: rates and latency quantiles from recent metric snapshots.

The worker takes a ``MetricsSnapshot`` every second into a ``SnapshotHistory`` (a
bounded ring); ``dashboard_data`` turns the ring and the slower facts (drift, alerts,
the model state, lag) into the JSON the page at ``/dashboard/`` polls. Throughput is the
counter's increase over the recent window divided by its length; latency quantiles come
from the histogram buckets observed in that window (``histogram_quantile``, linear within
a bucket, as Prometheus computes them), or since the start when the window saw nothing.
Everything here is pure: time is the snapshots' ``at_s``.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

from models.lifecycle import ModelState
from streams.metrics import (
    HistogramSnapshot,
    MetricsSnapshot,
    WorkerMetrics,
    traffic_shares,
)
from streams.settings import Settings

__all__ = [
    "QUANTILES",
    "SnapshotHistory",
    "dashboard_data",
    "dashboard_html",
    "dashboard_url",
    "histogram_quantile",
]

QUANTILES = (0.5, 0.95, 0.99)
WINDOW_S = 10.0  # throughput and quantiles over the latest seconds
HISTORY_S = 120.0  # how far back the charts go
LATENCY_STAGES = {
    "ingest": "ingest_seconds",
    "score": "score_chunk_seconds",
    "end_to_end": "end_to_end_seconds",
}


def histogram_quantile(q: float, histogram: HistogramSnapshot) -> float | None:
    """The ``q`` quantile of the observations in the buckets; None when there are none.

    The rank ``q * count`` is found in the cumulative counts and interpolated linearly
    between the bucket's lower bound (0 for the first bucket) and its upper bound; a rank
    in the ``+Inf`` bucket answers the highest finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    total = histogram.count
    if total <= 0:
        return None
    rank = q * total
    running = 0
    lower = 0.0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        if count > 0 and running + count >= rank:
            return lower + (bound - lower) * max(rank - running, 0.0) / count
        running += count
        lower = bound
    return histogram.bounds[-1]


class SnapshotHistory:
    """The latest snapshots, one a second, for ``HISTORY_S`` seconds."""

    def __init__(self, keep_s: float = HISTORY_S) -> None:
        self.keep_s = keep_s
        self.snapshots: deque[MetricsSnapshot] = deque()

    def add(self, snapshot: MetricsSnapshot) -> None:
        self.snapshots.append(snapshot)
        while self.snapshots and snapshot.at_s - self.snapshots[0].at_s > self.keep_s:
            self.snapshots.popleft()

    def window(self, seconds: float) -> tuple[MetricsSnapshot, MetricsSnapshot] | None:
        """The earliest snapshot within ``seconds`` of the latest, and the latest."""
        if len(self.snapshots) < 2:  # a rate needs two points
            return None
        latest = self.snapshots[-1]
        earliest = next(s for s in self.snapshots if latest.at_s - s.at_s <= seconds)
        if earliest is latest:
            earliest = self.snapshots[-2]
        return earliest, latest


def _stage_counts(snapshot: MetricsSnapshot) -> dict[str, float]:
    counters = snapshot.counters
    return {
        "ingest": counters["ingest_events"],
        "features": counters["features"],
        "rejected": sum(snapshot.rejected.values()),
        "scored": counters["scored"],
        "predictions": sum(snapshot.predictions.values()),
        "labels": counters["labels"],
        "outcomes": sum(snapshot.outcomes.values()),
    }


def _rates(earlier: MetricsSnapshot, later: MetricsSnapshot) -> dict[str, float]:
    elapsed = later.at_s - earlier.at_s
    if elapsed <= 0:
        return dict.fromkeys(_stage_counts(later), 0.0)
    before = _stage_counts(earlier)
    return {k: (v - before[k]) / elapsed for k, v in _stage_counts(later).items()}


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _latency(name: str, latest: MetricsSnapshot, earlier: MetricsSnapshot | None) -> dict[str, Any]:
    histogram = latest.histograms[name]
    over = "recent"
    if earlier is not None:
        recent = histogram.minus(earlier.histograms[name])
        if recent.count > 0:
            histogram = recent
        else:
            over = "all"
    else:
        over = "all"
    figures: dict[str, Any] = {
        f"p{round(q * 100)}_ms": _rounded(
            None if (v := histogram_quantile(q, histogram)) is None else v * 1000
        )
        for q in QUANTILES
    }
    figures["count"] = histogram.count
    figures["over"] = over
    return figures


def _error_rate(
    latest: MetricsSnapshot, earlier: MetricsSnapshot | None
) -> dict[str, dict[str, Any]]:
    rates: dict[str, dict[str, Any]] = {}
    for key, outcomes in sorted(latest.outcomes.items()):
        errors = latest.outcome_errors.get(key, 0)
        recent_outcomes = outcomes - (earlier.outcomes.get(key, 0) if earlier else 0)
        recent_errors = errors - (earlier.outcome_errors.get(key, 0) if earlier else 0)
        rates[f"{key[0]}/{key[1]}"] = {
            "version": key[0],
            "route": key[1],
            "outcomes": outcomes,
            "error_rate": _rounded(errors / outcomes if outcomes else None, 4),
            "recent_error_rate": _rounded(
                recent_errors / recent_outcomes if recent_outcomes else None, 4
            ),
        }
    return rates


def _series(history: SnapshotHistory) -> dict[str, list[Any]]:
    """Per-second throughput and end-to-end p99 over the history, for the charts."""
    points = list(history.snapshots)
    series: dict[str, list[Any]] = {"t": [], "ingest": [], "scored": [], "e2e_p99_ms": []}
    for earlier, later in itertools.pairwise(points):
        rates = _rates(earlier, later)
        series["t"].append(round(later.at_s - points[-1].at_s, 1))
        series["ingest"].append(round(rates["ingest"], 1))
        series["scored"].append(round(rates["scored"], 1))
        recent = later.histograms["end_to_end_seconds"].minus(
            earlier.histograms["end_to_end_seconds"]
        )
        p99 = histogram_quantile(0.99, recent)
        series["e2e_p99_ms"].append(None if p99 is None else round(p99 * 1000, 1))
    return series


def _model(
    state: ModelState | None, events: Sequence[Mapping[str, Any]], predictions: Mapping[Any, float]
) -> dict[str, Any]:
    if state is None:
        return {"name": None, "sequence": None, "versions": [], "traffic": [], "timeline": []}
    timeline = list(events)
    if not timeline:  # a fixed model directory: no lifecycle log, one version
        timeline = [
            {
                "sequence": state.sequence,
                "kind": "serving",
                "version": version,
                "timestamp_ms": info.registered_ms or None,
                "actor": "model directory",
                "reason": "HEADRACE_MODEL_DIR",
            }
            for version, info in state.versions.items()
        ]
    served = {version for version, _ in predictions}
    return {
        "name": state.model,
        "sequence": state.sequence,
        "champion": state.champion,
        "canary": state.canary,
        "shadow": state.shadow,
        "versions": [
            {"version": v, "status": info.status, "scored": v in served}
            for v, info in sorted(state.versions.items())
        ],
        "traffic": [
            {"version": version, "route": route, "share": round(share, 4)}
            for (version, route), share in traffic_shares(state).items()
        ],
        "timeline": timeline[-50:],
    }


def dashboard_data(
    history: SnapshotHistory, metrics: WorkerMetrics, *, window_s: float = WINDOW_S
) -> dict[str, Any]:
    """The page's figures (see the module doc); ``metrics`` gives the slower facts."""
    if not history.snapshots:
        raise ValueError("no snapshot taken yet")
    latest = history.snapshots[-1]
    pair = history.window(window_s)
    earlier = pair[0] if pair else None
    rates = _rates(*pair) if pair else dict.fromkeys(_stage_counts(latest), 0.0)
    counters = latest.counters
    lookups = counters["cache_hits"] + counters["cache_misses"]
    return {
        "at_s": latest.at_s,
        "window_s": round(latest.at_s - earlier.at_s, 2) if earlier else None,
        "throughput": {k: round(v, 2) for k, v in rates.items()},
        "totals": _stage_counts(latest),
        "rejected": dict(sorted(latest.rejected.items())),
        "latency": {
            stage: _latency(name, latest, earlier) for stage, name in LATENCY_STAGES.items()
        },
        "cache_hit_rate": _rounded(counters["cache_hits"] / lookups if lookups else None, 4),
        "errors": _error_rate(latest, earlier),
        "drift": [
            {"version": v, "feature": f, "statistic": s, "value": _rounded(value, 5)}
            for (v, f, s), value in sorted(metrics.drift.items())
        ],
        "online": [
            {"version": v, "route": r, "metric": name, "value": _rounded(value, 4)}
            for (v, r, name), value in sorted(metrics.online.items())
        ],
        "model": _model(metrics.model_state, list(metrics.model_events), latest.predictions),
        "alerts": list(reversed(metrics.recent_alerts))[:20],
        "review_queue_size": metrics.review_queue_size,
        "consumer_lag": [
            {"topic": topic, "partition": partition, "lag": lag}
            for (topic, partition), lag in sorted(metrics.consumer_lag.items())
        ],
        "series": _series(history),
    }


def dashboard_html() -> str:
    """The page itself: one self-contained HTML file (inline CSS and script)."""
    return files("streams").joinpath("dashboard.html").read_text(encoding="utf-8")


def dashboard_url(settings: Settings, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{settings.web_port}/dashboard/"
