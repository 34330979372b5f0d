"""Every hostile message is rejected by the pipeline with a reason, and its dead letter encodes."""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson

from streams.codecs import DEAD_LETTER_ORIGINAL_MAX, decode_rejection, encode_rejection
from streams.envelope import Reason, Rejected, SourcePosition
from streams.hostile import HUGE_MAX_BYTES, HUGE_MIN_BYTES, KINDS, hostile_messages
from streams.pipeline import ValidationPipeline
from streams.spec import DomainSpec


def test_the_same_seed_gives_the_same_bytes() -> None:
    first = [m.value for m in hostile_messages(300, seed=5)]
    assert first == [m.value for m in hostile_messages(300, seed=5)]
    assert first != [m.value for m in hostile_messages(300, seed=6)]


def test_every_kind_and_a_few_huge_payloads_are_drawn() -> None:
    messages = list(hostile_messages(2_000, seed=5))
    kinds = Counter(m.kind for m in messages)
    assert set(kinds) == set(KINDS)
    assert min(kinds.values()) >= 2_000 // len(KINDS)
    huge = [len(m.value) for m in messages if len(m.value) >= HUGE_MIN_BYTES]
    assert huge
    assert max(huge) <= HUGE_MAX_BYTES
    assert len({m.key for m in messages}) == len(messages)
    assert len({m.variant for m in messages}) >= 60


def test_every_hostile_message_is_rejected_with_a_reason(payments_spec: DomainSpec) -> None:
    pipeline = ValidationPipeline(payments_spec, {}, {})
    reasons: Counter[str] = Counter()
    for offset, message in enumerate(hostile_messages(3_000, seed=11)):
        outcome = pipeline.process(message.value, 0, offset)
        assert isinstance(outcome, Rejected), (message.kind, message.variant, message.value[:200])
        assert outcome.detail, message.variant
        letter = encode_rejection(outcome, message.value, SourcePosition("raw", 0, offset), 1)
        assert len(letter) < 100_000
        decoded = decode_rejection(letter)
        assert decoded["original"] == message.value[:DEAD_LETTER_ORIGINAL_MAX]
        assert orjson.loads(letter)["reason"] == outcome.reason.value
        reasons[outcome.reason.value] += 1
    # the kinds reach many different checks, not one early exit
    assert len(reasons) >= 7, reasons


def test_a_dead_letter_keeps_a_long_original_cut_with_its_size_and_digest() -> None:
    original = bytes(range(256)) * 4_000  # 1,024,000 bytes: over Kafka's default limit
    source = SourcePosition("raw", 2, 7)
    letter = encode_rejection(Rejected(Reason.OVERSIZED, "too long"), original, source, 1)
    assert len(letter) < 100_000
    decoded = decode_rejection(letter)
    assert decoded["original"] == original[:DEAD_LETTER_ORIGINAL_MAX]
    assert decoded["original_truncated"] is True
    assert decoded["original_size"] == len(original)
    assert decoded["original_sha256"] == hashlib.sha256(original).hexdigest()
    short = decode_rejection(encode_rejection(Rejected(Reason.NOT_JSON, "x"), b"{", source, 1))
    assert short["original"] == b"{"
    assert "original_truncated" not in short
