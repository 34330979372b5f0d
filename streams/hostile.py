"""Hostile raw messages: inputs a validator must reject without falling over.

Seven kinds, drawn in turn from a seeded generator so the same arguments give the same
bytes: random bytes, wrong types, huge payloads, deep nesting, odd unicode, NaN and
infinity, unknown schema versions. Each message is keyed ``hostile-<seed>-<index>`` so its
dead letter can be found by key. None of them is a valid event of the payments domain.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

RANDOM_BYTES = "random_bytes"
WRONG_TYPES = "wrong_types"
HUGE = "huge"
DEEP_NESTING = "deep_nesting"
ODD_UNICODE = "odd_unicode"
NON_FINITE = "non_finite"
UNKNOWN_VERSION = "unknown_version"
KINDS = (
    RANDOM_BYTES,
    WRONG_TYPES,
    HUGE,
    DEEP_NESTING,
    ODD_UNICODE,
    NON_FINITE,
    UNKNOWN_VERSION,
)
# Large, but under the broker's default message size limit (1 MiB) with the key and headers.
HUGE_MIN_BYTES = 200_000
HUGE_MAX_BYTES = 900_000
HUGE_EVERY = 50  # one huge payload in this many huge-kind draws; the rest are a few KiB


@dataclass(frozen=True, slots=True)
class HostileMessage:
    key: bytes
    value: bytes
    kind: str
    variant: str


def base_event(index: int, seed: int) -> dict[str, Any]:
    """A valid payments v3 event; the hostile kinds break it in one place."""
    return {
        "event_id": f"hostile-{seed}-{index:06d}",
        "schema": "payment",
        "schema_version": 3,
        "entity_id": f"card-{index % 997:05d}",
        "event_time": 1_767_225_600_000 + index * 10,
        "payload": {
            "amount": 12.5,
            "currency": "EUR",
            "merchant_id": "m-0001",
            "mcc": 5411,
            "country": "DE",
            "channel": "pos",
            "card_present": True,
            "hour_of_day": 0,
        },
    }


def hostile_messages(count: int, seed: int = 13) -> Iterator[HostileMessage]:
    """``count`` hostile messages, the kinds in turn, each variant drawn from ``seed``."""
    rng = random.Random(seed)
    makers: dict[str, Callable[[random.Random, int, int], tuple[str, bytes]]] = {
        RANDOM_BYTES: _random_bytes,
        WRONG_TYPES: _wrong_types,
        HUGE: _huge,
        DEEP_NESTING: _deep_nesting,
        ODD_UNICODE: _odd_unicode,
        NON_FINITE: _non_finite,
        UNKNOWN_VERSION: _unknown_version,
    }
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        variant, value = makers[kind](rng, index, seed)
        yield HostileMessage(f"hostile-{seed}-{index:06d}".encode(), value, kind, variant)


def _dumps(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


def _random_bytes(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    variant = rng.choice(("noise", "noise_brace", "empty", "nul", "truncated"))
    match variant:
        case "noise":
            value = rng.randbytes(rng.randrange(1, 2_000))
        case "noise_brace":  # looks like JSON for one byte
            value = b"{" + rng.randbytes(rng.randrange(1, 500))
        case "empty":
            value = b""
        case "nul":
            value = b"\x00" * rng.randrange(1, 64)
        case _:
            text = _dumps(base_event(index, seed))
            value = text[: rng.randrange(1, len(text) - 1)]
    return variant, value


_WRONG_ENVELOPES: tuple[tuple[str, Any], ...] = (
    ("event_id", 12345),
    ("event_id", None),
    ("event_id", ["a"]),
    ("schema", 7),
    ("entity_id", {"id": 1}),
    ("entity_id", True),
    ("event_time", "1767225600000"),
    ("event_time", 1.7e12),
    ("event_time", None),
    ("event_time", -5),
    ("payload", "amount=12"),
    ("payload", [1, 2, 3]),
    ("payload", None),
)
_WRONG_FIELDS: tuple[tuple[str, Any], ...] = (
    ("amount", "12.50"),
    ("amount", [12.5]),
    ("amount", {"value": 12.5}),
    ("amount", True),
    ("amount", None),
    ("currency", 978),
    ("merchant_id", 1),
    ("mcc", 54.11),
    ("mcc", "5411"),
    ("mcc", False),
    ("country", ["D", "E"]),
    ("channel", 0),
    ("card_present", "yes"),
    ("card_present", 1),
    ("hour_of_day", 3.5),
    ("hour_of_day", "3"),
    ("device_risk", "low"),
)
_TOP_LEVELS: tuple[Any, ...] = (None, 0, -1.5, "payment", [], [{}], True)


def _wrong_types(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.15:
        top = rng.choice(_TOP_LEVELS)
        return f"top_level_{type(top).__name__}", _dumps(top)
    event = base_event(index, seed)
    if roll < 0.5:
        name, value = rng.choice(_WRONG_ENVELOPES)
        event[name] = value
        return f"envelope_{name}", _dumps(event)
    name, value = rng.choice(_WRONG_FIELDS)
    event["payload"][name] = value
    return f"field_{name}", _dumps(event)


def _huge(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    event = base_event(index, seed)
    big = index // len(KINDS) % HUGE_EVERY == 0
    size = rng.randrange(HUGE_MIN_BYTES, HUGE_MAX_BYTES) if big else rng.randrange(5_000, 20_000)
    variant = rng.choice(("long_string", "long_list", "many_fields"))
    match variant:
        case "long_string":
            event["payload"]["merchant_id"] = "m" * size
        case "long_list":
            event["payload"]["history"] = [rng.random() for _ in range(size // 20)]
        case _:
            event["payload"].update({f"f{i}": i for i in range(size // 12)})
    value = _dumps(event)
    return f"{variant}_{'large' if big else 'small'}", value[:HUGE_MAX_BYTES]


def _deep_nesting(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    depth = rng.randrange(600, 1_900)
    variant = rng.choice(("arrays", "objects", "in_payload", "unclosed"))
    match variant:
        case "arrays":
            return variant, b"[" * depth + b"]" * depth
        case "objects":
            return variant, b'{"a":' * depth + b"1" + b"}" * depth
        case "in_payload":
            event = base_event(index, seed)
            text = _dumps(event).decode()
            nested = "[" * depth + "]" * depth
            return variant, text.replace('"amount": 12.5', f'"amount": {nested}').encode()
        case _:
            return variant, b"[" * (depth * 2)


_ODD_STRINGS: tuple[tuple[str, str, str], ...] = (
    # (variant, field, JSON text of the value): each breaks the field it is put in
    ("lone_high_surrogate", "merchant_id", '"m-\\ud800"'),
    ("lone_low_surrogate", "entity_id", '"card-\\udfff"'),
    ("reversed_pair", "event_id", '"ev-\\udc00\\ud800"'),
    ("cyrillic_currency", "currency", '"\u0415UR"'),
    ("fullwidth_digits", "mcc", '"\uff15\uff14\uff11\uff11"'),
    ("zero_width_channel", "channel", '"pos\u200b"'),
    ("rtl_override_currency", "currency", '"\u202eRUE"'),
    ("emoji_country", "country", '"\U0001f600\U0001f600\U0001f600"'),
    ("combining_channel", "channel", '"po\u0301s"'),
    ("homoglyph_schema", "schema", '"p\u0430yment"'),
    ("nul_in_schema", "schema", '"payment\\u0000"'),
)
_ODD_BYTES: tuple[tuple[str, bytes], ...] = (
    ("utf8_bom", b"\xef\xbb\xbf"),
    ("overlong_slash", b"\xc0\xaf"),
    ("invalid_continuation", b"\x80\x80"),
    ("cesu_surrogate", b"\xed\xa0\x80"),
    ("latin1_byte", b"\xe9"),
)


def _odd_unicode(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    event = base_event(index, seed)
    roll = rng.random()
    if roll < 0.55:
        variant, name, value_text = rng.choice(_ODD_STRINGS)
        marker = "__ODD__"
        if name in event["payload"]:
            event["payload"][name] = marker
        else:
            event[name] = marker
        text = json.dumps(event, ensure_ascii=False).replace(f'"{marker}"', value_text)
        return variant, text.encode("utf-8")
    if roll < 0.7:
        key = rng.choice(("amount\u200b", "\u0430mount", "am\u0000ount", "\U0001f4b0"))
        event["payload"][key] = 1
        return "odd_field_name", _dumps(event)
    if roll < 0.85:
        encoding = rng.choice(("utf-16", "utf-16-be", "utf-32"))
        return encoding.replace("-", "_"), json.dumps(event).encode(encoding)
    variant, raw = rng.choice(_ODD_BYTES)
    encoded = _dumps(event)
    if variant == "utf8_bom":
        return variant, raw + encoded
    return variant, encoded.replace(b'"m-0001"', b'"m-' + raw + b'"')


_NON_FINITE_TEXTS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e400", "nan", "inf")
_NON_FINITE_PLACES = ("amount", "device_risk", "hour_of_day", "mcc", "event_time", "version")


def _non_finite(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    event = base_event(index, seed)
    number = rng.choice(_NON_FINITE_TEXTS)
    place = rng.choice(_NON_FINITE_PLACES)
    marker = "__NUMBER__"
    if place == "event_time":
        event["event_time"] = marker
    elif place == "version":
        event["schema_version"] = marker
    else:
        event["payload"][place] = marker
    text = json.dumps(event).replace(f'"{marker}"', number)
    return f"{place}_{number}", text.encode()


_VERSIONS: tuple[Any, ...] = (0, -1, 4, 9, 99, 2**31, 2**63, 2**70, "3", 3.0, True, None, [3])


def _unknown_version(rng: random.Random, index: int, seed: int) -> tuple[str, bytes]:
    event = base_event(index, seed)
    if rng.random() < 0.8:
        version = rng.choice(_VERSIONS)
        event["schema_version"] = version
        return f"version_{json.dumps(version)}", _dumps(event)
    event["schema"] = rng.choice(("refund", "PAYMENT", "", "payment.v3", "payments"))
    return "unknown_schema", _dumps(event)


def describe(message: HostileMessage, limit: int = 120) -> str:
    """A short printable form of a message, for assertion messages."""
    head = base64.b64encode(message.value[:limit]).decode("ascii")
    return f"{message.key.decode()} {message.kind}/{message.variant} b64:{head}"
