"""The prediction cache contract, run here for the LRU backend, and the feature hash.

``PredictionCacheContract`` holds the tests every backend passes; a backend's test class
subclasses it and says how to open a cache (``create_cache``). Here it also runs against
``RedisPredictionCache`` over a dict that speaks GET and SET, which checks the wiring; an
integration test can subclass it with a ``RedisPredictionCache`` on the real Redis.

The tests are coroutines run by ``asyncio.run``, one event loop per test.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.cache import (
    LruPredictionCache,
    PredictionCache,
    RedisPredictionCache,
    feature_hash,
    feature_hashes,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

ContractT = TypeVar("ContractT", bound="PredictionCacheContract")

HASH_A = feature_hash([1.0, 2.0, None])
HASH_B = feature_hash([1.0, 2.0, 0.0])


def in_event_loop(
    test: Callable[[ContractT], Coroutine[Any, Any, None]],
) -> Callable[[ContractT], None]:
    """A synchronous test method that runs the coroutine method in a fresh event loop."""

    def run(self: ContractT) -> None:
        asyncio.run(test(self))

    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    return run


class PredictionCacheContract:
    """What every prediction cache does. Subclasses implement ``create_cache``."""

    def create_cache(self) -> PredictionCache:
        raise NotImplementedError

    @asynccontextmanager
    async def cache(self) -> AsyncIterator[PredictionCache]:
        cache = self.create_cache()
        try:
            yield cache
        finally:
            await cache.close()

    @in_event_loop
    async def test_a_fresh_cache_misses_with_a_hit_rate_of_zero(self) -> None:
        async with self.cache() as cache:
            assert (cache.hits, cache.misses, cache.hit_rate) == (0, 0, 0.0)
            assert await cache.get("v1", HASH_A) is None
            assert (cache.hits, cache.misses, cache.hit_rate) == (0, 1, 0.0)

    @in_event_loop
    async def test_put_then_get_returns_the_bytes(self) -> None:
        value = bytes(range(256))
        async with self.cache() as cache:
            await cache.put("v1", HASH_A, value)
            assert await cache.get("v1", HASH_A) == value

    @in_event_loop
    async def test_an_empty_value_is_a_hit_not_a_miss(self) -> None:
        async with self.cache() as cache:
            await cache.put("v1", HASH_A, b"")
            assert await cache.get("v1", HASH_A) == b""
            assert (cache.hits, cache.misses) == (1, 0)

    @in_event_loop
    async def test_a_later_put_replaces_the_value(self) -> None:
        async with self.cache() as cache:
            await cache.put("v1", HASH_A, b"first")
            await cache.put("v1", HASH_A, b"second")
            assert await cache.get("v1", HASH_A) == b"second"

    @in_event_loop
    async def test_model_versions_are_isolated(self) -> None:
        async with self.cache() as cache:
            await cache.put("v1", HASH_A, b"from v1")
            assert await cache.get("v2", HASH_A) is None
            await cache.put("v2", HASH_A, b"from v2")
            assert await cache.get("v1", HASH_A) == b"from v1"
            assert await cache.get("v2", HASH_A) == b"from v2"

    @in_event_loop
    async def test_feature_hashes_are_isolated(self) -> None:
        async with self.cache() as cache:
            await cache.put("v1", HASH_A, b"none")
            assert await cache.get("v1", HASH_B) is None

    @in_event_loop
    async def test_hits_misses_and_hit_rate_count_lookups(self) -> None:
        async with self.cache() as cache:
            await cache.put("v1", HASH_A, b"x")
            for _ in range(3):
                assert await cache.get("v1", HASH_A) == b"x"
            assert await cache.get("v1", HASH_B) is None
            await cache.put("v1", HASH_B, b"y")  # a store is not a lookup
            assert (cache.hits, cache.misses) == (3, 1)
            assert cache.hit_rate == 0.75


class TestLruPredictionCache(PredictionCacheContract):
    def create_cache(self) -> PredictionCache:
        return LruPredictionCache(max_entries=100)

    def test_the_least_recently_used_entry_is_evicted_first(self) -> None:
        async def scenario() -> None:
            cache = LruPredictionCache(max_entries=3)
            for name in ("a", "b", "c"):
                await cache.put("v1", name, name.encode())
            assert await cache.get("v1", "a") == b"a"  # a is now the newest
            await cache.put("v1", "d", b"d")  # evicts b
            assert len(cache) == 3
            assert await cache.get("v1", "b") is None
            await cache.put("v1", "c", b"c2")  # a store refreshes c too
            await cache.put("v1", "e", b"e")  # evicts a
            assert [await cache.get("v1", name) for name in "acde"] == [None, b"c2", b"d", b"e"]

        asyncio.run(scenario())

    def test_versions_share_the_capacity(self) -> None:
        async def scenario() -> None:
            cache = LruPredictionCache(max_entries=1)
            await cache.put("v1", HASH_A, b"old")
            await cache.put("v2", HASH_A, b"new")
            assert await cache.get("v1", HASH_A) is None
            assert await cache.get("v2", HASH_A) == b"new"

        asyncio.run(scenario())

    def test_the_capacity_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="max_entries"):
            LruPredictionCache(max_entries=0)


class FakeRedis:
    """The two commands the Redis cache sends, over a dict; records each ``SET``'s expiry."""

    def __init__(self, *, decode_responses: bool = False) -> None:
        self.values: dict[str, bytes] = {}
        self.expiries: dict[str, int | None] = {}
        self.decode_responses = decode_responses

    async def get(self, key: str) -> bytes | str | None:
        value = self.values.get(key)
        if value is not None and self.decode_responses:
            return value.decode()
        return value

    async def set(self, key: str, value: bytes, ex: int | None = None) -> bool:
        self.values[key] = value
        self.expiries[key] = ex
        return True


