"""The README's first command, end to end: ``headrace demo`` on the test session's servers.

The demo must account for every event, see the concept drift through the error detector,
retrain a candidate on its own, and finish the rollout (promoted or rolled back) within
the run; its summary must carry the figures the README promises. Ctrl-C stops it and its
worker, with no traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _processes_with(variable: str) -> list[int]:
    """The pids whose environment holds ``variable`` (``NAME=value``)."""
    wanted = variable.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def _terminal_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A shell that starts a job in the
    background (``cmd &`` in a script, as CI runners do) sets SIGINT to ignored, and a
    Python started so never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(300)
def test_ctrl_c_stops_the_demo_and_its_worker(infrastructure: list[infra.ServiceStatus]) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "headrace", "demo", "--count", "20000"],
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_terminal_sigint,  # noqa: PLW1509 - only a signal disposition is set
    )
    assert demo.stdout is not None
    seen: list[str] = []
    app_id = None
    try:
        for line in demo.stdout:
            seen.append(line)
            if found := re.search(r"log: .*/(headrace-demo-\d+)/worker\.log", line):
                app_id = found.group(1)
            if line.startswith("streaming"):
                break
        assert app_id is not None, "".join(seen)
        assert _processes_with(f"HEADRACE_APP_ID={app_id}"), "no worker running for the demo"
        time.sleep(5)  # the stream is under way
        demo.send_signal(signal.SIGINT)
        try:
            rest, _ = demo.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            demo.send_signal(signal.SIGABRT)  # faulthandler prints where every thread is
            rest, _ = demo.communicate(timeout=30)
            out = "".join(seen) + rest
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "demo-interrupted.log").write_text(out)
            pytest.fail("the demo had not stopped 120 s after Ctrl-C:\n" + out[-6_000:])
        left = _processes_with(f"HEADRACE_APP_ID={app_id}")  # before any clean-up here
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
        for pid in _processes_with(f"HEADRACE_APP_ID={app_id}") if app_id else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    out = "".join(seen) + rest
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "demo-interrupted.log").write_text(out)
    assert demo.returncode == 130, out[-4_000:]
    assert "interrupted: stopping the worker" in out
    assert "Traceback" not in out, out[-4_000:]
    assert left == [], "the demo's worker outlived it"
    # The servers were running before the demo, so the demo leaves them running.
    assert all(service.running for service in infra.status(infra.default_state_dir()))
