"""The demo's summary figures, computed from what the topics hold (pure functions)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.lifecycle import ModelEvent


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float


def end_to_end_latency(
    raw: Iterable[tuple[bytes, int]], predictions: Iterable[tuple[bytes, int]]
) -> Latency | None:
    """Event produced to decision written: each prediction's Kafka timestamp minus the raw
    event's, matched by event id (the first decision of each request)."""
    produced: dict[str, int] = {}
    for value, timestamp_ms in raw:
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        event_id = event.get("event_id") if isinstance(event, dict) else None
        if isinstance(event_id, str):
            produced.setdefault(event_id, timestamp_ms)
    delays: dict[str, int] = {}
    for value, timestamp_ms in predictions:
        prediction = orjson.loads(value)
        request = prediction["request_id"]
        if prediction.get("route") == "shadow" or request in delays or request not in produced:
            continue
        delays[request] = timestamp_ms - produced[request]
    if not delays:
        return None
    values = np.fromiter(delays.values(), dtype=np.float64)
    return Latency(len(values), float(np.percentile(values, 50)), float(np.percentile(values, 99)))


def decisions_by_version(predictions: Iterable[bytes]) -> Counter[str]:
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for value in predictions:
        prediction = orjson.loads(value)
        if prediction.get("route") == "shadow" or prediction["request_id"] in seen:
            continue
        seen.add(prediction["request_id"])
        counts[f"{prediction['model']['version']} ({prediction['route']})"] += 1
    return counts


def error_rates(
    outcomes: Iterable[Mapping[str, Any]], drift_time_ms: int
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(version, route, before|after the drift) -> (errors, labelled), latest label each."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for outcome in outcomes:
        latest[str(outcome["version"]), str(outcome["request_id"])] = outcome
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (version, _), outcome in latest.items():
        phase = "after" if int(outcome.get("event_time") or 0) >= drift_time_ms else "before"
        cell = counts[version, str(outcome["route"]), phase]
        cell[0] += int(bool(outcome["error"]))
        cell[1] += 1
    return {key: (errors, total) for key, (errors, total) in sorted(counts.items())}


def alert_counts(alerts: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter(
        (str(a.get("version")), str(a.get("feature")), str(a.get("statistic"))) for a in alerts
    )


def alert_text(alert: Mapping[str, Any]) -> str:
    """One alert in a line: what moved, on which version, by how much."""
    text = f"{alert.get('feature')} {alert.get('statistic')} on {alert.get('version')}"
    value, threshold = alert.get("value"), alert.get("threshold")
    if alert.get("feature") == "model.error" and value is not None and threshold is not None:
        return f"{text}: error rate {threshold:.1%} -> {value:.1%}"
    if value is not None:
        return f"{text}: {value:.3g}" + ("" if threshold is None else f" > {threshold:.3g}")
    return f"{text} (window {alert.get('window')})"


def alert_summary(counts: Counter[tuple[str, str, str]]) -> list[str]:
    """Alerts per version and statistic; PSI ones name their inputs, most frequent first."""
    grouped: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for (version, feature, statistic), n in counts.items():
        grouped[version, statistic][feature] += n
    lines = []
    for (version, statistic), features in sorted(grouped.items()):
        named = ", ".join(name for name, _ in features.most_common(4))
        more = f" and {len(features) - 4} more" if len(features) > 4 else ""
        lines.append(f"{sum(features.values()):>4} x {statistic} on {version}: {named}{more}")
    return lines


def timeline_line(event: ModelEvent, start_ms: int) -> str:
    """One lifecycle event as the demo prints it: seconds since the start, kind, details."""
    data = event.data
    details = [f"{key} {data[key]}" for key in ("percent", "fraction") if data.get(key)]
    evidence = data.get("evidence")
    if isinstance(evidence, Mapping) and evidence.get("rule"):
        details.append(f"rule {evidence['rule']}")
    if event.reason:
        details.append(event.reason)
    offset = (event.timestamp_ms - start_ms) / 1000
    return f"{offset:+7.1f} s  #{event.sequence:<3} {event.kind:<20} {event.version}  " + "; ".join(
        details
    )


def finished(events: Sequence[ModelEvent], champion: str) -> ModelEvent | None:
    """The event that ends the demo's rollout: a new champion, or a candidate rolled back."""
    for event in events:
        if event.kind == "promoted" and event.version != champion:
            return event
        if event.kind == "rolled_back" and event.version != champion:
            return event
    return None


def most_behind(
    committed: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int]
) -> int:
    """Messages waiting on the consumer group's most behind topic: per topic, the sum over
    its partitions of the end offset less the committed one (no commit yet, -1, counts
    from 0; a partition whose end is unknown counts nothing)."""
    behind: Counter[str] = Counter()
    for (topic, partition), offset in committed.items():
        end = ends.get((topic, partition), 0)
        behind[topic] += max(end - max(offset, 0), 0)
    return max(behind.values(), default=0)