def fake_client(fake: FakeRedis) -> Redis:
    return cast("Redis", fake)


class TestRedisPredictionCacheOverAFakeClient(PredictionCacheContract):
    """The contract over a dict that speaks GET and SET: the real Redis is in integration."""

    def setup_method(self) -> None:
        self.fake = FakeRedis()

    def create_cache(self) -> PredictionCache:
        return RedisPredictionCache(client=fake_client(self.fake), key_prefix="p:", ttl_s=60)

    def test_a_value_is_set_under_its_key_with_the_ttl(self) -> None:
        async def scenario() -> None:
            cache = RedisPredictionCache(client=fake_client(self.fake), key_prefix="p:", ttl_s=60)
            await cache.put("fraud-v3", HASH_A, b"0.93")
            await cache.close()  # the caller's client stays open

        asyncio.run(scenario())
        assert self.fake.values == {f"p:fraud-v3:{HASH_A}": b"0.93"}
        assert self.fake.expiries == {f"p:fraud-v3:{HASH_A}": 60}

    def test_a_client_that_decodes_responses_is_refused(self) -> None:
        fake = FakeRedis(decode_responses=True)

        async def scenario() -> None:
            cache = RedisPredictionCache(client=fake_client(fake))
            await cache.put("v1", HASH_A, b"0.5")
            with pytest.raises(TypeError, match="decodes responses"):
                await cache.get("v1", HASH_A)

        asyncio.run(scenario())


class TestRedisPredictionCacheArguments:
    def test_keys_are_prefix_version_and_hash(self) -> None:
        cache = RedisPredictionCache("redis://localhost:1", key_prefix="p:")
        assert cache.key("fraud-v3", HASH_A) == f"p:fraud-v3:{HASH_A}"
        asyncio.run(cache.close())
        with pytest.raises(RuntimeError, match="closed"):
            _ = cache.client

    @pytest.mark.parametrize("ttl_s", [0, -1])
    def test_a_ttl_must_be_positive(self, ttl_s: int) -> None:
        with pytest.raises(ValueError, match="ttl_s"):
            RedisPredictionCache("redis://localhost:1", ttl_s=ttl_s)

    def test_exactly_one_of_url_and_client(self) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            RedisPredictionCache()


