"""What the worker watches for drift, per served model version, and what it reports.

``ServingDriftWatch`` holds, for one version, the PSI/KL monitor of every feature and the
confidence against the version's reference histograms, ADWIN on the confidence and a
sampled KSWIN on it (``models.drift``). ``observe`` takes one scored event and returns the
drift reports due (every ``report_every`` events) and the alerts: a report over its
threshold, or a River signal. ``LabelDriftWatch`` runs the error detector on labelled
outcomes. Both save and restore their whole state (``to_state``/``from_state``), so a
worker that restarts carries on where its checkpoint left off.

An alert for a feature is raised when its PSI crosses the threshold, and not again until
it has fallen back under it: one alert per excursion, not one per report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.artifact import ModelMetadata
from models.drift import (
    CONFIDENCE_FEATURE,
    ConfidenceDrift,
    DriftReport,
    DriftSignal,
    ErrorDrift,
    FeatureDriftMonitor,
    SampledKSWIN,
)

# No report before the window holds this many decisions: PSI over 20 bins from 500 values
# reads about 0.1 by sampling noise alone (measured), from 1,000 about 0.03.
MIN_REPORTED = 1_000


@dataclass(frozen=True)
class DriftAlert:
    version: str
    feature: str  # a feature, CONFIDENCE_FEATURE, or "model.error"
    statistic: str  # "psi", "adwin", "kswin", ...
    value: float | None
    threshold: float | None
    window: int
    event_time_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "feature": self.feature,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "window": self.window,
            "event_time_ms": self.event_time_ms,
        }


def _signal_alert(version: str, feature: str, signal: DriftSignal) -> DriftAlert:
    return DriftAlert(
        version, feature, signal.detector, None, None, signal.window, signal.event_time_ms
    )


class ServingDriftWatch:
    def __init__(
        self,
        version: str,
        metadata: ModelMetadata,
        *,
        window: int = 5_000,
        threshold: float = 0.1,
        report_every: int = 1_000,
    ) -> None:
        self.version = version
        self.monitor = FeatureDriftMonitor(
            metadata.feature_histograms,
            metadata.confidence_histogram,
            window=window,
            threshold=threshold,
            min_count=min(MIN_REPORTED, window),
            report_every=report_every,
        )
        self.adwin = ConfidenceDrift()
        self.kswin = SampledKSWIN()
        self.alerting: set[str] = set()  # features whose PSI is over the threshold now

    def observe(
        self, features: Mapping[str, float | None], confidence: float, event_time_ms: int | None
    ) -> tuple[list[DriftReport], list[DriftAlert]]:
        reports = self.monitor.update(features, confidence, event_time_ms=event_time_ms)
        alerts: list[DriftAlert] = []
        for report in reports:
            if report.statistic != "psi":
                continue
            if report.alert and report.feature not in self.alerting:
                self.alerting.add(report.feature)
                alerts.append(
                    DriftAlert(
                        self.version,
                        report.feature,
                        "psi",
                        report.value,
                        report.threshold,
                        report.window,
                        event_time_ms,
                    )
                )
            elif not report.alert:
                self.alerting.discard(report.feature)
        for detector in (self.adwin, self.kswin):
            signal = detector.update(confidence, event_time_ms=event_time_ms)
            if signal is not None:
                alerts.append(_signal_alert(self.version, CONFIDENCE_FEATURE, signal))
        return reports, alerts

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "monitor": self.monitor.to_state(),
            "adwin": self.adwin.to_state(),
            "kswin": self.kswin.to_state(),
            "alerting": sorted(self.alerting),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Carry on from a checkpoint of the same version."""
        if state.get("version") != self.version:
            raise ValueError(f"a checkpoint of {state.get('version')!r}, not {self.version!r}")
        self.monitor = FeatureDriftMonitor.from_state(state["monitor"])
        self.adwin = ConfidenceDrift.from_state(state["adwin"])
        self.kswin = SampledKSWIN.from_state(state["kswin"])
        self.alerting = set(state["alerting"])


CONFIRM_OUTCOMES = 500  # outcomes after a detected rise that confirm it, or not


class LabelDriftWatch:
    """ADWIN on each version's 0/1 error stream, from labelled outcomes: an alert when the
    error rate has risen by ``min_rise`` or more.

    When ADWIN cuts its window on a rise, its whole window's mean gives the error rate
    before the change. What it kept still holds many older outcomes (it cuts as soon as it can
    tell), so the rise is confirmed on the outcomes that follow: once at least
    ``CONFIRM_MIN`` of them have an error rate ``min_rise`` above the rate before, the
    alert goes out (value: that rate, threshold: the rate before, event time: the
    detection's); an unconfirmed rise is let go after ``CONFIRM_MAX``. A fall is good
    news; a small rise (feature windows filling up, a slow change of the traffic mix) is
    real but not worth a retraining.
    """

    def __init__(self, min_rise: float = 0.05) -> None:
        self.detectors: dict[str, ErrorDrift] = {}
        self.min_rise = min_rise
        self.pending: dict[str, dict[str, Any]] = {}  # per version: a rise to confirm

    def observe(self, outcome: Mapping[str, Any]) -> DriftAlert | None:
        if outcome.get("route") == "shadow" or outcome.get("superseded_error") is not None:
            return None
        version = str(outcome["version"])
        error = bool(outcome["error"])
        detector = self.detectors.get(version)
        if detector is None:  # not setdefault: that would build a detector every outcome
            detector = self.detectors[version] = ErrorDrift()
        signal = detector.update(error, event_time_ms=outcome.get("event_time"))
        if (
            signal is not None
            and signal.mean_after is not None
            and signal.mean_before is not None
            and signal.mean_after > signal.mean_before
            and version not in self.pending
        ):
            # The rate before: the whole window's mean, not the dropped side's (ADWIN cuts
            # where the sides differ most, so the dropped side's mean is biased low).
            before = signal.mean_window if signal.mean_window is not None else signal.mean_before
            self.pending[version] = {
                "before": before,
                "window": signal.window,
                "event_time_ms": signal.event_time_ms,
                "n": 0,
                "errors": 0,
            }
            return None
        rise = self.pending.get(version)
        if rise is None:
            return None
        rise["n"] += 1
        rise["errors"] += int(error)
        rate = rise["errors"] / rise["n"]
        if rise["n"] < CONFIRM_OUTCOMES:
            return None
        del self.pending[version]  # one look at the rate: confirmed or let go
        if rate - rise["before"] >= self.min_rise:
            return DriftAlert(
                version,
                "model.error",
                "adwin",
                rate,
                rise["before"],
                int(rise["window"]),
                rise["event_time_ms"],
            )
        return None

    def to_state(self) -> dict[str, Any]:
        return {
            "detectors": {version: d.to_state() for version, d in self.detectors.items()},
            "pending": self.pending,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.detectors = {
            version: ErrorDrift.from_state(s) for version, s in state["detectors"].items()
        }
        self.pending = {version: dict(rise) for version, rise in state["pending"].items()}
