"""Accounting for the fault tests: what came out of the worker, against what went in.

A ``Ledger`` folds the records of the predictions and dead-letter topics as they arrive
(records are not kept, so a soak of hundreds of thousands of events fits in memory). An
event is accounted for by a prediction (valid) or a dead letter (rejected); a record seen
again (a prediction for the same request id, a dead letter for the same source offset) is
a duplicate, counted and reported, never an error: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from headrace.worker_process import WorkerProcess
from streams.settings import Settings
from streams.synthetic import VALID, SyntheticMessage
from tests.integration.conftest import ARTIFACTS

REPORTS = ARTIFACTS / "faults"
# A fault test's wait for every event to be accounted for (under two minutes in a passing
# run here), well inside the test's own limit so that a failure says what was missing.
ACCOUNTED_WITHIN_S = 300
FAULT_TEST_TIMEOUT_S = 1_200
PROBE_KEY = b"probe"
EVENT_ID = re.compile(rb'"event_id":\s*"([^"]+)"')


def healthy(*workers: WorkerProcess) -> Callable[[], bool]:
    """A check for ``Follower.until``: every worker runs and no agent of theirs crashed (Faust
    logs ``Crashed reason=...`` and carries on without the agent, so a process check alone
    would wait out the timeout)."""

    def check() -> bool:
        for worker in workers:
            if not worker.alive or b"Crashed reason=" in worker.log_since_start():
                return False
        return True

    return check


def write_report(name: str, figures: dict[str, Any]) -> Path:
    """Write the figures of one test to ``test-artifacts/faults/<name>.json`` and print them."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    return path


@dataclass(frozen=True)
class Expected:
    """What the worker must emit for a stream of synthetic messages."""

    valid_ids: frozenset[str]
    rejections: Counter[tuple[str, str]]  # (event id, reason) -> how many messages

    @classmethod
    def of(cls, messages: Iterable[SyntheticMessage]) -> Expected:
        valid: set[str] = set()
        rejections: Counter[tuple[str, str]] = Counter()
        for message in messages:
            if message.event_id is None:
                raise ValueError("every synthetic message must carry an event id")
            if message.expected == VALID:
                valid.add(message.event_id)
            else:
                rejections[message.event_id, message.expected] += 1
        return cls(frozenset(valid), rejections)

    @property
    def total(self) -> int:
        return len(self.valid_ids) + sum(self.rejections.values())


