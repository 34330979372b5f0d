"""``headrace bench e2e --json`` as a user runs it, cut short: the figures the issue asks for
come out as the last line, every payment is drained by both the worker and the baseline,
and ``--profile`` writes the draining worker's stacks. A bad argument is checked with the
others in ``tests/unit/test_cli.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from headrace import infra

pytestmark = pytest.mark.integration

DRAINED = 5_000


def headrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_the_figures_come_out_as_one_json_line(
    infrastructure: list[infra.ServiceStatus], tmp_path: Path
) -> None:
    stacks = tmp_path / "stacks.txt"
    done = headrace(
        "bench",
        "e2e",
        "--json",
        "--drain-events",
        str(DRAINED),
        "--paced-s",
        "5",
        "--profile",
        str(stacks),
    )
    assert done.returncode == 0, done.stderr[-3_000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["worker_drain_predictions"] == DRAINED
    assert figures["baseline_predictions"] == DRAINED
    assert figures["max_events_per_s"] > 0
    assert figures["baseline_events_per_s"] > 0
    before, after = figures["baseline_runs_events_per_s"]  # either side of the worker's
    assert figures["baseline_events_per_s"] == round((before + after) / 2)
    assert figures["ratio_to_baseline"] == round(
        figures["max_events_per_s"] / figures["baseline_events_per_s"], 3
    )
    for rate in (1_000, 5_000):
        assert 0 < figures[f"p50_ms_at_{rate}"] <= figures[f"p99_ms_at_{rate}"]
        assert figures[f"achieved_events_per_s_at_{rate}"] > 0
    assert figures["delivered_fraction_at_1000"] > 0.9  # a worker keeps up with 1,000/s
    folded = stacks.read_text()
    assert "ingest (agents/ingest.py:" in folded
    assert all(line.rpartition(" ")[2].isdigit() for line in folded.splitlines())
    print(
        f"bench e2e: {figures['max_events_per_s']}/s against "
        f"{figures['baseline_events_per_s']}/s, ratio {figures['ratio_to_baseline']}"
    )
