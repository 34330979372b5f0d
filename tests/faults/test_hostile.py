"""10,000 hostile inputs: the worker never dies, and each one is a dead letter with a reason.

The messages (``streams.hostile``: random bytes, wrong types, huge payloads up to 900 KB,
deep nesting, odd unicode, NaN and infinity, unknown versions) are seeded, keyed one by
one, and interleaved with a valid event after every hundred, whose predictions show the
worker still serves while it rejects. The dead letter of each hostile message is found by
its key and must carry a reason code, a detail and the original bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from headrace import scenario
from headrace.kafka_io import produce
from streams.codecs import DEAD_LETTER_ORIGINAL_MAX
from streams.envelope import Reason
from streams.hostile import HUGE_MIN_BYTES, HostileMessage, describe, hostile_messages
from streams.synthetic import MixSpec, PaymentGenerator
from tests.faults.ledger import (
    ACCOUNTED_WITHIN_S,
    Follower,
    Ledger,
    healthy,
    write_report,
)
from tests.integration.conftest import IsolatedRun

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HOSTILE = 10_000
VALID_EVERY = 100
REASONS = {reason.value for reason in Reason}


def keeps_original(kept: tuple[bytes, int, str | None], original: bytes) -> bool:
    """The whole original, or (for a long one) its first bytes, its size and its digest."""
    head, size, digest = kept
    if digest is None:
        return head == original
    return (
        original.startswith(head)
        and len(head) == DEAD_LETTER_ORIGINAL_MAX
        and size == len(original)
        and digest == hashlib.sha256(original).hexdigest()
    )


def test_hostile_inputs_are_all_dead_letters_and_the_worker_survives(
    scoring: IsolatedRun,
) -> None:
    settings = scoring.settings
    hostile = list(hostile_messages(HOSTILE, seed=13))
    valid = list(
        PaymentGenerator(
            MixSpec(
                count=HOSTILE // VALID_EVERY,
                seed=71,
                malformed_share=0.0,
                duplicate_share=0.0,
                old_version_share=0.0,
            ),
        ),
    )
    valid_ids = {m.event_id for m in valid if m.event_id is not None}
    stream: list[tuple[bytes | None, bytes]] = []
    for index, one in enumerate(hostile):
        stream.append((one.key, one.value))
        if index % VALID_EVERY == VALID_EVERY - 1:
            event = valid[index // VALID_EVERY]
            stream.append((event.key, event.value))
    by_key = {m.key: m for m in hostile}
    asyncio.run(scenario.prepare_topics(settings))
    worker = scoring.start_worker("worker")
    asyncio.run(scenario.wait_until_serving(settings, worker))
    pid = worker.pid
    started = time.monotonic()

    def lettered(ledger: Ledger) -> set[bytes]:
        return {key for _, _, _, key in ledger.letters.values() if key in by_key}

    async def run() -> Ledger:
        async with Follower(settings, Ledger(settings, keep_originals=True)) as follower:
            report = await produce(settings.bootstrap_servers, settings.topics.raw, stream)
            assert report.sent == len(stream)
            await follower.until(
                lambda ledger: (
                    len(lettered(ledger)) == HOSTILE and valid_ids <= ledger.predictions.keys()
                ),
                timeout_s=ACCOUNTED_WITHIN_S,
                alive=healthy(worker),
                what="a dead letter for every hostile message and a prediction for every valid one",
            )
            await follower.settle()
            return follower.ledger

    ledger = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert worker.alive, worker.log_tail()
    assert worker.pid == pid  # the same process throughout: never restarted

    problems: list[str] = []
    reasons_by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for position, (_, reason, detail, key) in ledger.letters.items():
        message: HostileMessage | None = by_key.get(key) if key is not None else None
        if message is None:
            problems.append(f"a dead letter for a message that was not hostile: {key!r}")
            continue
        reasons_by_kind[message.kind][reason] += 1
        if reason not in REASONS or not detail.strip():
            problems.append(f"{describe(message)}: reason {reason!r}, detail {detail!r}")
        if not keeps_original(ledger.originals[position], message.value):
            problems.append(f"{describe(message)}: the dead letter does not keep the original")
    assert not problems, "\n".join(problems[:20])
    assert set(ledger.predictions) == valid_ids  # no hostile message was scored

    figures: dict[str, Any] = {
        "hostile_messages": HOSTILE,
        "valid_interleaved": len(valid_ids),
        "dead_letters_unique": len(ledger.letters),
        "dead_letter_records": ledger.rejection_records,
        "dead_letters_cut_to_64kib": sum(1 for _, _, d in ledger.originals.values() if d),
        "predictions_unique": len(ledger.predictions),
        "largest_payload_bytes": max(len(m.value) for m in hostile),
        "payloads_over_200kb": sum(len(m.value) >= HUGE_MIN_BYTES for m in hostile),
        "bytes_produced": sum(len(value) for _, value in stream),
        "rejections_by_reason": dict(sorted(ledger.reasons().items())),
        "reasons_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(reasons_by_kind.items())},
        "variants": len({m.variant for m in hostile}),
        "wall_s": round(elapsed, 1),
        "events_per_s": round((HOSTILE + len(valid_ids)) / elapsed, 1),
        "worker_alive": worker.alive,
    }
    write_report("hostile", figures)
