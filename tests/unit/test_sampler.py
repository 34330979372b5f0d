"""The in-process stack sampler: where it charges CPU time, its folded format, its limits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from streams.sampler import (
    StackSampler,
    inclusive_shares,
    profile_seconds,
    self_shares,
    short_path,
)


def arithmetic(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i
    return total


def heavy() -> int:
    return arithmetic(600)


def light() -> int:
    return arithmetic(200)


def system_call() -> int:
    return os.getpid()


def share_of(folded: str, function: str) -> float:
    """The share of the samples whose stack passes through ``function`` of this module."""
    return sum(
        share for name, share in inclusive_shares(folded, top=1_000) if name.startswith(function)
    )


def timed(seconds: float, *calls: tuple[str, object]) -> dict[str, float]:
    """Call each function in turn until ``seconds`` of CPU time passed; each one's share of
    the CPU time, measured around its calls."""
    spent = dict.fromkeys((name for name, _ in calls), 0.0)
    ends = time.process_time() + seconds
    while time.process_time() < ends:
        for name, call in calls:
            began = time.process_time_ns()
            call()  # type: ignore[operator]
            spent[name] += time.process_time_ns() - began
    whole = sum(spent.values())
    return {name: value / whole for name, value in spent.items()}


def sampled(seconds: float, *calls: tuple[str, object]) -> tuple[StackSampler, dict[str, float]]:
    """:func:`timed` under a sampler (every millisecond of CPU time): the sampler, the shares."""
    sampler = StackSampler(interval_s=0.001)
    sampler.start()
    try:
        measured = timed(seconds, *calls)
    finally:
        sampler.stop()
    return sampler, measured


def test_shares_follow_the_cpu_time_each_function_takes() -> None:
    sampler, measured = sampled(2.0, ("heavy", heavy), ("light", light))
    folded = sampler.folded()
    assert sampler.samples >= 100
    for name in ("heavy", "light"):
        assert share_of(folded, f"{name} (") == pytest.approx(measured[name], abs=0.1), name


def test_a_cheap_system_call_is_not_where_the_time_is() -> None:
    """Stopping a process to read its stack lands at system calls on some machines; this
    sampler's samples come from the CPU clock, so a call that takes little time gets
    few of them. Beside ``heavy``, not ``light``: on a loaded machine the call's own share,
    timing included, came to 0.104 beside ``light`` (CI, 2026-12-08)."""
    sampler, measured = sampled(2.0, ("heavy", heavy), ("system_call", system_call))
    assert measured["system_call"] < 0.1
    assert share_of(sampler.folded(), "system_call (") < measured["system_call"] + 0.1


def test_folded_lines_name_frames_root_first_with_counts() -> None:
    sampler, _ = sampled(0.5, ("heavy", heavy))
    lines = sampler.folded().splitlines()
    assert lines
    counts = []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        counts.append(int(count))
        if frames[-1].startswith("arithmetic ("):
            assert frames[-2].startswith("heavy (tests/unit/test_sampler.py:")
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == sampler.samples


def test_stop_restores_the_previous_handler_and_disarms_the_timer() -> None:
    before = signal.getsignal(signal.SIGPROF)
    sampler = StackSampler()
    sampler.start()
    with pytest.raises(RuntimeError, match="already running"):
        sampler.start()
    sampler.stop()
    sampler.stop()  # a second stop does nothing
    assert signal.getsignal(signal.SIGPROF) == before
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_a_timed_profile_stops_by_itself() -> None:
    sampler = StackSampler(interval_s=0.001)
    sampler.start(seconds=0.3)
    timed(1.0, ("light", light))
    assert not sampler.running
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    taken = sampler.samples
    timed(0.2, ("light", light))
    assert sampler.samples == taken


def test_shares_of_folded_stacks() -> None:
    folded = "main;a;b 6\nmain;a 2\nmain;c;b 2\nnot a line\n"
    assert self_shares(folded) == [("b", 0.8), ("a", 0.2)]
    assert dict(inclusive_shares(folded)) == {"main": 1.0, "a": 0.8, "b": 0.8, "c": 0.2}
    assert self_shares("") == []


@pytest.mark.parametrize("text", ["x", "", "0", "-1", "nan", "inf", "301"])
def test_a_bad_profile_length_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="seconds must be"):
        profile_seconds(text)


def test_profile_lengths() -> None:
    assert profile_seconds("2") == 2.0
    assert profile_seconds("0.5") == 0.5
    assert profile_seconds("300") == 300.0


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        StackSampler(interval_s=0)
    sampler = StackSampler()
    with pytest.raises(ValueError, match="seconds"):
        sampler.start(seconds=0)
    assert not sampler.running


def test_paths_are_cut_at_their_import_root() -> None:
    assert short_path(str(Path(__file__).resolve())).endswith("tests/unit/test_sampler.py")
    assert short_path("/nowhere/file.py") == "/nowhere/file.py"
