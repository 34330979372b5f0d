"""Bad command-line input: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("produce", "--malformed", "2"), None, "--malformed must be between 0 and 1"),
        (("produce", "--count", "-5"), None, "--count"),
        (("produce", "--file", "/no/such/file.jsonl"), None, "does not exist"),
        (("produce", "--malformed", "0.7", "--duplicates", "0.5"), None, "add up to more than 1"),
        (("bench", "validate", "--count", "10"), None, "--count"),
        (("bench", "e2e", "--drain-events", "10"), None, "--drain-events"),
        (("no-such-command",), None, "No such command"),
        (("infra", "sideways"), None, "No such command"),
        (("offline-writer", "--batch-rows", "0"), None, "--batch-rows"),
        (("offline-writer", "--within-s", "soon"), None, "--within-s"),
        (("offline-writer",), {"HEADRACE_OFFLINE_IN_WORKER": "yes"}, "HEADRACE_OFFLINE_IN_WORKER"),
        (("produce",), {"HEADRACE_PARTITIONS": "many"}, "HEADRACE_PARTITIONS must be an integer"),
        (("worker",), {"HEADRACE_EVENT_LOOP": "trio"}, "HEADRACE_EVENT_LOOP must be one of"),
        (("produce",), {"HEADRACE_SPEC": "/no/such/spec.toml"}, "cannot read domain spec"),
    ],
)
def test_bad_arguments_give_one_line(
    args: tuple[str, ...], env: dict[str, str] | None, fragment: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2  # a usage error, as click exits for one
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("headrace: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_help_lists_faust_and_project_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("worker", "infra", "produce", "bench", "demo", "offline-writer"):
        assert command in result.stdout
