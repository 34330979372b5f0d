"""Training data: labelled events replayed through the serving feature code.

Features for training come from the same pipeline the worker runs (validation, upcasting,
the featurizer), so there is no training/serving skew: a model sees at training time
exactly the vector it will be served. The demo domain's labels come from a known rule, so
that what a model can learn is known too.

A replay starts from empty window state, which a running worker has long left behind: in
its first minutes every count, sum and distinct is still filling. ``warmup_ms`` replays
those events (they fill the windows) but keeps no rows for them. The synthetic stream is
dense (about 100 events a second), so a 60,000-event replay spans ten minutes and its 5 m
windows fill for the first half of it; with a time-ordered split, training would then see
mostly warm-up rows and the held-out none. :func:`shortest_window_ms` is the warm-up that
puts the shortest windows in steady state; the longer ones keep filling for as long as
any replay this dense lasts, which is drift that no warm-up removes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from streams.envelope import Accepted
from streams.pipeline import ValidationPipeline
from streams.spec import DomainSpec
from streams.synthetic import VALID, MixSpec, PaymentGenerator


@dataclass(frozen=True)
class TrainingSet:
    features: np.ndarray  # (n, n_features) float64, NaN where a feature is missing
    labels: np.ndarray  # (n,) int64
    names: tuple[str, ...]
    feature_version: str
    first_event_time: int
    last_event_time: int


def fraud_probability(values: Mapping[str, float | None]) -> float:
    """The demo domain's ground truth: the chance that a payment is fraud."""

    def get(name: str, default: float = 0.0) -> float:
        value = values.get(name)
        return default if value is None else float(value)

    score = -4.0
    score += 1.6 * (get("amount_over_mean_24h", 1.0) > 2.5)
    score += 1.1 * (get("channel_is_web") + get("channel_is_moto"))
    score += 2.2 * get("device_risk", 0.2)
    score += 0.9 * (get("country_distinct_24h", 1.0) >= 3)
    score += 0.6 * (get("amount_count_5m") >= 3)
    score -= 0.8 * get("card_present")
    return 1.0 / (1.0 + math.exp(-score))


def drifted_fraud_probability(values: Mapping[str, float | None]) -> float:
    """The demo domain's ground truth after its concept drift: a skimming ring makes most
    card-present payments fraud; the rest keep the rule of :func:`fraud_probability`.
    The inputs keep their distribution; only what they mean changes."""
    card_present = values.get("card_present")
    if not card_present:
        return fraud_probability(values)
    risk = values.get("device_risk")
    score = 1.2 + 1.5 * (0.2 if risk is None else float(risk))
    return 1.0 / (1.0 + math.exp(-score))


def shortest_window_ms(spec: DomainSpec) -> int:
    """The size of the domain's shortest feature window: a replay's natural warm-up."""
    if spec.features is None or not spec.features.windows:
        raise ValueError(f"domain {spec.name!r} declares no feature windows")
    return min(window.size_ms for window in spec.features.windows)


def replay_labelled(
    spec: DomainSpec,
    events: Iterable[tuple[bytes, int | None]],
    partitions: int = 4,
    *,
    warmup_ms: int = 0,
) -> TrainingSet:
    """Run raw events through the pipeline; an event with label None is labelled by rule.

    Rows whose event time is less than ``warmup_ms`` after the earliest accepted event are
    replayed and labelled but not kept, so the rows kept do not depend on ``warmup_ms``.
    """
    if warmup_ms < 0:
        raise ValueError(f"warmup_ms must be >= 0, got {warmup_ms}")
    features = spec.features
    if features is None:
        raise ValueError(f"domain {spec.name!r} declares no [features]")
    pipeline = ValidationPipeline(spec, {}, {})
    rows: list[list[float]] = []
    labels: list[int] = []
    times: list[int] = []
    rng = random.Random(0)
    for offset, (raw, label) in enumerate(events):
        outcome = pipeline.process(raw, offset % partitions, offset)
        if not isinstance(outcome, Accepted) or outcome.features is None:
            continue
        values = outcome.features.row.values
        rows.append([math.nan if values[n] is None else float(values[n]) for n in features.names])
        labels.append(label if label is not None else int(rng.random() < fraud_probability(values)))
        times.append(outcome.envelope.event_time)
    start = min(times, default=0)
    kept = [i for i, t in enumerate(times) if t - start >= warmup_ms]
    return TrainingSet(
        features=np.array([rows[i] for i in kept], dtype=np.float64).reshape(
            len(kept), len(features.names)
        ),
        labels=np.array([labels[i] for i in kept], dtype=np.int64),
        names=features.names,
        feature_version=features.version,
        first_event_time=min((times[i] for i in kept), default=0),
        last_event_time=max((times[i] for i in kept), default=0),
    )


def demo_training_set(
    spec: DomainSpec, count: int, seed: int, *, warmup_ms: int = 0
) -> TrainingSet:
    """Synthetic payments (valid ones only), labelled by the demo rule.

    ``count`` events are generated, warm-up included; see :func:`replay_labelled`.
    """
    mix = MixSpec(count=count, seed=seed, malformed_share=0.0, duplicate_share=0.0)
    generator = PaymentGenerator(mix)
    return replay_labelled(
        spec,
        ((m.value, None) for m in generator if m.expected == VALID),
        warmup_ms=warmup_ms,
    )
