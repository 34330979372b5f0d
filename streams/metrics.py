"""The worker's metrics: what each stage did, kept as plain numbers, exported to Prometheus.

The agents touch only plain Python numbers on their hot paths (an integer added to, a
bucket counted: well under a microsecond per event); ``WorkerCollector`` turns them into
Prometheus metric families when ``/metrics`` is scraped, from its own
``CollectorRegistry`` (``REGISTRY``). The slower facts (drift statistics, alerts, the
model state, consumer lag, the review queue) are set as they change or just before a
scrape. Nothing here imports faust: the agents feed ``METRICS``, the web pages read it.

Histograms use Prometheus' convention: a value falls in the first bucket whose upper
bound is at least the value (``le``), and one more bucket holds everything above the
last bound (``+Inf``).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from models.lifecycle import ModelEvent, ModelState

__all__ = [
    "METRICS",
    "PROMETHEUS_CONTENT_TYPE",
    "REGISTRY",
    "Histogram",
    "HistogramSnapshot",
    "MetricsSnapshot",
    "WorkerCollector",
    "WorkerMetrics",
    "exposed_names",
    "exposition",
    "traffic_shares",
]

# The text format every Prometheus server reads (prometheus_client's default is newer).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BOUNDS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
CHUNK_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONFIDENCE_BOUNDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
RECENT_ALERTS = 50
RECENT_MODEL_EVENTS = 200
_EMPTY: Mapping[str, Any] = {}
REVIEW_REMEMBERED = 100_000  # queued items awaiting a label, the oldest forgotten first


class Histogram:
    """Bucket counts and a sum; ``observe`` costs one bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bounds must be increasing and not empty")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.sum)


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; len(bounds) + 1
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """What was observed between ``earlier`` and this snapshot."""
        if earlier.bounds != self.bounds:
            raise ValueError("the snapshots have different buckets")
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        return HistogramSnapshot(self.bounds, counts, self.sum - earlier.sum)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' ``(le, count)`` buckets, ``+Inf`` last."""
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return buckets


HISTOGRAMS: Mapping[str, tuple[str, tuple[float, ...]]] = {
    "ingest_seconds": ("Time to validate, featurize and hand one event on", LATENCY_BOUNDS_S),
    "score_chunk_seconds": ("Time to route and score one chunk of features", LATENCY_BOUNDS_S),
    "end_to_end_seconds": (
        "Prediction sent minus the raw event's Kafka timestamp",
        LATENCY_BOUNDS_S,
    ),
    "score_chunk_size": ("Feature records per scored chunk", CHUNK_SIZE_BOUNDS),
    "confidence": ("Confidence of the decisions (top probability)", CONFIDENCE_BOUNDS),
}

# The counters without labels, and their help texts.
COUNTERS: Mapping[str, str] = {
    "ingest_events": "Messages read from events.raw",
    "features": "Accepted events written downstream (features or events.valid)",
    "scored": "Feature records scored",
    "cache_hits": "Predictions answered from the prediction cache",
    "cache_misses": "Predictions computed by a model",
    "deadline_missed": "Predictions answered by the fast path after their deadline",
    "labels": "Labels read by the feedback join",
    "review_items": "Items sent to review.queue",
    "skipped_acks_left_out": (
        "Acknowledgements of messages a stream skipped in a rebalance, not counted as "
        "processed (streams.commits)"
    ),
    "commits_withheld": "Offset commits held back at a partition's unacknowledged head",
    "commit_rereads": "Partitions read again from their committed offset (streams.commits)",
    "stale_records_held_back": (
        "Records fetched before a seek and held back, their partition sought again "
        "(streams.commits)"
    ),
}


@dataclass(frozen=True)
class MetricsSnapshot:
    """The counters and histograms at one moment, for rates and recent quantiles."""

    at_s: float
    counters: Mapping[str, float]
    rejected: Mapping[str, float]
    predictions: Mapping[tuple[str, str], float]  # (version, route)
    outcomes: Mapping[tuple[str, str], float]
    outcome_errors: Mapping[tuple[str, str], float]
    histograms: Mapping[str, HistogramSnapshot]


