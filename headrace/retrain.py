"""``headrace model retrain``: a candidate from recent labels, registered and shadowed.

Reads the ``outcomes`` topic (labels joined to predictions by the feedback agent), keeps
the latest label of each request whose event lies in the window, joins them
point-in-time to the offline store, trains a candidate, registers it and starts it in
shadow through the lifecycle command path. The rollout controller can take it on from
there once a canary is started.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from headrace.kafka_io import read_topic
from headrace.lifecycle_commands import LifecycleCommands
from models.lifecycle import ModelEvent
from models.retraining import latest_labels, training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from tables.offline_store import ParquetOfflineStore
from tables.point_in_time import build_training_set


class RetrainError(RuntimeError):
    """Not enough data to train a candidate."""


@dataclass(frozen=True)
class RetrainResult:
    rows: int
    registered: ModelEvent
    shadow: ModelEvent


async def retrain(  # noqa: PLR0913 - the context, then keyword-only knobs
    settings: Settings,
    commands: LifecycleCommands,
    *,
    window_ms: int | None,
    shadow_fraction: float,
    since_ms: int | None = None,
    min_rows: int,
    now_ms: int,
    config: TrainingConfig | None = None,
) -> RetrainResult:
    spec = load_spec(settings.spec_path)
    if spec.features is None:
        raise RetrainError(f"domain {spec.name!r} declares no [features]")
    records = await read_topic(settings.bootstrap_servers, settings.topics.outcomes)
    outcomes = [orjson.loads(r.value) for r in records]
    window_start = None if window_ms is None else now_ms - window_ms
    starts = [t for t in (since_ms, window_start) if t is not None]
    since = max(starts) if starts else None
    labels = latest_labels(outcomes, since_ms=since)
    store = ParquetOfflineStore(
        settings.offline_location, storage_options=settings.offline_storage_options()
    )
    joined = build_training_set(store, labels, feature_version=spec.features.version)
    data = training_set(joined, spec.features.names, spec.features.version)
    if len(data.labels) < min_rows or len(set(data.labels.tolist())) < 2:
        raise RetrainError(
            f"{len(data.labels)} labelled rows with features in the window "
            f"({len(labels)} labels); need {min_rows} of both classes"
        )
    with tempfile.TemporaryDirectory(prefix="headrace-retrain-") as scratch:
        directory = Path(scratch) / "candidate"
        train_model(data, directory, config or TrainingConfig(members=3, epochs=4))
        registered = await commands.register(
            directory, reason=f"retrained on {len(data.labels)} rows"
        )
    shadow = await commands.shadow(
        registered.version, fraction=shadow_fraction, reason="retrained candidate"
    )
    return RetrainResult(len(data.labels), registered, shadow)
