"""A cache of predictions keyed by model version and the hash of the feature vector.

One interface, two backends, one contract (``tests/unit/test_cache.py``):

* ``LruPredictionCache``: in process, the least recently used entry evicted first.
* ``RedisPredictionCache``: shared by the workers; one ``GET`` per lookup, one
  ``SET key value EX ttl`` per store.

The interface is asynchronous (``async get`` and ``async put``) because the Redis backend
uses ``redis.asyncio`` and is awaited from the scoring agent's event loop; the LRU
backend is asynchronous only to share the interface, and never yields.

A value is the caller's encoding of a prediction, as bytes. ``b""`` is a value and
``None`` is a miss. ``hits``, ``misses`` and ``hit_rate`` count this instance's lookups.

``feature_hash`` is the key of a vector: the same in every process and every run, since
it hashes a canonical byte encoding with blake2b and never Python's ``hash``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from redis.asyncio import Redis

__all__ = [
    "LruPredictionCache",
    "PredictionCache",
    "RedisPredictionCache",
    "feature_hash",
    "feature_hashes",
]

DEFAULT_KEY_PREFIX = "predictions:"
DEFAULT_TTL_S = 3_600

_HASH_PERSON = b"headrace-fhash1"  # versions the encoding: change it with the encoding
_NAMED = b"M"
_POSITIONAL = b"S"
_NONE = b"\x00"
_FLOAT = b"\x01"
_CANONICAL_NAN = struct.pack(">d", math.nan)


_PACK_DOUBLE = struct.Struct(">d").pack
_NAME_CODES_MAX = 4_096  # distinct feature names whose encoding is kept
_name_codes: dict[str, bytes] = {}


def _encode_value(value: float | None) -> bytes:
    if value is None:
        return _NONE
    number = float(value) + 0.0  # an int as its float; -0.0 as 0.0
    if number != number:  # NaN  # noqa: PLR0124 - the one test that needs no call
        return _FLOAT + _CANONICAL_NAN
    return _FLOAT + _PACK_DOUBLE(number)


def _encode_name(name: str) -> bytes:
    code = _name_codes.get(name)
    if code is None:
        encoded = name.encode("utf-8")
        code = struct.pack(">I", len(encoded)) + encoded
        if len(_name_codes) < _NAME_CODES_MAX:  # a model has a few dozen names
            _name_codes[name] = code
    return code


def feature_hash(values: Mapping[str, float | None] | Sequence[float | None]) -> str:
    """The hex blake2b digest (128 bits) of a feature vector, stable across processes.

    The encoding is a tag for named (mapping) or positional (sequence) values, the
    number of values, then each value in the order given, after its length-prefixed
    UTF-8 name when named. A value is a ``None`` tag, or a float tag and the IEEE 754
    big-endian double of ``float(value)``. So:

    * None, 0.0 and NaN are three different values; ``3`` and ``3.0`` are the same;
    * -0.0 hashes as 0.0, as it compares (``-0.0 == 0.0``): a model's prediction depends
      on the value, not on the sign of a zero; every NaN hashes as one NaN;
    * key order counts: models take features by position, so two mappings that differ
      only in order are two different inputs;
    * a mapping and a sequence of the same values differ.

    The bytes are joined and hashed in one call (it runs once per scored record).
    """
    if isinstance(values, Mapping):
        parts = [_NAMED + struct.pack(">I", len(values))]
        for name, value in values.items():
            parts.append(_encode_name(name))
            parts.append(_encode_value(value))
    else:
        parts = [_POSITIONAL + struct.pack(">I", len(values))]
        parts.extend(_encode_value(value) for value in values)
    return hashlib.blake2b(b"".join(parts), digest_size=16, person=_HASH_PERSON).hexdigest()


def feature_hashes(rows: Sequence[Mapping[str, float | None]]) -> list[str]:
    """``[feature_hash(row) for row in rows]``, the rows that share the first row's names
    (in order) encoded together.

    Those rows' encodings differ only in their values: each is a fixed template (the
    length, then per name its code, a tag and eight bytes) with the values written into
    it as one array, and a ``None``'s eight bytes left out. About half the cost a row
    at 38 features (``python -m bench.per_event_costs``); any other row takes
    ``feature_hash``, and the digests are the same either way (``tests/unit/test_cache.py``).
    """
    if len(rows) < _BATCH_AT_LEAST:
        return [feature_hash(row) for row in rows]
    names = tuple(rows[0])
    same = [i for i, row in enumerate(rows) if len(row) == len(names) and tuple(row) == names]
    try:
        values = np.array([list(rows[i].values()) for i in same], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # a value that is no number: one at a time
        return [feature_hash(row) for row in rows]
    layout = _layout_of(names)
    values += 0.0  # -0.0 as 0.0
    missing = np.isnan(values)  # None (NaN here) or NaN
    nones: dict[int, list[int]] = {}  # row -> its None columns
    for row, column in zip(*(axis.tolist() for axis in np.nonzero(missing)), strict=True):
        if rows[same[row]][names[column]] is None:
            nones.setdefault(row, []).append(column)
    values[missing] = math.nan  # every NaN as one NaN
    encoded = np.tile(layout.template, (len(same), 1))
    encoded[:, layout.value_bytes] = values.astype(">f8").view(np.uint8)
    joined, size = encoded.tobytes(), len(layout.template)
    hashes: list[str] = [""] * len(rows)
    for row, i in enumerate(same):
        data = joined[row * size : (row + 1) * size]
        for column in reversed(nones.get(row, ())):  # the tag, and no eight bytes
            tag = layout.tags[column]
            data = data[:tag] + _NONE + data[tag + 9 :]
        hashes[i] = hashlib.blake2b(data, digest_size=16, person=_HASH_PERSON).hexdigest()
    for i, row in enumerate(rows):
        if not hashes[i]:
            hashes[i] = feature_hash(row)
    return hashes


_BATCH_AT_LEAST = 8  # fewer rows: the arrays cost more than they save


class _Layout:
    """A named row's encoding with every value a float: the bytes, and where each value's
    tag and eight bytes sit in it."""

    def __init__(self, names: tuple[str, ...]) -> None:
        template = bytearray(_NAMED + struct.pack(">I", len(names)))
        tags: list[int] = []
        value_bytes: list[int] = []
        for name in names:
            template += _encode_name(name)
            tags.append(len(template))
            template += _FLOAT
            value_bytes.extend(range(len(template), len(template) + 8))
            template += bytes(8)
        self.template = np.frombuffer(bytes(template), dtype=np.uint8)
        self.tags = tags
        self.value_bytes = np.array(value_bytes)


_layouts: dict[tuple[str, ...], _Layout] = {}


def _layout_of(names: tuple[str, ...]) -> _Layout:
    layout = _layouts.get(names)
    if layout is None:
        layout = _Layout(names)
        if len(_layouts) < _NAME_CODES_MAX:
            _layouts[names] = layout
    return layout


class PredictionCache(Protocol):
    """Predictions by model version and feature hash."""

    @property
    def hits(self) -> int:
        """Lookups that found a value."""

    @property
    def misses(self) -> int:
        """Lookups that found none."""

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""

    async def get(self, model_version: str, feature_hash: str) -> bytes | None:
        """The value stored for the version and hash, or None (a miss)."""

    async def put(self, model_version: str, feature_hash: str, value: bytes) -> None:
        """Store the value for the version and hash, replacing any earlier one."""

    async def close(self) -> None:
        """Release connections; the cache is not used afterwards."""


class _LookupCounts:
    """The hit and miss counters every cache keeps."""

    def __init__(self) -> None:
        self._hits = 0
        self._misses = 0

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def hit_rate(self) -> float:
        lookups = self._hits + self._misses
        return self._hits / lookups if lookups else 0.0

    def _count(self, value: bytes | None) -> bytes | None:
        if value is None:
            self._misses += 1
        else:
            self._hits += 1
        return value


class LruPredictionCache(_LookupCounts):
    """At most ``max_entries`` values in process; a hit or a store makes an entry the newest."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        super().__init__()
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, model_version: str, feature_hash: str) -> bytes | None:
        key = (model_version, feature_hash)
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return self._count(value)

    async def put(self, model_version: str, feature_hash: str, value: bytes) -> None:
        key = (model_version, feature_hash)
        self._entries[key] = bytes(value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisPredictionCache(_LookupCounts):
    """Values under ``key_prefix + model_version + ":" + feature_hash``, with a time to live.

    Give ``url`` and the cache opens (and closes) its own client, or ``client`` to share
    one the caller closes; the client must return bytes (``decode_responses=False``, the
    default). ``ttl_s=None`` keeps values until Redis evicts them.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        ttl_s: int | None = DEFAULT_TTL_S,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("give exactly one of url and client")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None, not {ttl_s}")
        super().__init__()
        self._owns_client = client is None
        self._client = Redis.from_url(url) if url is not None else client
        self._ttl_s = ttl_s
        self._key_prefix = key_prefix

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("the cache is closed")
        return self._client

    def key(self, model_version: str, feature_hash: str) -> str:
        return f"{self._key_prefix}{model_version}:{feature_hash}"

    async def get(self, model_version: str, feature_hash: str) -> bytes | None:
        data = await self.client.get(self.key(model_version, feature_hash))
        if isinstance(data, str):
            raise TypeError("the Redis client decodes responses: create it with bytes responses")
        return self._count(data)

    async def put(self, model_version: str, feature_hash: str, value: bytes) -> None:
        await self.client.set(self.key(model_version, feature_hash), value, ex=self._ttl_s)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()