@dataclass
class WorkerMetrics:
    """Everything the worker counts; the agents write it, the collector reads it."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    rejected: dict[str, int] = field(default_factory=dict)  # by reason
    predictions: dict[tuple[str, str], int] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    outcome_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(
        default_factory=lambda: {name: Histogram(b) for name, (_, b) in HISTOGRAMS.items()}
    )
    drift: dict[tuple[str, str, str], float] = field(default_factory=dict)
    online: dict[tuple[str, str, str], float] = field(default_factory=dict)
    alerts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    recent_alerts: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_ALERTS)
    )
    model_events: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_MODEL_EVENTS)
    )
    model_state: ModelState | None = None  # set before a scrape
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)  # set before a scrape
    awaiting_review: OrderedDict[str, None] = field(default_factory=OrderedDict)
    event_loop: str = ""  # the loop the worker runs on, once it runs (streams.event_loop)

    @property
    def review_queue_size(self) -> int:
        return len(self.awaiting_review)

    # -- the ingest agent ------------------------------------------------------------------

    def ingest_accepted(self, seconds: float) -> None:
        counters = self.counters
        counters["ingest_events"] += 1
        counters["features"] += 1
        self.histograms["ingest_seconds"].observe(seconds)

    def ingest_rejected(self, reason: str, seconds: float) -> None:
        self.counters["ingest_events"] += 1
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.histograms["ingest_seconds"].observe(seconds)

    # -- the scoring agent -----------------------------------------------------------------

    def scored_chunk(
        self,
        records: Sequence[Mapping[str, Any]],
        predictions: Sequence[Mapping[str, Any]],
        *,
        seconds: float,
        sent_ms: int,
    ) -> None:
        """One scored chunk: its size and time, each prediction, each record's end to end."""
        histograms = self.histograms
        histograms["score_chunk_size"].observe(len(records))
        histograms["score_chunk_seconds"].observe(seconds)
        locate = bisect.bisect_left
        end_to_end = histograms["end_to_end_seconds"]
        bounds, buckets, total = end_to_end.bounds, end_to_end.counts, 0.0
        for record in records:
            raw_ms = record.get("source", _EMPTY).get("timestamp_ms")
            if raw_ms is not None:
                seconds_since = (sent_ms - raw_ms) / 1000.0 if sent_ms > raw_ms else 0.0
                buckets[locate(bounds, seconds_since)] += 1
                total += seconds_since
        end_to_end.sum += total
        confidence = histograms["confidence"]
        bounds, buckets, total = confidence.bounds, confidence.counts, 0.0
        counts = self.predictions
        hits = missed = 0
        for prediction in predictions:
            route = prediction.get("route", "champion")
            key = (prediction["model"]["version"], route)
            counts[key] = counts.get(key, 0) + 1
            if prediction.get("latency_ms", _EMPTY).get("cache") == "hit":
                hits += 1
            if "deadline_missed" in prediction:
                missed += 1
            uncertainty = prediction.get("uncertainty")
            if uncertainty is not None and route != "shadow":
                value = uncertainty["confidence"]
                buckets[locate(bounds, value)] += 1
                total += value
        confidence.sum += total
        counters = self.counters
        counters["scored"] += len(records)
        counters["cache_hits"] += hits
        counters["cache_misses"] += len(predictions) - hits
        counters["deadline_missed"] += missed

    # -- feedback, drift, lifecycle --------------------------------------------------------

    def label(self, request_id: str) -> None:
        self.counters["labels"] += 1
        self.awaiting_review.pop(request_id, None)

    def review_queued(self, request_id: str) -> None:
        self.counters["review_items"] += 1
        self.awaiting_review[request_id] = None
        if len(self.awaiting_review) > REVIEW_REMEMBERED:
            self.awaiting_review.popitem(last=False)

    def outcome(self, outcome: Mapping[str, Any]) -> None:
        key = (str(outcome["version"]), str(outcome.get("route", "champion")))
        if outcome.get("superseded_error") is not None:
            return  # a corrected label: the outcome was counted when first joined
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if outcome.get("error"):
            self.outcome_errors[key] = self.outcome_errors.get(key, 0) + 1

    def drift_report(self, version: str, feature: str, statistic: str, value: float) -> None:
        self.drift[version, feature, statistic] = value

    def online_metrics(self, snapshot: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """River's online metrics per version and route (``OnlineMetrics.snapshot``)."""
        for version, routes in snapshot.items():
            for route, values in routes.items():
                for name, value in values.items():
                    if isinstance(value, int | float) and math.isfinite(value):
                        self.online[version, route, name] = float(value)

    def alert(self, alert: Mapping[str, Any], at_ms: int) -> None:
        key = (str(alert.get("version")), str(alert.get("feature")), str(alert.get("statistic")))
        self.alerts[key] = self.alerts.get(key, 0) + 1
        self.recent_alerts.append({**alert, "at_ms": at_ms})

    def model_event(self, event: ModelEvent) -> None:
        self.model_events.append(
            {
                "sequence": event.sequence,
                "kind": event.kind,
                "version": event.version,
                "timestamp_ms": event.timestamp_ms,
                "actor": event.actor,
                "reason": event.reason,
            }
        )

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self, at_s: float) -> MetricsSnapshot:
        return MetricsSnapshot(
            at_s=at_s,
            counters=dict(self.counters),
            rejected=dict(self.rejected),
            predictions=dict(self.predictions),
            outcomes=dict(self.outcomes),
            outcome_errors=dict(self.outcome_errors),
            histograms={name: h.snapshot() for name, h in self.histograms.items()},
        )


