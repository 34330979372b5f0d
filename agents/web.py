"""The worker's web pages: features, Prometheus metrics and the live dashboard.

``GET /features/?ids=a,b,c`` answers the latest feature row of each entity from the
worker's own changelogged table (null for an unknown entity). In embedded mode a worker
serves the entities of the partitions it owns; with several workers, configure Redis.

``GET /metrics`` is the Prometheus text exposition of ``streams.metrics.REGISTRY``;
``GET /dashboard/`` is one self-contained page that polls ``GET /dashboard/data.json``
(``streams.dashboard.dashboard_data``) every second. A timer takes a metrics snapshot
every second for the dashboard's rates and recent quantiles; the model state and the
consumer lag are read just before each answer.

``GET /debug/profile?seconds=20`` (only with ``HEADRACE_DEBUG_PROFILE=1``) samples the
worker's stacks by CPU time for that long and answers them folded (``streams.sampler``);
one profile at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson

from agents.ingest import latest_features
from agents.lifecycle import fleet
from streams.app import app, settings
from streams.dashboard import SnapshotHistory, dashboard_data, dashboard_html
from streams.metrics import METRICS, PROMETHEUS_CONTENT_TYPE, REGISTRY, exposition
from streams.sampler import StackSampler, profile_seconds

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


history = SnapshotHistory()


def consumer_lag() -> dict[tuple[str, int], int]:
    """Per assigned topic partition: the end of the log minus the committed offset."""
    consumer: Any = app.consumer
    lag: dict[tuple[str, int], int] = {}
    # Before the consumer runs (or between assignments) there is nothing to report.
    with contextlib.suppress(Exception):
        committed = consumer._committed_offset  # noqa: SLF001 - faust keeps it, no accessor
        for tp in consumer.assignment():
            end, done = consumer.highwater(tp), committed.get(tp)
            if end is not None and done is not None:
                lag[tp.topic, tp.partition] = max(int(end) - int(done), 0)
    return lag


def refresh() -> None:
    """Read the facts that are not counted as they happen."""
    METRICS.model_state = None if fleet is None or fleet.current is None else fleet.current.state
    METRICS.consumer_lag = consumer_lag()


@app.timer(1.0)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
async def take_snapshot() -> None:
    history.add(METRICS.snapshot(time.time()))


@app.page("/metrics")
async def metrics_page(web: Any, _request: Any) -> Any:
    refresh()
    return web.bytes(exposition(REGISTRY), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


@app.page("/dashboard/")
async def dashboard_page(web: Any, _request: Any) -> Any:
    return web.html(dashboard_html(), headers={"Cache-Control": "no-store"})


@app.page("/dashboard/data.json")
async def dashboard_data_page(web: Any, _request: Any) -> Any:
    refresh()
    if not history.snapshots:
        history.add(METRICS.snapshot(time.time()))
    return web.bytes(
        orjson.dumps(dashboard_data(history, METRICS)),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


_profiling = asyncio.Lock()


@app.page("/debug/profile")
async def profile_page(web: Any, request: Any) -> Any:
    if not settings.debug_profile:
        return web.json({"error": "profiling is off (HEADRACE_DEBUG_PROFILE=1)"}, status=404)
    try:
        seconds = profile_seconds(request.query.get("seconds", "10"))
    except ValueError as error:
        return web.json({"error": str(error)}, status=400)
    if _profiling.locked():
        return web.json({"error": "a profile is being taken"}, status=409)
    async with _profiling:
        sampler = StackSampler()
        sampler.start(seconds)
        try:
            await asyncio.sleep(seconds)
        finally:
            sampler.stop()
    return web.text(sampler.folded(), headers={"Cache-Control": "no-store"})
