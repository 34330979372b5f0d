"""One drain for an A/B comparison: a fresh one-hop worker of this checkout drains the same
payments, pinned to one core, and one JSON line says how fast and at what CPU cost.

    python -m bench.ab_drain --label before [--events 20000] [--no-pin] [--offline-writer-process]
                             [--profile stacks.txt]

On a 2-core machine shared with the broker an unpinned drain of one build varies by about
20% from run to run; with the worker on core 1 and this process (producer and collector)
on core 0 by about 5%. Compare two builds (two checkouts, say ``git worktree add``) or two
settings (an environment variable) by alternating runs of this command and quoting the
medians (BENCHMARKS.md). Every run uses its own topics and consumer group and the same
payments (seed 71), and deletes its topics at the end: partitions left behind slow a single
broker down for the runs after. The worker's settings come from the environment, as a
worker's do (``HEADRACE_OFFLINE_IN_WORKER=0``, ``HEADRACE_PRODUCER_LINGER_MS=20``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import e2e
from headrace import scenario
from headrace.worker_process import WorkerProcess
from models.artifact import METADATA_FILE
from streams.settings import Settings

WORKER_CORE = 1
BENCH_CORE = 0
_start_worker = scenario.start_worker


def pinned_start_worker(
    env: dict[str, str], log_dir: Path, name: str = "worker", *, with_web: bool = False
) -> WorkerProcess:
    """``scenario.start_worker``, then the worker's process on its own core."""
    worker = _start_worker(env, log_dir, name, with_web=with_web)
    if worker.process is not None:
        os.sched_setaffinity(worker.process.pid, {WORKER_CORE})
    return worker


def drain(
    events: int,
    *,
    pin: bool,
    model_dir: Path | None,
    offline_writer_process: bool = False,
    profile_path: Path | None = None,
) -> dict[str, Any]:
    """The worker's drain figures (``bench.e2e.throughput_phase``), topics deleted after."""
    settings = Settings.from_env()
    if pin:
        os.sched_setaffinity(0, {BENCH_CORE})
        scenario.start_worker = pinned_start_worker
    try:
        with tempfile.TemporaryDirectory(prefix="headrace-ab-drain-") as scratch_name:
            scratch = Path(scratch_name)
            model = model_dir or scratch / "model"
            if not (model / METADATA_FILE).exists():
                e2e.train(settings.spec_path, model)
            return e2e.throughput_phase(
                e2e.E2eConfig(
                    drain_events=events,
                    offline_writer_process=offline_writer_process,
                    profile_path=profile_path,
                ),
                scratch,
                model,
                e2e.payments(events, seed=71),
                downstream=False,
                baseline=False,
                one_hop=True,
            )
    finally:
        scenario.start_worker = _start_worker
        asyncio.run(e2e.delete_topics(settings.bootstrap_servers, e2e.RUN_MARKER))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_drain", description=__doc__)
    parser.add_argument("--label", required=True, help="names the build or setting in the line")
    parser.add_argument("--events", type=int, default=20_000, help="payments drained")
    parser.add_argument("--no-pin", action="store_true", help="leave the cores to the scheduler")
    parser.add_argument(
        "--offline-writer-process",
        action="store_true",
        help="the offline store written by `headrace offline-writer` beside the worker "
        "(on the other core when pinned), not by the worker's agent",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a model trained once and reused by every run (trained here if missing)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write the worker's stacks here, sampled by CPU time for 20 s of the drain, folded",
    )
    args = parser.parse_args(argv)
    if args.events < 1_000:
        parser.error("--events must be at least 1000")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        parser.error("pinning needs two cores; pass --no-pin")
    figures = drain(
        args.events,
        pin=not args.no_pin,
        model_dir=args.model_dir,
        offline_writer_process=args.offline_writer_process,
        profile_path=args.profile,
    )
    loop = Settings.from_env().event_loop  # the worker's (HEADRACE_EVENT_LOOP)
    print(
        json.dumps({"label": args.label, "pinned": not args.no_pin, "event_loop": loop, **figures})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
