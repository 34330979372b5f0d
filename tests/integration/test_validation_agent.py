"""The validation agent against the real broker: exact counts, and a SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter

import orjson
import pytest

from headrace import scenario
from headrace.kafka_io import Record, collect, produce
from streams.synthetic import VALID, MixSpec, PaymentGenerator, SyntheticMessage
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration

EVENT_ID = re.compile(rb'"event_id":\s*"([^"]+)"')


def mix(seed: int) -> MixSpec:
    return MixSpec(
        count=20_000,
        seed=seed,
        malformed_share=0.10,
        duplicate_share=0.02,
        old_version_share=0.05,
    )


def event_id_of(record: Record, *, rejected: bool) -> str:
    if not rejected:
        return str(orjson.loads(record.value)["event_id"])
    letter = json.loads(record.value)
    if letter["event_id"]:
        return str(letter["event_id"])
    import base64

    found = EVENT_ID.search(base64.b64decode(letter["original_b64"]))
    assert found is not None, letter
    return found.group(1).decode()


def test_counts_match_exactly_what_was_produced(isolated: IsolatedRun) -> None:
    generator = PaymentGenerator(mix(seed=21))
    messages = list(generator)
    expected = generator.expected
    assert len([r for r in expected if r not in {VALID, "duplicate"}]) >= 8
    assert expected["duplicate"] >= 300
    old_versions = sum(
        1 for m in messages if m.expected == VALID and b'"schema_version": 3' not in m.value
    )
    assert old_versions >= 800

    asyncio.run(scenario.prepare_topics(isolated.settings))
    worker = isolated.start_worker()
    asyncio.run(scenario.wait_until_serving(isolated.settings, worker))
    asyncio.run(scenario.produce_messages(isolated.settings, [(m.key, m.value) for m in messages]))
    outputs = asyncio.run(scenario.collect_outputs(isolated.settings, len(messages), timeout_s=300))
    # Nothing more arrives later: the counts are final.
    late = asyncio.run(scenario.collect_outputs(isolated.settings, len(messages) + 1, timeout_s=3))
    assert late.total == outputs.total

    assert len(outputs.valid) == expected[VALID]
    assert outputs.rejected_by_reason() == Counter(
        {r: n for r, n in expected.items() if r != VALID}
    )

    upcast = [orjson.loads(r.value) for r in outputs.valid]
    assert sum(1 for v in upcast if "upcast_from" in v) == old_versions
    assert all(v["schema_version"] == 3 for v in upcast)
    produced = {m.value for m in messages}
    for record in outputs.rejected:
        letter = json.loads(record.value)
        assert letter["detail"]
        assert letter["source"]["topic"] == isolated.settings.topics.raw
        import base64

        assert base64.b64decode(letter["original_b64"]) in produced
    assert worker.alive, worker.log_tail()


def test_sigkill_mid_stream_loses_nothing(isolated: IsolatedRun) -> None:
    messages: list[SyntheticMessage] = list(PaymentGenerator(mix(seed=22)))
    produced_ids = {m.event_id for m in messages if m.event_id is not None}
    settings = isolated.settings

    asyncio.run(scenario.prepare_topics(settings))
    worker = isolated.start_worker("worker-1")
    asyncio.run(scenario.wait_until_serving(settings, worker))

    async def produce_and_kill() -> int:
        sending = asyncio.create_task(
            produce(
                settings.bootstrap_servers,
                settings.topics.raw,
                [(m.key, m.value) for m in messages],
                rate=5_000,
            ),
        )
        seen = await collect(
            settings.bootstrap_servers,
            [settings.topics.features, settings.topics.rejected],
            until=lambda got: len(got) >= 6_000,
            timeout_s=120,
        )
        worker.kill()
        await sending
        return len(seen)

    seen_before_kill = asyncio.run(produce_and_kill())
    assert seen_before_kill >= 6_000
    assert not worker.alive
    time.sleep(1)
    restarted = isolated.start_worker("worker-2")

    def accounted_ids(records: list[Record]) -> list[str]:
        return [
            event_id_of(r, rejected=r.topic == settings.topics.rejected)
            for r in records
            if r.key != b"probe"
        ]

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.features, settings.topics.rejected],
            until=lambda got: len(got) >= len(messages) and produced_ids <= set(accounted_ids(got)),
            timeout_s=300,
        ),
    )
    accounted = accounted_ids(records)
    missing = produced_ids - set(accounted)
    assert not missing, f"{len(missing)} event ids lost, e.g. {sorted(missing)[:5]}"
    extra_outputs = len(accounted) - len(messages)
    print(
        f"outputs={len(accounted)} produced={len(messages)} redelivered_after_kill={extra_outputs}"
    )
    assert extra_outputs >= 0
    assert restarted.alive, restarted.log_tail()
