"""Drift watching in the worker: reports to ``drift.reports``, alerts to ``alerts``.

The scoring agent hands each chunk's decisions to ``watch_chunk``: per served version, a
``models.drift_watch.ServingDriftWatch`` counts the features and the confidence against
the version's reference histograms (its training data), ADWIN and a sampled KSWIN follow
the confidence. The controller hands labelled outcomes to ``watch_outcome`` (ADWIN on the
error stream). Each watch is checkpointed as JSON under the worker's data directory when
it reports (every 1,000 events), and restored from there when the worker starts again.
Reports and alerts carry the model version, the feature, the statistic and the window.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from models.drift_watch import DriftAlert, LabelDriftWatch, ServingDriftWatch
from models.fleet import ServingSet
from streams import topics
from streams.app import settings
from streams.metrics import METRICS

log = structlog.get_logger(__name__)

CHECKPOINTS = settings.data_dir / settings.app_id / "drift"
_serving: dict[str, ServingDriftWatch] = {}
_labels = LabelDriftWatch(min_rise=settings.drift_error_min_rise)


def _save(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_bytes(orjson.dumps(state))
    scratch.replace(path)


def _load(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(FileNotFoundError):
        state: dict[str, Any] = orjson.loads(path.read_bytes())
        return state
    return None


def _watch(version: str, serving: ServingSet) -> ServingDriftWatch | None:
    watch = _serving.get(version)
    if watch is None and version in serving.scorers:
        watch = ServingDriftWatch(
            version,
            serving.scorers[version].model.metadata,
            window=settings.drift_window,
            threshold=settings.drift_threshold,
        )
        state = _load(CHECKPOINTS / f"serving-{version}.json")
        if state is not None:
            try:
                watch.load_state(state)
                log.info("drift.restored", version=version, events=watch.monitor.events)
            except (ValueError, KeyError) as error:
                log.warning("drift.checkpoint_refused", version=version, error=str(error))
        _serving[version] = watch
    return watch


async def _alert(alert: DriftAlert) -> None:
    log.warning("drift.alert", **alert.to_dict())
    METRICS.alert(alert.to_dict(), int(time.time() * 1000))
    await topics.alerts.send(key=alert.version.encode(), value=orjson.dumps(alert.to_dict()))


async def watch_chunk(
    serving: ServingSet,
    records: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
) -> None:
    """Feed the decisions of one scored chunk (shadows aside) to their versions' watches."""
    features = {str(r["event_id"]): r["features"] for r in records}
    for prediction in predictions:
        if prediction.get("route") == "shadow" or "uncertainty" not in prediction:
            continue
        version = str(prediction["model"]["version"])
        watch = _watch(version, serving)
        if watch is None:
            continue
        reports, alerts = watch.observe(
            features[str(prediction["request_id"])],
            float(prediction["uncertainty"]["confidence"]),
            prediction.get("event_time"),
        )
        for report in reports:
            value = {**report.to_dict(), "version": version}
            METRICS.drift_report(version, report.feature, report.statistic, report.value)
            await topics.drift_reports.send(key=report.feature.encode(), value=orjson.dumps(value))
        for alert in alerts:
            await _alert(alert)
        if reports:
            _save(CHECKPOINTS / f"serving-{version}.json", watch.to_state())


_restored = _load(CHECKPOINTS / "labels.json")
if _restored is not None:
    with contextlib.suppress(ValueError, KeyError):
        _labels.load_state(_restored)


async def watch_outcome(outcome: Mapping[str, Any], *, checkpoint: bool) -> None:
    """Feed one labelled outcome to the error detector of its version."""
    alert = _labels.observe(outcome)
    if alert is not None:
        await _alert(alert)
    if checkpoint or alert is not None:
        _save(CHECKPOINTS / "labels.json", _labels.to_state())
