"""The pure parts of ``headrace bench demo``: reading /proc, naming processes, the sums."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.demo_cost import TICKS, per_payment, role_of
from bench.e2e_stats import CpuTimes, cpu_times


def test_cpu_times_are_read_after_the_command_name_whatever_it_holds() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    stat = "4242 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 " + f"{TICKS * 3} {TICKS} {TICKS * 2} 0 20 0"
    assert cpu_times(stat, TICKS) == CpuTimes(user_s=3.0, system_s=1.0, children_s=2.0)


def test_this_process_reads_its_own_stat() -> None:
    times = cpu_times(Path(f"/proc/{os.getpid()}/stat").read_text(), TICKS)
    assert times.user_s + times.system_s > 0


@pytest.mark.parametrize(
    ("pid", "cmdline", "environ", "role"),
    [
        (10, "java kafka.Kafka server.properties", b"", "kafka"),
        (11, "python -m headrace worker -l info", b"HEADRACE_APP_ID=headrace-demo-17\0", "worker"),
        (12, "python -m headrace worker -l info", b"HEADRACE_APP_ID=headrace-other\0", None),
        (13, "python -m headrace model retrain", b"HEADRACE_APP_ID=headrace-demo-17\0", None),
        (14, "bash", b"", None),
    ],
)
def test_a_process_is_named_by_its_pid_or_its_run(
    pid: int, cmdline: str, environ: bytes, role: str | None
) -> None:
    assert role_of(pid, cmdline, environ, {10: "kafka"}) == role


def test_cpu_per_payment_is_the_difference_over_the_payments() -> None:
    start = {"worker": CpuTimes(10.0, 1.0, 0.0)}
    end = {"worker": CpuTimes(12.0, 1.5, 3.0), "kafka": CpuTimes(1.0, 0.5, 0.0)}
    table = per_payment(start, end, 1_000)
    assert table == {
        "kafka": {"user_us": 1_000, "system_us": 500, "children_us": 0},
        "worker": {"user_us": 2_000, "system_us": 500, "children_us": 3_000},
    }
