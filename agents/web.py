"""The worker's feature endpoint: the embedded online store when no Redis is configured.

``GET /features/?ids=a,b,c`` answers the latest feature row of each entity from the
worker's own changelogged table (null for an unknown entity). In embedded mode a worker
serves the entities of the partitions it owns; with several workers, configure Redis.
"""

from __future__ import annotations

from typing import Any

import orjson

from agents.ingest import latest_features
from streams.app import app

MAX_IDS = 1_000


@app.page("/features/")
async def features_page(web: Any, request: Any) -> Any:
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    if not ids or len(ids) > MAX_IDS:
        return web.json({"error": f"give 1 to {MAX_IDS} comma-separated ids"}, status=400)
    rows = []
    for entity_id in ids:
        stored = latest_features.get(entity_id)
        rows.append(None if stored is None else orjson.loads(stored))
    return web.json({"rows": rows})
