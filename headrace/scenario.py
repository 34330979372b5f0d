"""Run a stream of messages through a real worker and collect what comes out.

Shared by the integration tests, ``headrace bench validate`` and ``headrace demo``: the
worker is a child process with its own topics and consumer group; the producer and the
collector are plain aiokafka clients.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from headrace.kafka_io import Record, collect, ensure_topics, produce
from headrace.worker_process import WorkerProcess
from streams.settings import Settings

PROBE = b'{"probe": "readiness"}'


@dataclass(frozen=True)
class Outputs:
    valid: list[Record]  # on the features topic (or events.valid for a domain without features)
    rejected: list[Record]

    def rejected_by_reason(self) -> Counter[str]:
        return Counter(orjson.loads(r.value)["reason"] for r in self.rejected)

    @property
    def total(self) -> int:
        return len(self.valid) + len(self.rejected)


def settings_for(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


async def prepare_topics(settings: Settings) -> None:
    names = settings.topics
    await ensure_topics(
        settings.bootstrap_servers,
        [
            names.raw,
            names.valid,
            names.rejected,
            names.features,
            names.predictions,
            names.labels,
            names.outcomes,
            names.review_queue,
            names.drift_reports,
            names.alerts,
            names.explanations,
        ],
        settings.partitions,
    )


async def wait_until_serving(
    settings: Settings, worker: WorkerProcess, timeout_s: float = 120.0
) -> None:
    """Send one probe (it is rejected as bad_envelope) and wait for its dead letter."""
    await produce(settings.bootstrap_servers, settings.topics.raw, [(b"probe", PROBE)])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker.alive:
            raise RuntimeError(f"worker exited early:\n{worker.log_tail()}")
        records = await collect(
            settings.bootstrap_servers,
            [settings.topics.rejected],
            until=lambda got: any(r.key == b"probe" for r in got),
            timeout_s=5.0,
        )
        if any(r.key == b"probe" for r in records):
            return
    raise TimeoutError(f"worker did not serve within {timeout_s} s:\n{worker.log_tail()}")


async def collect_outputs(
    settings: Settings,
    expected_total: int,
    timeout_s: float,
    *,
    idle_s: float | None = None,
) -> Outputs:
    names = settings.topics
    records = await collect(
        settings.bootstrap_servers,
        [names.valid, names.features, names.rejected],
        until=lambda got: sum(r.key != b"probe" for r in got) >= expected_total,
        timeout_s=timeout_s,
        idle_s=idle_s,
    )
    return Outputs(
        valid=[r for r in records if r.topic in {names.valid, names.features}],
        rejected=[r for r in records if r.topic == names.rejected and r.key != b"probe"],
    )


def start_worker(
    env: dict[str, str], log_dir: Path, name: str = "worker", *, with_web: bool = False
) -> WorkerProcess:
    """A worker child process; ``with_web`` serves /metrics and /dashboard/ on its web port."""
    worker = WorkerProcess(env=env, log_path=log_dir / f"{name}.log", with_web=with_web)
    worker.start()
    return worker


async def produce_messages_with_progress(
    settings: Settings,
    messages: Sequence[tuple[bytes | None, bytes]],
    rate: float | None,
    advance: Callable[[int], None],
) -> float:
    done = 0

    def progress(sent: int) -> None:
        nonlocal done
        advance(sent - done)
        done = sent

    report = await produce(
        settings.bootstrap_servers,
        settings.topics.raw,
        messages,
        rate=rate,
        on_progress=progress,
    )
    advance(report.sent - done)
    return report.seconds


async def produce_messages(
    settings: Settings,
    messages: Sequence[tuple[bytes | None, bytes]],
    rate: float | None = None,
) -> float:
    report = await produce(settings.bootstrap_servers, settings.topics.raw, messages, rate=rate)
    return report.seconds
