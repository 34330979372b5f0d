"""One read path for online features, whichever store serves them.

With Redis configured (the default), rows come from Redis in one round trip; without it
(``HEADRACE_REDIS_URL=``), from the worker's own table through its web endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
import orjson

from streams.settings import Settings
from tables.online_store import RedisOnlineStore
from tables.rows import FeatureRow


async def online_features(
    settings: Settings,
    entity_ids: Sequence[str],
    *,
    worker_url: str | None = None,
) -> list[FeatureRow | None]:
    if not entity_ids:
        return []
    if settings.redis_url:
        store = RedisOnlineStore(settings.redis_url, key_prefix=settings.online_key_prefix)
        try:
            return await store.get_many(entity_ids)
        finally:
            await store.close()
    base = worker_url or f"http://127.0.0.1:{settings.web_port}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/features/", params={"ids": ",".join(entity_ids)}) as response,
    ):
        response.raise_for_status()
        body = orjson.loads(await response.read())
    return [None if row is None else FeatureRow.from_dict(row) for row in body["rows"]]
