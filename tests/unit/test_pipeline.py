from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any

import pytest

from streams.dedup import Block
from streams.envelope import Accepted, Reason
from streams.pipeline import ValidationPipeline
from streams.spec import DomainSpec
from streams.synthetic import MALFORMED_KINDS, VALID, MixSpec, PaymentGenerator


def outcome_label(outcome: object) -> str:
    return VALID if isinstance(outcome, Accepted) else outcome.reason.value  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_synthetic_message_gets_its_labelled_outcome(
    payments_spec: DomainSpec, seed: int
) -> None:
    generator = PaymentGenerator(MixSpec(count=8_000, seed=seed))
    pipeline = ValidationPipeline(payments_spec, {}, {})
    observed: Counter[str] = Counter()
    for offset, message in enumerate(generator):
        outcome = pipeline.process(message.value, zlib.crc32(message.key) % 4, offset)
        label = outcome_label(outcome)
        if isinstance(outcome, Accepted):
            assert outcome.features is not None
            assert list(outcome.features.row.values) == list(payments_spec.features.names)  # type: ignore[union-attr]
        assert label == message.expected, message
        observed[label] += 1
    assert observed == generator.expected
    assert set(observed) >= {VALID, Reason.DUPLICATE.value, *(k.value for k in MALFORMED_KINDS)}
    assert pipeline.counters.accepted == observed[VALID]
    assert pipeline.counters.upcast > 0


def test_state_survives_a_rebuild_from_its_stores(payments_spec: DomainSpec) -> None:
    messages = list(
        PaymentGenerator(
            MixSpec(
                count=3_000, seed=4, malformed_share=0.0, duplicate_share=0.0, old_version_share=0.0
            )
        )
    )
    seen: dict[str, Block] = {}
    first = ValidationPipeline(payments_spec, seen)
    for message in messages:
        assert isinstance(first.process(message.value, 0), Accepted)
    first.flush(0)  # as the worker does before the batch's offsets are committed
    screens = first.partition_states(0)
    restarted = ValidationPipeline(payments_spec, seen)
    restarted.rebuild(seen.items(), screens.items())
    # redelivered events are recognised as duplicates after the restart
    assert all(restarted.process(m.value, 0).reason is Reason.DUPLICATE for m in messages[-50:])  # type: ignore[union-attr]
    # and the outlier screen is warm: an extreme amount is rejected at once
    event = json.loads(messages[0].value)
    event["event_id"] += "-extreme"
    event["payload"]["amount"] = 800_000.0
    extreme = json.dumps(event).encode()
    assert restarted.process(extreme, 0).reason is Reason.OUTLIER  # type: ignore[union-attr]


def test_mix_rejects_impossible_shares() -> None:
    with pytest.raises(ValueError, match="add up"):
        MixSpec(count=1, malformed_share=0.6, duplicate_share=0.5)


def test_a_late_message_read_again_after_a_restart_is_late_again(payments_spec: DomainSpec) -> None:
    def event(event_id: str, event_time: int) -> bytes:
        doc = json.loads(next(iter(PaymentGenerator(MixSpec(count=1, seed=9)))).value)
        doc.update(event_id=event_id, event_time=event_time, schema_version=3, entity_id="card-1")
        return json.dumps(doc).encode()

    seen: dict[str, Block] = {}
    states: dict[str, Any] = {}
    first = ValidationPipeline(payments_spec, seen, states)
    base = 1_767_225_600_000
    assert isinstance(first.process(event("a", base + 600_000), 0, 0), Accepted)
    late = first.process(event("b", base), 0, 1)
    assert late.reason is Reason.LATE  # type: ignore[union-attr]
    assert isinstance(first.process(event("c", base + 600_001), 0, 2), Accepted)
    first.flush(0)
    restarted = ValidationPipeline(payments_spec, seen, states)
    restarted.rebuild(seen.items(), [], states.items())
    again = restarted.process(event("b", base), 0, 1)
    assert again.reason is Reason.LATE  # type: ignore[union-attr]
    redelivered = restarted.process(event("c", base + 600_001), 0, 2)
    assert isinstance(redelivered, Accepted)
    assert redelivered.redelivered


def test_faults_that_need_warm_state_come_only_after_it() -> None:
    mix = MixSpec(count=5_000, seed=5, malformed_share=0.5)
    for index, message in enumerate(PaymentGenerator(mix)):
        if message.expected == Reason.LATE.value:
            assert index >= mix.late_after
        if message.expected == Reason.OUTLIER.value:
            assert index >= mix.outlier_after