@dataclass
class Ledger:
    """The outputs seen so far: predictions by request id, dead letters by source offset."""

    settings: Settings
    prediction_records: int = 0
    predictions: Counter[str] = field(default_factory=Counter)  # request id -> copies
    by_worker: Counter[str] = field(default_factory=Counter)  # first predictions per worker
    redelivered_predictions: int = 0
    rejection_records: int = 0
    # source (partition, offset) -> (event id or None, reason, detail, key)
    letters: dict[tuple[int, int], tuple[str | None, str, str, bytes | None]] = field(
        default_factory=dict
    )
    letter_copies: int = 0
    conflicting_letters: int = 0  # the same source offset rejected for two reasons
    first_output_ms: int | None = None
    last_output_ms: int | None = None
    output_times_ms: list[int] = field(default_factory=list)
    first_by_worker_ms: dict[str, int] = field(default_factory=dict)
    last_by_worker_ms: dict[str, int] = field(default_factory=dict)
    keep_originals: bool = False  # keep what each dead letter says of its original
    # position -> (the bytes kept, the original's size, its SHA-256 when the letter cut it)
    originals: dict[tuple[int, int], tuple[bytes, int, str | None]] = field(default_factory=dict)

    def add(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int) -> None:
        names = self.settings.topics
        if topic == names.predictions:
            self._add_prediction(orjson.loads(value), timestamp_ms)
        elif topic == names.rejected:
            if key == PROBE_KEY:
                return
            self._add_letter(key, orjson.loads(value))
        else:
            return
        self.output_times_ms.append(timestamp_ms)
        if self.first_output_ms is None or timestamp_ms < self.first_output_ms:
            self.first_output_ms = timestamp_ms
        if self.last_output_ms is None or timestamp_ms > self.last_output_ms:
            self.last_output_ms = timestamp_ms

    def _add_prediction(self, prediction: dict[str, Any], timestamp_ms: int) -> None:
        if prediction.get("shadow"):
            return
        self.prediction_records += 1
        request_id = str(prediction["request_id"])
        self.predictions[request_id] += 1
        if prediction.get("redelivered"):
            self.redelivered_predictions += 1
        worker = str(prediction.get("worker", "?"))
        if self.predictions[request_id] == 1:
            self.by_worker[worker] += 1
        if worker not in self.first_by_worker_ms:
            self.first_by_worker_ms[worker] = timestamp_ms
        self.last_by_worker_ms[worker] = max(timestamp_ms, self.last_by_worker_ms.get(worker, 0))

    def _add_letter(self, key: bytes | None, letter: dict[str, Any]) -> None:
        self.rejection_records += 1
        source = letter["source"]
        position = (int(source["partition"]), int(source["offset"]))
        event_id = letter.get("event_id")
        original = base64.b64decode(letter["original_b64"])
        if self.keep_originals:
            size = int(letter.get("original_size", len(original)))
            self.originals.setdefault(position, (original, size, letter.get("original_sha256")))
        if not event_id:
            found = EVENT_ID.search(original)
            event_id = found.group(1).decode("utf-8", "replace") if found else None
        entry = (event_id, str(letter["reason"]), str(letter["detail"]), key)
        earlier = self.letters.get(position)
        if earlier is None:
            self.letters[position] = entry
            return
        self.letter_copies += 1
        if earlier[1] != entry[1]:
            self.conflicting_letters += 1

    # ----------------------------------------------------------------------------------
    # Questions

    @property
    def outputs(self) -> int:
        return self.prediction_records + self.rejection_records

    @property
    def unique_outputs(self) -> int:
        return len(self.predictions) + len(self.letters)

    @property
    def duplicate_predictions(self) -> int:
        return self.prediction_records - len(self.predictions)

    def rejected_as(self) -> Counter[tuple[str, str]]:
        return Counter((e or "", reason) for e, reason, _, _ in self.letters.values())

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason, _, _ in self.letters.values())

    def unpredicted(self, expected: Expected) -> set[str]:
        return set(expected.valid_ids - self.predictions.keys())

    def valid_rejected(self, expected: Expected) -> dict[tuple[int, int], tuple[str, str]]:
        """Dead letters for events that were valid: source position -> (event id, reason).
        A copy of a valid event is rejected as a duplicate by design, so duplicates of
        an event that was predicted are left out."""
        return {
            position: (event_id, reason)
            for position, (event_id, reason, _, _) in self.letters.items()
            if event_id in expected.valid_ids
            and not (reason == "duplicate" and event_id in self.predictions)
        }

    def missing_rejections(self, expected: Expected) -> Counter[tuple[str, str]]:
        return expected.rejections - self.rejected_as()

    def complete(self, expected: Expected) -> bool:
        if len(self.predictions) < len(expected.valid_ids):
            return False
        if len(self.letters) < sum(expected.rejections.values()):
            return False
        return not self.unpredicted(expected) and not self.missing_rejections(expected)

    def rate_between(self, start_ms: int, end_ms: int) -> float:
        """Outputs per second with a broker timestamp within [start_ms, end_ms)."""
        if end_ms <= start_ms:
            return 0.0
        inside = sum(1 for t in self.output_times_ms if start_ms <= t < end_ms)
        return inside * 1000.0 / (end_ms - start_ms)

    def longest_gap_ms(self, start_ms: int, end_ms: int) -> int:
        """The longest stretch with no output at all within [start_ms, end_ms]."""
        times = sorted(t for t in self.output_times_ms if start_ms <= t <= end_ms)
        edges = [start_ms, *times, end_ms]
        return max(b - a for a, b in itertools.pairwise(edges))

    def summary(self, expected: Expected) -> dict[str, Any]:
        return {
            "events_produced": expected.total,
            "valid_expected": len(expected.valid_ids),
            "rejections_expected": sum(expected.rejections.values()),
            "predictions_unique": len(self.predictions),
            "prediction_records": self.prediction_records,
            "duplicate_predictions": self.duplicate_predictions,
            "redelivered_predictions": self.redelivered_predictions,
            "rejections_unique": len(self.letters),
            "rejection_records": self.rejection_records,
            "duplicate_rejections": self.letter_copies,
            "conflicting_rejections": self.conflicting_letters,
            "unpredicted": len(self.unpredicted(expected)),
            "missing_rejections": sum(self.missing_rejections(expected).values()),
            "valid_rejected": len(self.valid_rejected(expected)),
            "rejections_by_reason": dict(sorted(self.reasons().items())),
            "predictions_by_worker": dict(self.by_worker),
        }


