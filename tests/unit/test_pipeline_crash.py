"""A worker killed at any point of a batch decides every message the same way after it
restarts.

The worker processes a partition in batches; at the end of each it flushes what the batch
changed to its changelogged tables (``ValidationPipeline.flush``, then the outlier-screen
checkpoint), and the batch's offsets are committed later, after the producer has flushed.
A kill keeps a prefix of the writes (the producer sends them in order) that holds at
least everything up to the last committed batch; the restarted worker rebuilds its memory
from that prefix and reads again from the committed offset. Every message read again
must then get the outcome the generator meant for it: a prediction for a valid event,
the expected reason for a rejected one, whatever part of the last batches reached the
tables.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.envelope import Accepted
from streams.pipeline import ValidationPipeline
from streams.spec import DomainSpec
from streams.synthetic import VALID, MixSpec, PaymentGenerator, SyntheticMessage

BATCH = 64
PARTITION = 0


@dataclass
class Journal:
    """The writes of every store, in the order the worker made them."""

    writes: list[tuple[str, str, Any]] = field(default_factory=list)

    def replay(self, upto: int) -> dict[str, dict[str, Any]]:
        """The stores as a restarted worker recovers them from the first ``upto`` writes."""
        stores: dict[str, dict[str, Any]] = {"seen": {}, "states": {}, "screens": {}}
        for store, key, value in self.writes[:upto]:
            if value is None:
                stores[store].pop(key, None)
            else:
                stores[store][key] = copy.deepcopy(value)
        return stores


class JournaledStore(MutableMapping[str, Any]):
    """A dict whose every write is also appended to a journal (a changelog)."""

    def __init__(self, name: str, journal: Journal, data: dict[str, Any]) -> None:
        self.name, self.journal, self.data = name, journal, data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.journal.writes.append((self.name, key, copy.deepcopy(value)))

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.journal.writes.append((self.name, key, None))

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class Worker:
    """The ingest agent's order of work over one partition, on journaled stores."""

    spec: DomainSpec
    journal: Journal
    stores: dict[str, dict[str, Any]]
    batch_ends: list[int] = field(default_factory=list)  # journal length after each batch
    event_ends: dict[int, int] = field(default_factory=dict)  # offset -> journal length

    def __post_init__(self) -> None:
        seen = JournaledStore("seen", self.journal, self.stores["seen"])
        states = JournaledStore("states", self.journal, self.stores["states"])
        self.screens = JournaledStore("screens", self.journal, self.stores["screens"])
        self.pipeline = ValidationPipeline(self.spec, seen, states)
        self.pipeline.rebuild(
            self.stores["seen"].items(),
            self.stores["screens"].items(),
            self.stores["states"].items(),
        )

    def run(self, messages: list[SyntheticMessage], start: int, end: int) -> dict[int, str]:
        """Process the messages from offset ``start`` to the end of the batch holding
        ``end``; each offset's outcome."""
        outcomes: dict[int, str] = {}
        for first in range(start, min(end, len(messages)), BATCH):
            for offset in range(first, min(first + BATCH, len(messages))):
                outcome = self.pipeline.process(messages[offset].value, PARTITION, offset)
                outcomes[offset] = VALID if isinstance(outcome, Accepted) else outcome.reason.value
                self.event_ends[offset] = len(self.journal.writes)
            self.pipeline.flush(PARTITION)
            for key, state in self.pipeline.partition_states(PARTITION).items():
                self.screens[key] = state
            self.batch_ends.append(len(self.journal.writes))
        return outcomes


@dataclass(frozen=True)
class Uninterrupted:
    messages: list[SyntheticMessage]
    journal: Journal
    worker: Worker


@pytest.fixture(scope="module")
def uninterrupted(payments_spec: DomainSpec) -> Uninterrupted:
    """One run through a mix dense in duplicates, outliers and late events."""
    mix = MixSpec(count=3_000, seed=11, outlier_after=800, late_after=400, entities=300)
    messages = list(PaymentGenerator(mix))
    journal = Journal()
    worker = Worker(payments_spec, journal, {"seen": {}, "states": {}, "screens": {}})
    outcomes = worker.run(messages, 0, len(messages))
    wrong = {
        o: (outcomes[o], m.expected) for o, m in enumerate(messages) if outcomes[o] != m.expected
    }
    assert not wrong, f"the uninterrupted run already disagrees: {sorted(wrong.items())[:5]}"
    return Uninterrupted(messages, journal, worker)


@pytest.mark.parametrize("seed", range(4))
def test_a_kill_anywhere_in_a_batch_changes_no_outcome(
    payments_spec: DomainSpec, uninterrupted: Uninterrupted, seed: int
) -> None:
    messages, journal = uninterrupted.messages, uninterrupted.journal
    original = uninterrupted.worker
    rng = random.Random(seed)
    for _ in range(25):
        killed_at = rng.randrange(BATCH, len(messages))  # the event being processed
        batch = killed_at // BATCH
        committed = rng.randrange(batch)  # a batch whose offsets were committed
        floor = original.batch_ends[committed]  # flushed before its offsets were committed
        reached = rng.randint(floor, original.event_ends[killed_at])  # what the broker has
        restarted = Worker(payments_spec, Journal(), journal.replay(reached))
        start = (committed + 1) * BATCH
        # a copy comes at most 500 valid events after its original (``PaymentGenerator``)
        again = restarted.run(messages, start, killed_at + 600)
        wrong = {
            offset: (got, messages[offset].expected)
            for offset, got in again.items()
            if got != messages[offset].expected
        }
        assert not wrong, (
            f"killed at offset {killed_at} with batch {committed} committed and "
            f"{reached - floor} writes after it kept: {sorted(wrong.items())[:5]}"
        )
