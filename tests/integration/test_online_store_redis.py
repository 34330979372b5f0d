"""The online store contract against the real Redis, and what only Redis does.

Every test writes under its own key prefix (a uuid) and deletes its keys afterwards, so
tests do not see each other's rows or those of a worker sharing the server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio import Redis

from headrace import infra
from tables.online_store import OnlineStore, RedisOnlineStore
from tests.unit.test_online_store import (
    EncodedOnlineStoreContract,
    ExpiringOnlineStoreContract,
    make_row,
)

pytestmark = pytest.mark.integration


class TestRedisOnlineStore(ExpiringOnlineStoreContract, EncodedOnlineStoreContract):
    @pytest.fixture(autouse=True)
    def own_key_prefix(self, infrastructure: list[infra.ServiceStatus]) -> Iterator[None]:
        self.url = next(service.address for service in infrastructure if service.name == "redis")
        self.key_prefix = f"test-online:{uuid.uuid4().hex}:"
        self.redis = redis.Redis.from_url(self.url)
        try:
            yield
            leftovers = list(self.redis.scan_iter(match=f"{self.key_prefix}*"))
            if leftovers:
                self.redis.delete(*leftovers)
        finally:
            self.redis.close()

    def create_store(self) -> OnlineStore:
        return RedisOnlineStore(self.url, key_prefix=self.key_prefix)

    def create_expiring_store(self, ttl_s: int) -> OnlineStore:
        return RedisOnlineStore(self.url, key_prefix=self.key_prefix, ttl_s=ttl_s)

    async def let_time_pass(self, ms: int) -> None:
        await asyncio.sleep(ms / 1000)

    async def store_raw(self, entity_id: str, data: bytes) -> str:
        key = self.key_prefix + entity_id
        self.redis.set(key, data)
        return key

    def test_rows_are_row_json_under_the_prefix_with_the_default_ttl(self) -> None:
        row = make_row("card-1")

        async def scenario() -> None:
            store = RedisOnlineStore(self.url, key_prefix=self.key_prefix)
            await store.put_many([row])
            await store.close()

        asyncio.run(scenario())
        key = f"{self.key_prefix}card-1"
        assert list(self.redis.scan_iter(match=f"{self.key_prefix}*")) == [key.encode()]
        assert self.redis.get(key) == row.to_json()
        assert 86_400 - 5 <= self.redis.ttl(key) <= 86_400

    def test_without_a_ttl_rows_do_not_expire(self) -> None:
        async def scenario() -> None:
            store = RedisOnlineStore(self.url, key_prefix=self.key_prefix, ttl_s=None)
            await store.put_many([make_row("card-1")])
            await store.close()

        asyncio.run(scenario())
        assert self.redis.ttl(f"{self.key_prefix}card-1") == -1

    def test_a_server_that_forgot_the_write_script_is_written_to(self) -> None:
        """A batch is one script call (EVALSHA); a restarted Redis has no scripts, and the
        next batch loads it again instead of failing."""

        async def scenario() -> list[object]:
            store = RedisOnlineStore(self.url, key_prefix=self.key_prefix)
            try:
                await store.put_many([make_row("card-1")])
                self.redis.script_flush()
                await store.put_many([make_row("card-2")])
                return list(await store.get_many(["card-1", "card-2"]))
            finally:
                await store.close()

        assert asyncio.run(scenario()) == [make_row("card-1"), make_row("card-2")]

    def test_a_closed_store_refuses_to_write(self) -> None:
        async def scenario() -> None:
            store = RedisOnlineStore(self.url, key_prefix=self.key_prefix)
            await store.put_many([make_row("card-1")])
            await store.close()
            with pytest.raises(RuntimeError, match="closed"):
                await store.put_many([make_row("card-2")])

        asyncio.run(scenario())
        assert not self.redis.exists(f"{self.key_prefix}card-2")

    def test_a_shared_client_is_left_open(self) -> None:
        async def scenario() -> bool:
            client = Redis.from_url(self.url)
            try:
                store = RedisOnlineStore(client=client, key_prefix=self.key_prefix)
                await store.put_many([make_row("card-1")])
                await store.close()
                return bool(await client.exists(f"{self.key_prefix}card-1"))
            finally:
                await client.aclose()

        assert asyncio.run(scenario())

    def test_a_closed_store_refuses_work(self) -> None:
        async def scenario() -> None:
            store = RedisOnlineStore(self.url, key_prefix=self.key_prefix)
            await store.close()
            await store.close()  # closing twice is harmless
            with pytest.raises(RuntimeError, match="closed"):
                await store.get("card-1")

        asyncio.run(scenario())

    def test_a_large_batch_round_trips_in_order(self) -> None:
        rows = [make_row(f"card-{index:05d}") for index in range(2_000)]
        asked = [f"card-{index:05d}" for index in range(1_999, -1, -1)] + ["card-nobody"]

        async def scenario() -> list[object]:
            store = RedisOnlineStore(self.url, key_prefix=self.key_prefix)
            try:
                await store.put_many(rows)
                return list(await store.get_many(asked))
            finally:
                await store.close()

        assert asyncio.run(scenario()) == [*rows[::-1], None]