def shortfall(
    ledger: Ledger, expected: Expected, *workers: WorkerProcess
) -> Callable[[], Awaitable[str]]:
    """An ``explain`` for ``Follower.until``: the ledger's summary, where the first events
    not yet accounted for are (their raw messages, features records and dead letters, the
    group's committed offsets), and the end of each worker's log with its commit warnings."""

    async def explain() -> str:
        unpredicted = sorted(ledger.unpredicted(expected))
        missing = ledger.missing_rejections(expected)
        rejected = sorted(ledger.valid_rejected(expected).items())
        parts = [
            json.dumps(ledger.summary(expected), sort_keys=True),
            f"unpredicted ({len(unpredicted)}), first ones: {unpredicted[:10]}",
            f"missing rejections, first ones: {sorted(missing.items())[:10]}",
            f"valid events rejected ({len(rejected)}), first ones: {rejected[:10]}",
        ]
        try:
            parts.append(await locate(ledger, unpredicted[:10]))
        except Exception as exc:  # noqa: BLE001 - the explanation must not hide the failure
            parts.append(f"could not locate them: {exc!r}")
        for worker in workers:
            log = worker.log_since_start().decode("utf-8", "replace").splitlines()
            commits = [line for line in log if "commit." in line or "rebalance" in line.lower()]
            parts.append(f"--- {worker.log_path.name}, commit and rebalance lines:")
            parts.extend(commits[-40:])
            parts.append(f"--- {worker.log_path.name}, last lines:\n{worker.log_tail(30)}")
        return "\n".join(parts)

    return explain


async def _read_all(settings: Settings, topic: str) -> AsyncIterator[Any]:
    """Every record of ``topic`` up to its end as it is now."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=5_000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {topic} assigned")
            await asyncio.sleep(0.1)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    yield message
    finally:
        await consumer.stop()


async def locate(ledger: Ledger, event_ids: list[str]) -> str:
    """Where the given events went: each raw message's partition and offset, its features
    records and dead letter, against the group's committed offset of its partition."""
    if not event_ids:
        return "nothing to locate"
    settings = ledger.settings
    wanted = {event_id.encode() for event_id in event_ids}
    raw: dict[str, list[tuple[int, int]]] = {}
    async for message in _read_all(settings, settings.topics.raw):
        found = EVENT_ID.search(message.value or b"")
        if found and found.group(1) in wanted:
            raw.setdefault(found.group(1).decode(), []).append((message.partition, message.offset))
    features: dict[str, list[str]] = {}
    async for message in _read_all(settings, settings.topics.features):
        found = EVENT_ID.search(message.value or b"")
        if found and found.group(1) in wanted:
            record = orjson.loads(message.value)
            features.setdefault(found.group(1).decode(), []).append(
                f"features {message.partition}@{message.offset} from raw "
                f"{record['source']['partition']}@{record['source']['offset']}"
                f"{' redelivered' if record.get('redelivered') else ''}"
            )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    lines = []
    for event_id in event_ids:
        for partition, offset in raw.get(event_id, []):
            meta = committed.get(TopicPartition(settings.topics.raw, partition))
            letter = ledger.letters.get((partition, offset))
            lines.append(
                f"{event_id}: raw {partition}@{offset}, group committed "
                f"{meta.offset if meta is not None else None}; "
                f"{'; '.join(features.get(event_id, [])) or 'no features record'}; "
                f"dead letter {letter[1:3] if letter else None}"
            )
        if event_id not in raw:
            lines.append(f"{event_id}: not in {settings.topics.raw}")
    return "\n".join(lines)


class Follower:
    """Reads the predictions and dead-letter topics from the beginning into a ledger."""

    def __init__(self, settings: Settings, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.ledger = ledger if ledger is not None else Ledger(settings)
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        self._consumer = AIOKafkaConsumer(
            self.settings.topics.predictions,
            self.settings.topics.rejected,
            bootstrap_servers=self.settings.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=200,
            max_poll_records=5_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await self._consumer.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self) -> int:
        """Fold whatever has arrived (waiting up to 200 ms); how many records that was."""
        if self._consumer is None:
            raise RuntimeError("use the follower as an async context manager")
        batch = await self._consumer.getmany(timeout_ms=200)
        count = 0
        for messages in batch.values():
            for message in messages:
                self.ledger.add(message.topic, message.key, message.value, message.timestamp)
                count += 1
        return count

    async def until(
        self,
        condition: Callable[[Ledger], bool],
        timeout_s: float,
        *,
        alive: Callable[[], bool] | None = None,
        what: str = "the condition",
        explain: Callable[[], Awaitable[str]] | None = None,
    ) -> float:
        """Read until ``condition(ledger)`` holds; the seconds it took. ``alive`` is checked
        on the way, so a dead worker fails the wait at once instead of at the timeout;
        ``explain`` says what was missing when the wait fails."""
        started = time.monotonic()
        deadline = started + timeout_s
        while not condition(self.ledger):
            if time.monotonic() > deadline:
                detail = f"\n{await explain()}" if explain is not None else ""
                raise TimeoutError(f"{what} did not hold within {timeout_s:.0f} s{detail}")
            if alive is not None and not alive():
                detail = f"\n{await explain()}" if explain is not None else ""
                raise RuntimeError(
                    f"a worker died or an agent crashed while waiting for {what}{detail}"
                )
            await self.poll()
        return time.monotonic() - started

    async def settle(self, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
        """Read until nothing new has arrived for ``quiet_s``: late copies are counted too."""
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < quiet_s:
            if await self.poll():
                last_new = time.monotonic()
