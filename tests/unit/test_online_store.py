"""The online store contract, run here for the in-memory and mapping backends.

``OnlineStoreContract`` holds the tests every backend passes; a backend's test class
subclasses it and says how to open a store. Two mixins add what only some backends have:
``ExpiringOnlineStoreContract`` (a time to live) and ``EncodedOnlineStoreContract`` (rows
stored as bytes, which can be corrupt). ``tests/integration/test_online_store_redis.py``
runs the same classes against the real Redis.

The tests are coroutines run by ``asyncio.run``, one event loop per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.online_store import (
    CorruptFeatureRowError,
    InMemoryOnlineStore,
    MappingOnlineStore,
    OnlineStore,
    RedisOnlineStore,
    latest_per_entity,
)
from tables.rows import FeatureRow

ContractT = TypeVar("ContractT", bound="OnlineStoreContract")


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


def make_row(
    entity_id: str,
    event_time: int = 1_767_225_600_000,
    values: dict[str, float | None] | None = None,
    event_id: str | None = None,
) -> FeatureRow:
    return FeatureRow(
        entity_id=entity_id,
        event_time=event_time,
        event_id=event_id or f"ev-{entity_id}-{event_time}",
        feature_version="v-test",
        values={"amount_mean_1h": 12.5, "count_1h": 3.0} if values is None else values,
    )


AWKWARD_VALUES: dict[str, float | None] = {
    "count_1h": 3.0,
    "amount_mean_1h": 0.1 + 0.2,
    "amount_std_1h": None,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "negative": -273.15,
    "negative_zero": -0.0,
    "one_third": 1 / 3,
    "seconds_since_first": None,
    "ünïcode_näme": 42.0,
}


class OnlineStoreContract:
    """What every online store does. Subclasses implement ``create_store``."""

    def create_store(self) -> OnlineStore:
        raise NotImplementedError

    @asynccontextmanager
    async def store(self) -> AsyncIterator[OnlineStore]:
        store = self.create_store()
        try:
            yield store
        finally:
            await store.close()

    @in_event_loop
    async def test_missing_entity_is_none(self) -> None:
        async with self.store() as store:
            assert await store.get("card-nobody") is None

    @in_event_loop
    async def test_put_then_get_round_trips_exactly(self) -> None:
        row = make_row("card-1", values=AWKWARD_VALUES)
        async with self.store() as store:
            await store.put_many([row])
            stored = await store.get("card-1")
        assert stored == row
        assert stored is not None
        assert list(stored.values.items()) == list(AWKWARD_VALUES.items())  # order kept
        assert all(
            type(stored.values[name]) is type(value) for name, value in AWKWARD_VALUES.items()
        )
        assert str(stored.values["negative_zero"]) == "-0.0"

    @in_event_loop
    async def test_a_row_with_no_values_round_trips(self) -> None:
        row = make_row("card-empty", values={})
        async with self.store() as store:
            await store.put_many([row])
            assert await store.get("card-empty") == row

    @in_event_loop
    async def test_later_put_overwrites(self) -> None:
        first = make_row("card-1", event_time=1_000, values={"count_1h": 1.0})
        second = make_row("card-1", event_time=2_000, values={"count_1h": 2.0})
        async with self.store() as store:
            await store.put_many([first])
            await store.put_many([second])
            assert await store.get("card-1") == second

    @in_event_loop
    async def test_last_row_of_an_entity_wins_within_a_batch(self) -> None:
        rows = [
            make_row("card-1", event_time=1_000, values={"count_1h": 1.0}),
            make_row("card-2", event_time=1_500, values={"count_1h": 7.0}),
            make_row("card-1", event_time=2_000, values={"count_1h": 2.0}),
            make_row("card-1", event_time=3_000, values={"count_1h": 3.0}),
        ]
        async with self.store() as store:
            await store.put_many(rows)
            assert await store.get("card-1") == rows[3]
            assert await store.get("card-2") == rows[1]

    @in_event_loop
    async def test_entities_are_independent(self) -> None:
        one, two = make_row("card-1"), make_row("card-2")
        async with self.store() as store:
            await store.put_many([one, two])
            await store.put_many([make_row("card-1", event_time=9_000)])
            assert await store.get("card-2") == two

    @in_event_loop
    async def test_get_many_keeps_the_order_asked_with_none_for_unknown(self) -> None:
        rows = [make_row(f"card-{index}", values={"count_1h": float(index)}) for index in range(5)]
        asked = ["card-3", "card-nobody", "card-0", "card-3", "card-4", "card-else"]
        async with self.store() as store:
            await store.put_many(rows)
            found = await store.get_many(asked)
        assert found == [rows[3], None, rows[0], rows[3], rows[4], None]

    @in_event_loop
    async def test_get_many_of_nothing_is_empty(self) -> None:
        async with self.store() as store:
            assert await store.get_many([]) == []
            await store.put_many([make_row("card-1")])
            assert await store.get_many([]) == []

    @in_event_loop
    async def test_put_many_of_nothing_writes_nothing(self) -> None:
        async with self.store() as store:
            await store.put_many([])
            assert await store.get_many(["card-1"]) == [None]

    @in_event_loop
    async def test_non_finite_values_are_refused_and_nothing_is_written(self) -> None:
        good = make_row("card-good")
        for value in (float("nan"), float("inf"), float("-inf")):
            bad = make_row("card-bad", values={"count_1h": 1.0, "amount_mean_1h": value})
            async with self.store() as store:
                with pytest.raises(ValueError, match=r"amount_mean_1h.*card-bad"):
                    await store.put_many([good, bad])
                assert await store.get_many(["card-good", "card-bad"]) == [None, None]

    @in_event_loop
    async def test_a_non_finite_value_overwritten_in_the_batch_is_fine(self) -> None:
        bad = make_row("card-1", values={"count_1h": float("nan")})
        good = make_row("card-1", values={"count_1h": 1.0})
        async with self.store() as store:
            await store.put_many([bad, good])
            assert await store.get("card-1") == good


class ExpiringOnlineStoreContract(OnlineStoreContract):
    """Stores with a time to live: a row is served until ``ttl_s`` after its last write."""

    ttl_s = 1

    def create_expiring_store(self, ttl_s: int) -> OnlineStore:
        raise NotImplementedError

    async def let_time_pass(self, ms: int) -> None:
        raise NotImplementedError

    @asynccontextmanager
    async def expiring_store(self) -> AsyncIterator[OnlineStore]:
        store = self.create_expiring_store(self.ttl_s)
        try:
            yield store
        finally:
            await store.close()

    @in_event_loop
    async def test_a_row_is_served_before_its_ttl(self) -> None:
        row = make_row("card-1")
        async with self.expiring_store() as store:
            await store.put_many([row])
            await self.let_time_pass(self.ttl_s * 1000 // 2)
            assert await store.get("card-1") == row
            assert await store.get_many(["card-1"]) == [row]

    @in_event_loop
    async def test_a_row_is_gone_after_its_ttl(self) -> None:
        rows = [make_row("card-1"), make_row("card-2")]
        async with self.expiring_store() as store:
            await store.put_many(rows)
            await self.let_time_pass(self.ttl_s * 1000 + 200)
            assert await store.get("card-1") is None
            assert await store.get_many(["card-1", "card-2"]) == [None, None]

    @in_event_loop
    async def test_a_write_restarts_the_ttl(self) -> None:
        ttl_ms = self.ttl_s * 1000
        second = make_row("card-1", event_time=2_000)
        async with self.expiring_store() as store:
            await store.put_many([make_row("card-1", event_time=1_000)])
            await self.let_time_pass(ttl_ms * 6 // 10)
            await store.put_many([second])
            await self.let_time_pass(ttl_ms * 6 // 10)  # past the first write's expiry
            assert await store.get("card-1") == second


class EncodedOnlineStoreContract(OnlineStoreContract):
    """Stores that keep rows as bytes: a corrupt value is an error naming its key."""

    async def store_raw(self, entity_id: str, data: bytes) -> str:
        """Put ``data`` where the row of ``entity_id`` would go; return the key it went under."""
        raise NotImplementedError

    @in_event_loop
    async def test_a_value_that_is_not_json_is_an_error_naming_the_key(self) -> None:
        key = await self.store_raw("card-1", b"\x00not json")
        async with self.store() as store:
            with pytest.raises(CorruptFeatureRowError, match="invalid JSON") as raised:
                await store.get("card-1")
            assert raised.value.key == key
            assert repr(key) in str(raised.value)
            with pytest.raises(CorruptFeatureRowError):
                await store.get_many(["card-nobody", "card-1"])

    @in_event_loop
    async def test_json_that_is_not_a_row_is_an_error_naming_the_key(self) -> None:
        key = await self.store_raw("card-1", orjson.dumps({"entity_id": "card-1"}))
        async with self.store() as store:
            with pytest.raises(CorruptFeatureRowError, match="KeyError") as raised:
                await store.get("card-1")
            assert raised.value.key == key

    @in_event_loop
    async def test_the_row_of_another_entity_is_an_error(self) -> None:
        key = await self.store_raw("card-1", make_row("card-2").to_json())
        async with self.store() as store:
            with pytest.raises(CorruptFeatureRowError, match="belongs to entity 'card-2'"):
                await store.get("card-1")
            with pytest.raises(CorruptFeatureRowError) as raised:
                await store.get_many(["card-1"])
            assert raised.value.key == key


# --------------------------------------------------------------------------------------------
# The backends with no network


class ManualClock:
    """Epoch milliseconds that move only when a test moves them."""

    def __init__(self, now_ms: int = 1_767_225_600_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class TestInMemoryOnlineStore(ExpiringOnlineStoreContract):
    def setup_method(self) -> None:
        self.clock = ManualClock()

    def create_store(self) -> OnlineStore:
        return InMemoryOnlineStore(now_ms=self.clock)

    def create_expiring_store(self, ttl_s: int) -> OnlineStore:
        return InMemoryOnlineStore(ttl_ms=ttl_s * 1000, now_ms=self.clock)

    async def let_time_pass(self, ms: int) -> None:
        self.clock.now_ms += ms

    def test_a_row_expires_at_exactly_its_ttl(self) -> None:
        async def scenario() -> None:
            store = InMemoryOnlineStore(ttl_ms=100, now_ms=self.clock)
            await store.put_many([make_row("card-1")])
            self.clock.now_ms += 99
            assert await store.get("card-1") is not None
            self.clock.now_ms += 1
            assert await store.get("card-1") is None

        asyncio.run(scenario())

    def test_stored_values_do_not_follow_the_callers_dict(self) -> None:
        values: dict[str, float | None] = {"count_1h": 1.0}

        async def scenario() -> FeatureRow | None:
            store = InMemoryOnlineStore(now_ms=self.clock)
            await store.put_many([make_row("card-1", values=values)])
            values["count_1h"] = 99.0
            return await store.get("card-1")

        stored = asyncio.run(scenario())
        assert stored is not None
        assert stored.values == {"count_1h": 1.0}

    def test_a_ttl_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="ttl_ms"):
            InMemoryOnlineStore(ttl_ms=0)


class TestMappingOnlineStore(EncodedOnlineStoreContract):
    def setup_method(self) -> None:
        self.mapping: dict[str, bytes] = {}

    def create_store(self) -> OnlineStore:
        return MappingOnlineStore(self.mapping)

    async def store_raw(self, entity_id: str, data: bytes) -> str:
        self.mapping[entity_id] = data
        return entity_id

    def test_rows_are_stored_as_row_json_under_the_entity_id(self) -> None:
        row = make_row("card-1")
        asyncio.run(MappingOnlineStore(self.mapping).put_many([row]))
        assert self.mapping == {"card-1": row.to_json()}

    def test_close_leaves_the_callers_mapping_alone(self) -> None:
        store = MappingOnlineStore(self.mapping)
        asyncio.run(store.put_many([make_row("card-1")]))
        asyncio.run(store.close())
        assert list(self.mapping) == ["card-1"]


# --------------------------------------------------------------------------------------------
# The pure parts, and the codec by round trip


def test_a_redis_store_takes_exactly_one_of_url_and_client() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RedisOnlineStore()
    with pytest.raises(ValueError, match="ttl_s"):
        RedisOnlineStore("redis://127.0.0.1:1/0", ttl_s=0)


def test_latest_per_entity_keeps_the_last_row_in_first_seen_order() -> None:
    rows = [make_row("b", 1), make_row("a", 2), make_row("b", 3)]
    assert latest_per_entity(rows) == {"b": rows[2], "a": rows[1]}


feature_names = st.text(min_size=1, max_size=20)
feature_values = st.none() | st.floats(allow_nan=False, allow_infinity=False)
rows_strategy = st.builds(
    FeatureRow,
    entity_id=st.text(max_size=30),
    event_time=st.integers(min_value=0, max_value=2**53),
    event_id=st.text(max_size=30),
    feature_version=st.text(max_size=16),
    values=st.dictionaries(feature_names, feature_values, max_size=40),
)


@given(st.lists(rows_strategy, max_size=8))
def test_the_mapping_store_returns_the_last_row_written_per_entity(
    rows: list[FeatureRow],
) -> None:
    async def scenario() -> list[FeatureRow | None]:
        store = MappingOnlineStore({})
        await store.put_many(rows)
        return await store.get_many([row.entity_id for row in rows])

    expected = latest_per_entity(rows)
    found = asyncio.run(scenario())
    assert found == [expected[row.entity_id] for row in rows]
    for row, stored in zip(rows, found, strict=True):
        assert stored is not None
        assert list(stored.values) == list(expected[row.entity_id].values)