def traffic_shares(state: ModelState) -> dict[tuple[str, str], float]:
    """Each serving version's share of the traffic by route, in [0, 1]: the champion and
    the canary split the decisions; the shadow's share is of the traffic it also scores."""
    shares: dict[tuple[str, str], float] = {}
    canary = state.canary_percent / 100 if state.canary is not None else 0.0
    if state.champion is None and state.canary is not None:
        canary = 1.0
    if state.champion is not None:
        shares[state.champion, "champion"] = 1.0 - canary
    if state.canary is not None:
        shares[state.canary, "canary"] = canary
    if state.shadow is not None:
        shares[state.shadow, "shadow"] = state.shadow_fraction
    return shares


def _labelled_counter(
    name: str, documentation: str, labels: Sequence[str], values: Mapping[Any, float]
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _labelled_gauge(
    name: str, documentation: str, labels: Sequence[str], values: Mapping[Any, float]
) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric([str(k) for k in key] if isinstance(key, tuple) else [key], value)
    return family


class WorkerCollector(Collector):
    """The worker's metric families, built from ``WorkerMetrics`` at each scrape."""

    def __init__(self, metrics: WorkerMetrics, prefix: str = "headrace") -> None:
        self.metrics = metrics
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        m, p = self.metrics, self.prefix
        for name, documentation in COUNTERS.items():
            yield CounterMetricFamily(f"{p}_{name}", documentation, value=m.counters[name])
        yield _labelled_counter(
            f"{p}_rejected", "Events sent to events.rejected, by reason", ["reason"], m.rejected
        )
        yield _labelled_counter(
            f"{p}_predictions",
            "Predictions written, by model version and route",
            ["version", "route"],
            m.predictions,
        )
        yield _labelled_counter(
            f"{p}_outcomes",
            "Predictions joined with their label, by version and route",
            ["version", "route"],
            m.outcomes,
        )
        yield _labelled_counter(
            f"{p}_outcome_errors",
            "Joined predictions whose decision was not the label",
            ["version", "route"],
            m.outcome_errors,
        )
        yield _labelled_counter(
            f"{p}_alerts",
            "Alerts raised, by version, feature and statistic",
            ["version", "feature", "statistic"],
            m.alerts,
        )
        for name, (documentation, _) in HISTOGRAMS.items():
            snapshot = m.histograms[name].snapshot()
            yield HistogramMetricFamily(
                f"{p}_{name}", documentation, buckets=snapshot.cumulative(), sum_value=snapshot.sum
            )
        yield _labelled_gauge(
            f"{p}_drift",
            "The latest drift statistic per version, feature and statistic",
            ["version", "feature", "statistic"],
            m.drift,
        )
        yield _labelled_gauge(
            f"{p}_online_metric",
            "Online metrics over the latest labelled outcomes, per version and route",
            ["version", "route", "metric"],
            m.online,
        )
        yield from self._serving(m.model_state)
        yield _labelled_gauge(
            f"{p}_consumer_lag",
            "Messages behind the end of each assigned topic partition",
            ["topic", "partition"],
            m.consumer_lag,
        )
        yield GaugeMetricFamily(
            f"{p}_review_queue_size",
            "Items sent to review.queue whose label has not arrived",
            value=m.review_queue_size,
        )
        info = GaugeMetricFamily(
            f"{p}_worker_info",
            "The worker (1), with the event loop it runs on",
            labels=["event_loop"],
        )
        if m.event_loop:
            info.add_metric([m.event_loop], 1.0)
        yield info

    def _serving(self, state: ModelState | None) -> Iterable[Metric]:
        p = self.prefix
        shares = traffic_shares(state) if state is not None else {}
        yield _labelled_gauge(
            f"{p}_model_traffic_share",
            "The share of traffic each serving version takes, by route",
            ["version", "route"],
            shares,
        )
        versions = GaugeMetricFamily(
            f"{p}_model_version_info",
            "Known model versions (1) with their lifecycle status",
            labels=["model", "version", "status"],
        )
        sequence = GaugeMetricFamily(
            f"{p}_model_sequence", "The lifecycle sequence the worker serves at", labels=["model"]
        )
        if state is not None:
            for version, info in sorted(state.versions.items()):
                versions.add_metric([state.model, version, info.status], 1.0)
            sequence.add_metric([state.model], state.sequence)
        yield versions
        yield sequence


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a scrape of ``registry`` can show (``_total``, ``_bucket``, ...)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


METRICS = WorkerMetrics()
REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(WorkerCollector(METRICS))
