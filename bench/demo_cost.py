"""Where the demo's machine goes: CPU per payment by process, messages per payment by topic.

``headrace bench demo --json`` runs ``headrace demo --count N`` as a child process (its
output goes to stderr) and reads, at the moment the stream starts and when it has been
produced, the CPU time (user and system, from ``/proc/<pid>/stat``) of every process the
run keeps busy: the demo itself (producer, labeller, watcher), its worker (with the
retrainings the worker waited for, its children's time), Kafka, Redis and the S3
endpoint. The differences over the payments produced give CPU microseconds a payment.
After the run it counts each of the run's topics (end offsets summed over partitions,
changelogs included) over the same payments.

A payment costs every process on the machine something; on a machine with C cores the
demo cannot go faster than ``C / total CPU per payment``, whatever the pace asked for.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from bench.e2e_stats import CpuTimes, cpu_times
from headrace import infra
from streams.settings import Settings

TICKS = os.sysconf("SC_CLK_TCK")


def role_of(pid: int, cmdline: str, environ: bytes, known: Mapping[int, str]) -> str | None:
    """Which part of the run a process is: a server by its pid, the worker by its
    environment (``HEADRACE_APP_ID`` of a demo run) and command, else None."""
    if pid in known:
        return known[pid]
    if b"HEADRACE_APP_ID=headrace-demo-" in environ and " worker" in cmdline:
        return "worker"
    return None


def sample(known: Mapping[int, str]) -> dict[str, CpuTimes]:
    """The summed CPU times of every process with a role, by role."""
    found: dict[str, CpuTimes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            role = role_of(pid, cmdline, (entry / "environ").read_bytes(), known)
            if role is None:
                continue
            times = cpu_times((entry / "stat").read_text(), TICKS)
        except OSError:  # gone, or not ours to read
            continue
        before = found.get(role, CpuTimes(0.0, 0.0, 0.0))
        found[role] = CpuTimes(
            before.user_s + times.user_s,
            before.system_s + times.system_s,
            before.children_s + times.children_s,
        )
    return found


def per_payment(
    start: Mapping[str, CpuTimes], end: Mapping[str, CpuTimes], payments: int
) -> dict[str, dict[str, int]]:
    """CPU microseconds a payment by role: user, system, and children (retrainings)."""
    table = {}
    for role, after in sorted(end.items()):
        before = start.get(role, CpuTimes(0.0, 0.0, 0.0))
        table[role] = {
            "user_us": round((after.user_s - before.user_s) / payments * 1e6),
            "system_us": round((after.system_s - before.system_s) / payments * 1e6),
            "children_us": round((after.children_s - before.children_s) / payments * 1e6),
        }
    return table


async def topic_counts(bootstrap_servers: str, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Messages in each topic whose name starts with one of ``prefixes``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefixes)]
        described = await admin.describe_topics(names)
        partitions = [
            TopicPartition(topic["topic"], part["partition"])
            for topic in described
            for part in topic["partitions"]
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    counts: dict[str, int] = {}
    for partition, end in ends.items():
        counts[partition.topic] = counts.get(partition.topic, 0) + end
    return counts


def demo_figures(count: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the demo and measure it (module doc)."""
    state_dir = infra.default_state_dir()
    infra.up(state_dir)
    known = {s.pid: s.name for s in infra.status(state_dir) if s.pid is not None}
    demo = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "headrace", "demo", "--count", str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if demo.stdout is None:  # pragma: no cover - asked for with stdout=PIPE
        raise RuntimeError("no pipe from the demo")
    known = {**known, demo.pid: "demo"}
    start: dict[str, CpuTimes] | None = None
    end: dict[str, CpuTimes] | None = None
    output = []
    for line in demo.stdout:
        say(line.rstrip("\n"))
        output.append(line)
        if start is None and line.startswith("streaming"):
            start = sample(known)
        elif end is None and line.startswith("produced "):
            end = sample(known)
    code = demo.wait()
    text = "".join(output)
    produced = re.search(r"produced ([\d,]+) payments in (\d+) s", text)
    env_file = re.search(r"env \$\(cat (\S+)\)", text)
    if code != 0 or start is None or end is None or produced is None or env_file is None:
        raise RuntimeError(f"the demo did not finish (exit {code}): {text[-2_000:]}")
    payments = int(produced.group(1).replace(",", ""))
    lines = Path(env_file.group(1)).read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    settings = Settings.from_env({**os.environ, **env})
    # The run's topics (its prefix) and its tables' changelogs (its app id).
    prefixes = (env["HEADRACE_TOPIC_PREFIX"], f"{settings.app_id}-")
    counts = asyncio.run(topic_counts(settings.bootstrap_servers, prefixes))
    cpu = per_payment(start, end, payments)
    total = sum(sum(row.values()) for row in cpu.values())
    return {
        "payments": payments,
        "stream_s": int(produced.group(2)),
        "payments_per_s": round(payments / int(produced.group(2)), 1),
        "cpu_us_per_payment": cpu,
        "cpu_us_per_payment_total": total,
        "cores": os.cpu_count(),
        "ceiling_payments_per_s": round((os.cpu_count() or 1) / total * 1e6, 1),
        "messages_per_payment": {
            topic: round(n / payments, 3)
            for topic, n in sorted(counts.items(), key=lambda t: -t[1])
        },
        "messages_per_payment_total": round(sum(counts.values()) / payments, 3),
    }