class TestFeatureHash:
    def test_the_hash_of_a_fixed_vector_is_pinned(self) -> None:
        # A change here changes every cache key: change the encoding's version with it.
        named = {"amount": 12.5, "count_1h": 3.0, "std": None}
        assert feature_hash(named) == "127b0cef08988a283bd2311dd7a3f196"
        assert feature_hash([12.5, 3.0, None]) == "35a3baf8c5fe6f67cc89c316776c0c68"

    def test_the_encoding_is_the_documented_one(self) -> None:
        def double(value: float) -> bytes:
            return b"\x01" + struct.pack(">d", value)

        def name(text: str) -> bytes:
            return struct.pack(">I", len(text.encode())) + text.encode()

        def blake2b(data: bytes) -> str:
            return hashlib.blake2b(data, digest_size=16, person=b"headrace-fhash1").hexdigest()

        positional = b"S" + struct.pack(">I", 3) + double(12.5) + double(3.0) + b"\x00"
        assert feature_hash([12.5, 3.0, None]) == blake2b(positional)
        named = b"M" + struct.pack(">I", 2) + name("ünï") + double(-1.5) + name("b") + b"\x00"
        assert feature_hash({"ünï": -1.5, "b": None}) == blake2b(named)

    def test_none_zero_and_nan_are_different_values(self) -> None:
        hashes = {feature_hash([value]) for value in (None, 0.0, math.nan, 1.0)}
        assert len(hashes) == 4

    def test_negative_zero_hashes_as_zero(self) -> None:
        assert feature_hash([-0.0]) == feature_hash([0.0])
        assert feature_hash({"x": -0.0}) == feature_hash({"x": 0.0})

    def test_every_nan_hashes_as_one(self) -> None:
        payload_nan = struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0]
        assert math.isnan(payload_nan)
        for other_nan in (payload_nan, -math.nan, math.inf - math.inf):
            assert feature_hash([other_nan]) == feature_hash([math.nan])

    def test_an_int_hashes_as_its_float(self) -> None:
        assert feature_hash([3, 0]) == feature_hash([3.0, 0.0])

    def test_key_order_names_and_kind_count(self) -> None:
        forward = feature_hash({"a": 1.0, "b": 2.0})
        assert feature_hash({"b": 2.0, "a": 1.0}) != forward
        assert feature_hash({"a": 1.0, "c": 2.0}) != forward
        assert feature_hash([1.0, 2.0]) != forward
        assert feature_hash({"ab": 1.0}) != feature_hash({"a": 1.0, "b": 1.0})
        assert feature_hash([]) != feature_hash({})

    @given(st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=12))
    def test_equal_vectors_hash_equal_and_different_ones_differ(
        self, values: list[float | None]
    ) -> None:
        assert feature_hash(values) == feature_hash(tuple(values))
        named = {f"f{index}": value for index, value in enumerate(values)}
        assert feature_hash(named) == feature_hash(dict(named))
        changed = [*values, 1.0]
        assert feature_hash(changed) != feature_hash(values)
        if values and values[0] is not None:
            nudged = [math.nextafter(values[0], math.inf), *values[1:]]
            if nudged[0] != values[0]:
                assert feature_hash(nudged) != feature_hash(values)


NAMES = ("amount", "count_1h", "ünï", "std_24h")
SPECIAL = (None, math.nan, -math.nan, -0.0, 0.0, math.inf, -math.inf, 3, True)


class TestFeatureHashes:
    """``feature_hashes`` is ``feature_hash`` over a batch: the same digest for every row."""

    @given(
        st.lists(
            st.lists(
                st.one_of(st.none(), st.floats(), st.integers(-(2**53), 2**53)),
                min_size=len(NAMES),
                max_size=len(NAMES),
            ),
            max_size=40,
        )
    )
    def test_every_row_hashes_as_it_does_alone(self, rows: list[list[float | None]]) -> None:
        named = [dict(zip(NAMES, row, strict=True)) for row in rows]
        assert feature_hashes(named) == [feature_hash(row) for row in named]

    def test_none_nan_signed_zero_and_ints_in_a_batch(self) -> None:
        rows = [
            dict(zip(NAMES, (value, other, value, 1.5), strict=True))
            for value in SPECIAL
            for other in SPECIAL
        ]
        hashes = feature_hashes(rows)
        assert hashes == [feature_hash(row) for row in rows]
        assert hashes[0] != hashes[SPECIAL.index(math.nan)]  # None is not NaN
        zero, negative_zero = SPECIAL.index(0.0), SPECIAL.index(-0.0)
        assert hashes[zero * len(SPECIAL)] == hashes[negative_zero * len(SPECIAL)]

    def test_rows_of_other_names_or_order_take_the_row_path(self) -> None:
        base: list[dict[str, float | None]] = [
            dict(zip(NAMES, (float(i), 2.0, None, 4.0), strict=True)) for i in range(12)
        ]
        odd: list[dict[str, float | None]] = [
            {"count_1h": 2.0, "amount": 1.0, "ünï": None, "std_24h": 4.0},  # reordered
            {"amount": 1.0, "count_1h": 2.0},  # fewer names
            {**base[0], "extra": 1.0},  # more names
            {"amount": 1.0, "count_1h": 2.0, "other": None, "std_24h": 4.0},  # another name
        ]
        rows = [*base[:5], *odd, *base[5:]]
        assert feature_hashes(rows) == [feature_hash(row) for row in rows]
        assert len(set(feature_hashes(rows))) == len(rows)

    def test_a_value_that_is_no_number_fails_as_alone(self) -> None:
        rows: list[dict[str, Any]] = [
            dict(zip(NAMES, (1.0, 2.0, 3.0, 4.0), strict=True)) for _ in range(10)
        ]
        rows[4]["std_24h"] = "high"
        with pytest.raises(ValueError, match="could not convert"):
            feature_hash(rows[4])
        with pytest.raises(ValueError, match="could not convert"):
            feature_hashes(rows)

    def test_small_and_empty_batches(self) -> None:
        assert feature_hashes([]) == []
        rows: list[dict[str, float | None]] = [{"a": 1.0}, {"a": None}]
        assert feature_hashes(rows) == [feature_hash(row) for row in rows]
