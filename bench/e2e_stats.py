"""The arithmetic of ``headrace bench e2e``: percentiles, steady rates, matched latencies.

Pure functions over plain numbers, so the figures can be checked without a broker.
Times are integer milliseconds since the epoch (Kafka timestamps and the producer's
clock on the same machine).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linearly interpolated between closest ranks
    (numpy's default method)."""
    if not samples:
        raise ValueError("no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def steady_rate(times_ms: Iterable[int], trim: float = 0.2) -> float:
    """Outputs per second over the middle of a run in time: from ``trim`` of the run's
    span after its first output to ``trim`` before its last, so start-up and the tail are
    left out. A window in time, not in output count: a worker that scores its backlog
    in bursts would look faster than it is over the middle outputs of each burst."""
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be within 0..0.5, got {trim}")
    ordered = sorted(times_ms)
    if len(ordered) < 2:
        return 0.0
    span_ms = ordered[-1] - ordered[0]
    if span_ms <= 0:
        return 0.0
    low = ordered[0] + span_ms * trim
    high = ordered[-1] - span_ms * trim
    if trim == 0.0:
        return (len(ordered) - 1) * 1000.0 / span_ms
    inside = bisect.bisect_left(ordered, high) - bisect.bisect_left(ordered, low)
    return inside * 1000.0 / (high - low)


@dataclass(frozen=True)
class LatencySummary:
    matched: int  # outputs matched to a send inside the measured window
    sent: int  # sends inside the measured window
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    p999_ms: float | None
    achieved_per_s: float  # matched outputs per second of the window's span

    @property
    def delivered_fraction(self) -> float:
        return self.matched / self.sent if self.sent else 0.0


def latency_summary(
    sent_ms: Mapping[str, int],
    out_ms: Mapping[str, int],
    *,
    from_ms: int,
    to_ms: int,
) -> LatencySummary:
    """End-to-end latency of the sends made within ``[from_ms, to_ms)`` (the warm-up left
    out): output time minus send time, matched by id. A send with no output is counted
    in ``sent`` only, so ``delivered_fraction`` shows what the percentiles leave out."""
    window = [(key, at) for key, at in sent_ms.items() if from_ms <= at < to_ms]
    latencies = [out_ms[key] - at for key, at in window if key in out_ms]
    if not latencies:
        return LatencySummary(0, len(window), None, None, None, None, 0.0)
    outputs = [out_ms[key] for key, _ in window if key in out_ms]
    span_ms = max(max(outputs) - min(outputs), 1)
    return LatencySummary(
        matched=len(latencies),
        sent=len(window),
        p50_ms=round(percentile(latencies, 50), 1),
        p99_ms=round(percentile(latencies, 99), 1),
        max_ms=float(max(latencies)),
        p999_ms=round(percentile(latencies, 99.9), 1),
        achieved_per_s=round(len(latencies) * 1000.0 / span_ms, 1),
    )


def slowest_by_interval(
    sent_ms: Mapping[str, int],
    out_ms: Mapping[str, int],
    *,
    from_ms: int,
    to_ms: int,
    interval_ms: int = 250,
) -> list[tuple[int, int]]:
    """The slowest latency among the sends of each ``interval_ms`` of ``[from_ms, to_ms)``
    that had an output, as (the interval's start after ``from_ms``, latency), in time
    order: where the tail of a run comes from (a stall every few seconds shows as a
    regular train of slow intervals)."""
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be positive, got {interval_ms}")
    slowest: dict[int, int] = {}
    for key, at in sent_ms.items():
        if from_ms <= at < to_ms and key in out_ms:
            start = (at - from_ms) // interval_ms * interval_ms
            slowest[start] = max(slowest.get(start, out_ms[key] - at), out_ms[key] - at)
    return sorted(slowest.items())


def due_count(elapsed_s: float, rate: float, total: int) -> int:
    """How many sends a paced producer should have made ``elapsed_s`` into its run."""
    if elapsed_s <= 0:
        return 0
    return min(total, int(elapsed_s * rate) + 1)


@dataclass(frozen=True)
class CpuTimes:
    user_s: float
    system_s: float
    children_s: float  # waited-for children, user and system


def cpu_times(stat_line: str, ticks_per_s: int) -> CpuTimes:
    """A process's CPU times from its ``/proc/<pid>/stat`` line: fields 14-17 of proc(5)
    (utime, stime, cutime, cstime), counted after the command name's last ``)`` since the
    name may hold spaces and parentheses."""
    fields = stat_line.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return CpuTimes(utime / ticks_per_s, stime / ticks_per_s, (cutime + cstime) / ticks_per_s)


def cpu_seconds(stat_line: str, ticks_per_s: int) -> float:
    """User plus system CPU time of a process from its ``/proc/<pid>/stat`` line."""
    times = cpu_times(stat_line, ticks_per_s)
    return times.user_s + times.system_s


def bracketed_baseline(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, Any]:
    """The baseline's figures from a drain before the worker's and one after it.

    The machine's speed drifts over minutes (the plain loop alone has drained 3,173 to
    6,757 events/s on one day), so a worker drained between two baseline drains is
    compared with their mean; both runs are reported too. Each argument holds
    ``baseline_events_per_s``, ``baseline_cpu_us_per_event`` and ``baseline_predictions``.
    """
    runs = (before, after)
    return {
        "baseline_events_per_s": round(sum(r["baseline_events_per_s"] for r in runs) / 2),
        "baseline_cpu_us_per_event": round(sum(r["baseline_cpu_us_per_event"] for r in runs) / 2),
        "baseline_predictions": min(r["baseline_predictions"] for r in runs),
        "baseline_runs_events_per_s": [r["baseline_events_per_s"] for r in runs],
        "baseline_runs_cpu_us_per_event": [r["baseline_cpu_us_per_event"] for r in runs],
    }
