"""Fault and scale tests: the integration fixtures (a trained model, workers that score
among them) and a first worker under load.

``make test`` (and CI) runs them after the unit and integration tests; ``make test-faults``
(``pytest tests/faults``) runs them alone, about 25 minutes with the 15-minute soak. Each
test writes its figures to ``test-artifacts/faults/<test>.json``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from headrace import scenario
from headrace.kafka_io import ProduceReport, produce
from headrace.worker_process import WorkerProcess
from streams.synthetic import MixSpec, PaymentGenerator, SyntheticMessage
from tests.faults.ledger import FAULT_TEST_TIMEOUT_S, Expected, Follower, healthy
from tests.integration.conftest import IsolatedRun, infrastructure, isolated, model_dir, scoring

__all__ = ["infrastructure", "isolated", "model_dir", "scoring"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A fault test without a limit of its own gets ``FAULT_TEST_TIMEOUT_S``: longer than
    its waits, so a failing wait says what was missing before pytest-timeout stops it."""
    for item in items:
        if "tests/faults/" in item.nodeid and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAULT_TEST_TIMEOUT_S))


@dataclass(frozen=True, slots=True)
class UnderLoad:
    """A first worker, serving, and the synthetic events to offer it; ``started`` is the
    monotonic time it began serving."""

    run: IsolatedRun
    messages: list[SyntheticMessage]
    expected: Expected
    first: WorkerProcess
    started: float

    async def offer_until_outputs(
        self, follower: Follower, *, rate: float, outputs: int
    ) -> asyncio.Task[ProduceReport]:
        """Start sending the events at ``rate`` per second and wait, while the first worker
        stays healthy, until ``outputs`` have come out; the sending task, still running."""
        settings = self.run.settings
        sending = asyncio.create_task(
            produce(
                settings.bootstrap_servers,
                settings.topics.raw,
                [(m.key, m.value) for m in self.messages],
                rate=rate,
            ),
        )
        await follower.until(
            lambda ledger: ledger.outputs >= outputs,
            timeout_s=300,
            alive=healthy(self.first),
            what=f"{outputs} outputs",
        )
        return sending


def start_under_load(run: IsolatedRun, *, events: int, seed: int) -> UnderLoad:
    """Generate ``events`` payments, prepare the topics and start ``worker-1``, waiting
    until it serves."""
    messages = list(PaymentGenerator(MixSpec(count=events, seed=seed)))
    expected = Expected.of(messages)
    asyncio.run(scenario.prepare_topics(run.settings))
    first = run.start_worker("worker-1")
    asyncio.run(scenario.wait_until_serving(run.settings, first))
    return UnderLoad(run, messages, expected, first, started=time.monotonic())


def start_another_worker(run: IsolatedRun, name: str) -> WorkerProcess:
    """A further worker of the same app (same topics and group) with its own state directory:
    two workers on one machine must not share RocksDB files."""
    env = {**run.env, "HEADRACE_DATA_DIR": str(Path(run.env["HEADRACE_DATA_DIR"]) / name)}
    worker = WorkerProcess(env=env, log_path=run.log_dir / f"{name}.log")
    worker.start()
    run.workers.append(worker)
    return worker
