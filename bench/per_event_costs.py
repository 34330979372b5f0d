"""Three small costs a worker pays for every event, each the old way and the new way.

    python -m bench.per_event_costs [--events 2000] [--rounds 5]

* ``feature_hash``: the prediction cache's key of each scored row, one row at a time
  (``feature_hash``) against a batch of 128 together (``feature_hashes``), over the
  feature rows of synthetic payments (about half of them hold a ``None``);
* ``partition``: aiokafka's ``DefaultPartitioner`` (murmur2 in Python) against
  ``streams.partitioner.CachedPartitioner``, over the payments' keys, two keyed sends an
  event (the features record and the prediction; the tables' changelog records name
  their partition and are not partitioned by key);
* ``monitor``: faust's ``Monitor`` against ``streams.lean_monitor.LeanMonitor``, called as
  faust calls it for every event (the message in and out, the stream's event in and out).
  The worker's own records go to the producer directly, which calls no sensor, and table
  reads mostly hit the worker's read cache, so neither is counted.

Each figure is CPU microseconds per event in this process, the median of ``--rounds``;
one JSON line. No broker is needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.sensors.monitor import Monitor
from faust.types import TP

from bench.e2e import payments
from models.cache import feature_hash, feature_hashes
from streams.codecs import encode_features
from streams.envelope import Accepted, SourcePosition
from streams.lean_monitor import LeanMonitor
from streams.partitioner import CachedPartitioner
from streams.pipeline import ValidationPipeline
from streams.settings import Settings
from streams.spec import load_spec

PARTITIONS = list(range(12))
KEYED_SENDS_PER_EVENT = 2  # the features record and the prediction
BATCH = 128
TP0 = TP("events.raw", 0)


def _median_us(action: Callable[[], object], events: int, rounds: int) -> float:
    """CPU microseconds per event of ``action`` (which handles ``events`` events)."""
    action()  # warm: caches filled, code paths taken once
    times = []
    for _ in range(rounds):
        began = time.process_time()
        action()
        times.append((time.process_time() - began) / events * 1e6)
    return round(statistics.median(times), 2)


def feature_rows(spec_path: Path, events: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The feature rows and keys of ``events`` synthetic payments, as the worker makes them."""
    pipeline = ValidationPipeline(load_spec(spec_path), {}, {})
    rows, keys = [], []
    for offset, payment in enumerate(payments(events, seed=71)):
        outcome = pipeline.process(payment.value, 0, offset)
        if isinstance(outcome, Accepted) and outcome.features is not None:
            record = orjson.loads(encode_features(outcome, SourcePosition("t", 0, offset)))
            rows.append(record["features"])
            keys.append(payment.key)
    return rows, keys


class _Task:
    pass


class _Stream:
    def __init__(self) -> None:
        self.task_owner = _Task()


class _Message:
    time_in = time_out = time_total = None


def _monitor_calls(monitor: Monitor, events: int) -> Callable[[], None]:
    stream, message = _Stream(), _Message()

    def calls() -> None:
        for offset in range(events):
            monitor.on_message_in(TP0, offset, message)  # type: ignore[arg-type]
            state = monitor.on_stream_event_in(TP0, offset, stream, None)  # type: ignore[arg-type]
            monitor.on_stream_event_out(TP0, offset, stream, None, state)  # type: ignore[arg-type]
            monitor.on_message_out(TP0, offset, message)  # type: ignore[arg-type]

    return calls


def measure(events: int, rounds: int) -> dict[str, Any]:
    rows, keys = feature_rows(Settings.from_env().spec_path, events)
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    default, cached = DefaultPartitioner(), CachedPartitioner()

    def partition_with(partitioner: Callable[..., int]) -> Callable[[], None]:
        def sends() -> None:
            for key in keys:
                for _ in range(KEYED_SENDS_PER_EVENT):
                    partitioner(key, PARTITIONS, PARTITIONS)

        return sends

    figures = {
        "feature_hash_row_us": _median_us(
            lambda: [feature_hash(row) for row in rows], len(rows), rounds
        ),
        "feature_hash_batch_us": _median_us(
            lambda: [feature_hashes(batch) for batch in batches], len(rows), rounds
        ),
        "partition_default_us": _median_us(partition_with(default), len(keys), rounds),
        "partition_cached_us": _median_us(partition_with(cached), len(keys), rounds),
        "monitor_faust_us": _median_us(_monitor_calls(Monitor(), events), events, rounds),
        "monitor_lean_us": _median_us(_monitor_calls(LeanMonitor(), events), events, rounds),
    }
    saved = (
        figures["feature_hash_row_us"]
        - figures["feature_hash_batch_us"]
        + figures["partition_default_us"]
        - figures["partition_cached_us"]
        + figures["monitor_faust_us"]
        - figures["monitor_lean_us"]
    )
    return {
        "events": len(rows),
        "distinct_keys": len(set(keys)),
        "rounds": rounds,
        **figures,
        "saved_us_per_event": round(saved, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.per_event_costs", description=__doc__)
    parser.add_argument("--events", type=int, default=2_000, help="synthetic payments")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are reported")
    args = parser.parse_args(argv)
    if args.events < BATCH:
        parser.error(f"--events must be at least {BATCH}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(json.dumps(measure(args.events, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
