"""The tail of one worker's end-to-end latency at one paced rate, and where it comes from.

    python -m bench.latency [--rate 1000] [--seconds 30] [--model-dir DIR] [--json]

The latency phase of ``headrace bench e2e`` (a fresh one-hop worker, ready and settled,
offered payments at a paced rate; latency = the prediction's Kafka timestamp minus the
moment the payment was handed to the producer; the first 3 s left out) at one rate, for
longer, with more of the tail: p99.9, the maximum, and the slowest latency of each 250 ms
of sends. A stall that recurs every few seconds shows there as a regular train of slow
intervals (the offline writer's flush every 5 s did). One JSON line with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import e2e
from bench.e2e_stats import latency_summary, slowest_by_interval
from headrace import infra
from models.artifact import METADATA_FILE
from streams.settings import Settings

INTERVAL_MS = 250
SLOW_MS = 80  # an interval whose slowest send took longer is counted as slow


def figures_of(paced: e2e.PacedRound) -> dict[str, Any]:
    """The round's latency figures (created time), its slow intervals and the slowest ten."""
    window = {"from_ms": paced.window[0], "to_ms": paced.window[1]}
    summary = latency_summary(paced.sent_ms, paced.created_ms, **window)
    intervals = slowest_by_interval(
        paced.sent_ms, paced.created_ms, **window, interval_ms=INTERVAL_MS
    )
    slow = [(start, worst) for start, worst in intervals if worst > SLOW_MS]
    return {
        "rate": paced.rate,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "p999_ms": summary.p999_ms,
        "max_ms": summary.max_ms,
        "achieved_events_per_s": summary.achieved_per_s,
        "delivered_fraction": round(summary.delivered_fraction, 4),
        "intervals": len(intervals),
        f"intervals_over_{SLOW_MS}_ms": len(slow),
        "slowest_intervals_s_ms": [
            [start / 1000, worst] for start, worst in sorted(slow, key=lambda item: -item[1])[:10]
        ],
    }


def measure(rate: int, seconds: float, model_dir: Path | None) -> dict[str, Any]:
    settings = Settings.from_env()
    infra.up(infra.default_state_dir())  # idempotent: reuses what runs
    try:
        with tempfile.TemporaryDirectory(prefix="headrace-bench-latency-") as scratch_name:
            scratch = Path(scratch_name)
            model = model_dir or scratch / "model"
            if not (model / METADATA_FILE).exists():
                e2e.say("training the model")
                e2e.train(settings.spec_path, model)
            config = e2e.E2eConfig(rates=(rate,), paced_s=seconds)
            stream = e2e.payments(int(rate * seconds), seed=72)
            (paced,) = e2e.paced_rounds(config, scratch, model, stream)
    finally:
        asyncio.run(e2e.delete_topics(settings.bootstrap_servers, e2e.RUN_MARKER))
    return {**figures_of(paced), "seconds": seconds, "event_loop": settings.event_loop}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--rate", type=int, default=1_000, help="payments offered per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they are offered")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a model trained once and reused (trained here if missing)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.rate < 1:
        parser.error("--rate must be at least 1")
    if args.seconds < 5:
        parser.error("--seconds must be at least 5 (the first 3 s are left out)")
    figures = measure(args.rate, args.seconds, args.model_dir)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
