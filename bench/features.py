"""Benchmarks of the feature stage: pure aggregation speed and bounded state."""

from __future__ import annotations

import gc
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from streams.envelope import Envelope
from streams.spec import load_spec
from tables.entity_state import EntityState
from tables.feature_spec import FeatureSpec
from tables.featurizer import Featured, Featurizer

MERCHANTS = [f"m-{i:04d}" for i in range(500)]
COUNTRIES = ["DE", "FR", "GB", "US", "CH", "NL"]


START_MS = 1_767_225_600_000
BATCH = 256  # events between writes of the changed states, as the worker's batches


def synthetic_envelopes(
    count: int,
    entities: int,
    mean_gap_ms: int,
    seed: int,
    start_ms: int = START_MS,
) -> list[Envelope]:
    rng = random.Random(seed)
    clock = start_ms
    envelopes = []
    for index in range(count):
        clock += int(rng.expovariate(1.0 / mean_gap_ms))
        payload = {
            "amount": round(40.0 * rng.lognormvariate(0.0, 1.0), 2),
            "currency": "EUR",
            "merchant_id": rng.choice(MERCHANTS),
            "mcc": 5411,
            "country": rng.choice(COUNTRIES),
            "channel": "web",
            "card_present": False,
            "hour_of_day": (clock // 3_600_000) % 24,
        }
        entity = f"card-{rng.randrange(entities):05d}"
        envelopes.append(Envelope(f"ev-{index}", "payment", 3, entity, clock, payload))
    return envelopes


def _spec(spec_path: Path) -> FeatureSpec:
    features = load_spec(spec_path).features
    if features is None:
        raise ValueError(f"{spec_path} declares no [features]")
    return features


def updates_per_s(spec_path: Path, count: int = 100_000, repeats: int = 3) -> dict[str, float]:
    """Events folded into windows per second, pure logic on one core (median of repeats)."""
    spec = _spec(spec_path)
    envelopes = synthetic_envelopes(count, entities=10_000, mean_gap_ms=20, seed=5)
    rates = []
    for _ in range(repeats):
        featurizer = Featurizer(spec, {})
        process, flush = featurizer.process, featurizer.flush
        started = time.perf_counter()
        for offset, envelope in enumerate(envelopes):
            process(envelope, 0, offset)
            if offset % BATCH == BATCH - 1:
                flush(0)
        flush(0)
        rates.append(count / (time.perf_counter() - started))
    pairs = sum(len(a.windows) for a in spec.aggregates)
    rate = statistics.median(rates)
    return {
        "updates_per_s": round(rate),
        "window_aggregate_updates_per_s": round(rate * pairs),
        "features_per_vector": len(spec.names),
    }


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def state_rss_growth(
    spec_path: Path,
    events: int = 1_000_000,
    entities: int = 10_000,
    mean_gap_ms: int = 600,
) -> dict[str, float]:
    """RSS growth of a featurizer process from 200k to ``events`` events, expiry on.

    Event times advance ``mean_gap_ms`` on average: 200k events span 33 hours, so by the
    first measurement every window, the 24-hour one included, has filled and rolled over;
    from there on state must stay flat while 800k more events go through expiry.
    Events are generated in chunks so that the input itself does not grow the process.
    """
    spec = _spec(spec_path)
    states: dict[str, EntityState] = {}
    featurizer = Featurizer(spec, states)
    checkpoint = events // 5
    rss_at_checkpoint = 0
    chunk = 50_000
    offset = 0
    clock = START_MS
    while offset < events:
        batch = synthetic_envelopes(chunk, entities, mean_gap_ms, seed=offset, start_ms=clock)
        for envelope in batch:
            result = featurizer.process(envelope, 0, offset)
            if not isinstance(result, Featured):
                raise TypeError(f"a benchmark event was late: {result}")
            offset += 1
            if offset % BATCH == 0:
                featurizer.flush(0)
        clock = batch[-1].event_time
        del batch
        if offset == checkpoint:
            gc.collect()
            rss_at_checkpoint = _rss_bytes()
    gc.collect()
    rss_end = _rss_bytes()
    return {
        "state_rss_growth_pct": round(100.0 * (rss_end - rss_at_checkpoint) / rss_at_checkpoint, 2),
        "state_rss_mb_at_200k": round(rss_at_checkpoint / 2**20, 1),
        "state_rss_mb_at_1m": round(rss_end / 2**20, 1),
        "state_entities_live": len(states),
        "state_entities_expired": featurizer.expired_entities,
    }


def state_rss_growth_isolated(spec_path: Path, events: int = 1_000_000) -> dict[str, float]:
    """:func:`state_rss_growth` in a fresh interpreter, so that nothing else this process
    has allocated (the other benchmarks, imported libraries) moves its RSS."""
    code = (
        "import json, sys; from pathlib import Path; from bench.features import state_rss_growth; "
        "print(json.dumps(state_rss_growth(Path(sys.argv[1]), events=int(sys.argv[2]))))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", code, str(spec_path), str(events)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures
