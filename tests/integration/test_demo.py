"""The README's first command, end to end: ``headrace demo`` on the test session's servers.

The demo must account for every event, see the concept drift through the error detector,
retrain a candidate on its own, and finish the rollout (promoted or rolled back) within
the run; its summary must carry the figures the README promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from headrace import infra
from tests.integration.conftest import ARTIFACTS

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_the_demo_detects_the_drift_retrains_and_finishes_the_rollout(
    infrastructure: list[infra.ServiceStatus],
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "headrace", "demo", "--count", "24000"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "demo.log").write_text(completed.stdout + completed.stderr)
    out = completed.stdout
    assert completed.returncode == 0, out[-4_000:] + completed.stderr[-4_000:]
    assert "every event accounted for" in out
    assert "model.error adwin" in out  # the concept drift, seen in the labelled errors
    assert re.search(r"registered\s+\w+\s+retrained on \d+ rows", out), out[-4_000:]
    assert "shadow_started" in out
    assert re.search(r"replaced \w+ as champion|was rolled back", out), out[-4_000:]
    assert re.search(r"end-to-end latency .*: p50 \d+ ms, p99 \d+ ms", out)
    assert "dashboard: http://127.0.0.1:" in out
