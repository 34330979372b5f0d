"""Synthetic card payments for the demo domain, with labelled faults.

Every generated message carries the outcome the validator must reach (``valid`` or a
reason code), so a test or the demo can check the pipeline's counts exactly. Seeded:
the same arguments give the same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.envelope import Reason

VALID = "valid"
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY")
COUNTRIES = ("DE", "FR", "GB", "US", "CH", "NL", "ES", "IT", "JP", "PL")
CHANNELS = ("pos", "web", "app", "moto")
MCCS = (5411, 5812, 5999, 4111, 5732, 7011, 5541, 5311, 4814, 5912)
MEDIAN_AMOUNT = 40.0
AMOUNT_LOG_SIGMA = 1.0
AMOUNT_LOG_CLIP = 4.0  # normal amounts stay within 4 sigma of the median in log space

MALFORMED_KINDS: tuple[Reason, ...] = (
    Reason.NOT_JSON,
    Reason.BAD_ENVELOPE,
    Reason.UNKNOWN_SCHEMA,
    Reason.MISSING_FIELD,
    Reason.UNEXPECTED_FIELD,
    Reason.BAD_TYPE,
    Reason.OUT_OF_RANGE,
    Reason.NON_FINITE,
    Reason.OVERSIZED,
    Reason.OUTLIER,
    Reason.LATE,
)
LATE_BY_MS = 300_000  # well beyond the demo domain's 60 s grace


@dataclass(frozen=True, slots=True)
class SyntheticMessage:
    key: bytes
    value: bytes
    expected: str  # "valid" or a Reason value
    event_id: str | None


@dataclass(frozen=True)
class MixSpec:
    count: int
    seed: int = 7
    malformed_share: float = 0.10
    duplicate_share: float = 0.02
    old_version_share: float = 0.05
    entities: int = 2_000
    start_time_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    mean_gap_ms: int = 10
    outlier_after: int = 3_000  # outliers only once the screens have warmed up
    late_after: int = 1_000  # late events only once every partition's watermark has moved
    kinds: tuple[Reason, ...] = MALFORMED_KINDS

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")
        for name in ("malformed_share", "duplicate_share", "old_version_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {share}")
        if self.malformed_share + self.duplicate_share + self.old_version_share > 1.0:
            raise ValueError("the shares add up to more than 1")


@dataclass
class PaymentGenerator:
    mix: MixSpec
    expected: Counter[str] = field(default_factory=Counter)

    def __iter__(self) -> Iterator[SyntheticMessage]:
        rng = random.Random(self.mix.seed)
        event_time = self.mix.start_time_ms
        earlier_valid: list[SyntheticMessage] = []
        for index in range(self.mix.count):
            event_time += (
                int(rng.expovariate(1.0 / self.mix.mean_gap_ms)) if self.mix.mean_gap_ms else 0
            )
            roll = rng.random()
            mix = self.mix
            if roll < mix.duplicate_share and earlier_valid:
                original = rng.choice(earlier_valid[-500:])
                message = SyntheticMessage(
                    original.key,
                    original.value,
                    Reason.DUPLICATE.value,
                    original.event_id,
                )
            elif roll < mix.duplicate_share + mix.malformed_share:
                kinds = [
                    k
                    for k in mix.kinds
                    if (k is not Reason.OUTLIER or index >= mix.outlier_after)
                    and (k is not Reason.LATE or index >= mix.late_after)
                ]
                kind = rng.choice(kinds) if kinds else None
                message = (
                    self._malformed(rng, index, event_time, kind)
                    if kind is not None
                    else self._valid(rng, index, event_time, version=3)
                )
            else:
                old = roll < mix.duplicate_share + mix.malformed_share + mix.old_version_share
                version = rng.choice((1, 2)) if old else 3
                message = self._valid(rng, index, event_time, version=version)
            if message.expected == VALID:
                earlier_valid.append(message)
            self.expected[message.expected] += 1
            yield message

    def _event(
        self, rng: random.Random, index: int, event_time: int, version: int
    ) -> dict[str, Any]:
        entity = f"card-{rng.randrange(self.mix.entities):05d}"
        log_amount = min(max(rng.gauss(0.0, AMOUNT_LOG_SIGMA), -AMOUNT_LOG_CLIP), AMOUNT_LOG_CLIP)
        amount = round(MEDIAN_AMOUNT * math.exp(log_amount), 2)
        payload: dict[str, Any]
        if version == 1:
            payload = {
                "amount_cents": round(amount * 100),
                "currency": rng.choice(CURRENCIES),
                "merchant_id": f"m-{rng.randrange(500):04d}",
                "mcc": rng.choice(MCCS),
                "country": rng.choice(COUNTRIES),
            }
        else:
            payload = {
                "amount": amount,
                "currency": rng.choice(CURRENCIES),
                "merchant_id": f"m-{rng.randrange(500):04d}",
                "mcc": rng.choice(MCCS),
                "country": rng.choice(COUNTRIES),
                "channel": rng.choice(CHANNELS),
            }
        if version == 3:
            payload["card_present"] = payload["channel"] == "pos"
            payload["hour_of_day"] = (event_time // 3_600_000) % 24
            if rng.random() < 0.5:
                payload["device_risk"] = round(rng.random(), 4)
        return {
            "event_id": f"ev-{self.mix.seed}-{index:09d}",
            "schema": "payment",
            "schema_version": version,
            "entity_id": entity,
            "event_time": event_time,
            "payload": payload,
        }

    def _valid(
        self, rng: random.Random, index: int, event_time: int, version: int
    ) -> SyntheticMessage:
        event = self._event(rng, index, event_time, version)
        return _message(event, json.dumps(event).encode(), VALID)

    def _malformed(  # noqa: C901 - one branch per fault kind reads best as a flat match
        self,
        rng: random.Random,
        index: int,
        event_time: int,
        kind: Reason,
    ) -> SyntheticMessage:
        event = self._event(rng, index, event_time, version=3)
        payload = event["payload"]
        match kind:
            case Reason.NOT_JSON:
                return _message(event, json.dumps(event).encode()[:-7], kind.value)
            case Reason.BAD_ENVELOPE:
                event["event_time"] = str(event_time)
            case Reason.UNKNOWN_SCHEMA:
                event["schema_version"] = 9
            case Reason.MISSING_FIELD:
                del payload["currency"]
            case Reason.UNEXPECTED_FIELD:
                payload["promo_code"] = "FREE"
            case Reason.BAD_TYPE:
                payload["amount"] = str(payload["amount"])
            case Reason.OUT_OF_RANGE:
                payload["hour_of_day"] = 31
            case Reason.NON_FINITE:
                payload["amount"] = math.nan
            case Reason.OVERSIZED:
                payload["merchant_id"] = "m" * 5_000
            case Reason.OUTLIER:
                payload["amount"] = round(rng.uniform(250_000.0, 900_000.0), 2)
            case Reason.LATE:
                event["event_time"] = event_time - LATE_BY_MS
                payload["hour_of_day"] = (event["event_time"] // 3_600_000) % 24
            case _:
                raise ValueError(f"no generator for fault kind {kind}")
        return _message(event, json.dumps(event).encode(), kind.value)


def _message(event: dict[str, Any], value: bytes, expected: str) -> SyntheticMessage:
    return SyntheticMessage(
        key=str(event["entity_id"]).encode(),
        value=value,
        expected=expected,
        event_id=str(event["event_id"]),
    )
