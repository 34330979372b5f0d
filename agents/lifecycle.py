"""What the worker serves: a fixed model directory, or the fold of ``model.events``.

With ``HEADRACE_MODEL_DIR`` the worker serves that directory as the champion, always.
With ``HEADRACE_SERVE_REGISTRY=1`` a task reads ``model.events`` in full from the
beginning (its own consumer, no group: every worker reads every event), folds it, and
after each change has the fleet load what the state routes to, from the registry, hash
verified. A version that fails to load is recorded as a ``load_failed`` event and never
routed to. With neither, the worker does not score.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.cache import LruPredictionCache, PredictionCache, RedisPredictionCache
from models.fleet import ModelFleet, ServingSet, verified_download
from models.lifecycle import ModelState, VersionInfo, decode_event
from models.router import ModelRouter
from models.scoring import load_served_model, model_version
from models.serving import ChunkScorer
from streams.app import app, settings
from streams.metrics import METRICS

if TYPE_CHECKING:
    from headrace.lifecycle_commands import LifecycleCommands
    from models.registry import ModelRegistry

log = structlog.get_logger(__name__)

# Repeated feature vectors (retries, replays) are recent: 10,000 entries (about 15 MB).
CACHE_ENTRIES = 10_000
POLL_MS = 200
WORKER = f"{socket.gethostname()}:{os.getpid()}:{settings.app_id}"


def prediction_cache() -> PredictionCache | None:
    if settings.prediction_cache == "redis":
        return RedisPredictionCache(
            settings.redis_url, key_prefix=f"{settings.app_id}:predictions:"
        )
    if settings.prediction_cache == "memory":
        return LruPredictionCache(CACHE_ENTRIES)
    return None


def scorer_for(directory: Path, version: str) -> ChunkScorer:
    loaded = load_served_model(directory, version, settings.backend or None)
    log.info("score.model_loaded", model=loaded.name, version=version, backend=loaded.backend.name)
    return ChunkScorer(loaded, max_batch=settings.score_max_batch, cache=prediction_cache())


def fixed_fleet(directory: Path) -> ModelFleet:
    """One directory, champion for good."""
    version = model_version(directory)
    info = VersionInfo(version, "", str(directory), "", 0)
    state = ModelState(settings.model_name, versions={version: info}, champion=version)
    fixed = ModelFleet(lambda _: scorer_for(directory, version))
    fixed.current = ServingSet(state, state, {version: scorer_for(directory, version)})
    fixed.ready.set()
    return fixed


def registry_fleet(commands: LifecycleCommands, registry: ModelRegistry) -> ModelFleet:
    cache_dir = settings.data_dir / settings.app_id / "models"

    def load(info: VersionInfo) -> ChunkScorer:
        directory = verified_download(registry, settings.model_name, info, cache_dir)
        return scorer_for(directory, info.version)

    async def record_failure(version: str, error: str) -> None:
        await commands.load_failed(version, error=error, worker=WORKER)

    return ModelFleet(load, on_failure=record_failure)


fleet: ModelFleet | None = None
commands: LifecycleCommands | None = None  # the worker's own lifecycle changes go here
if settings.model_dir:
    fleet = fixed_fleet(Path(settings.model_dir))
elif settings.serve_registry:
    # mlflow is imported only by workers that serve from the registry.
    from headrace.lifecycle_commands import LifecycleCommands
    from models.registry import MlflowRegistry

    model_registry = MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts)
    commands = LifecycleCommands(settings, model_registry, actor=f"worker:{WORKER}")
    fleet = registry_fleet(commands, model_registry)
    following = fleet

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def follow_model_events() -> None:
        """Fold ``model.events`` from the beginning, for as long as the worker runs."""
        from headrace.model_log import ensure_log_topic  # noqa: PLC0415

        await ensure_log_topic(settings)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(settings.topics.model_events) or {0}
            assigned = [TopicPartition(settings.topics.model_events, p) for p in partitions]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            router = ModelRouter()
            while True:
                fetched = await consumer.getmany(*assigned, timeout_ms=POLL_MS)
                changed = False
                for records in fetched.values():
                    for record in records:
                        try:
                            event = decode_event(record.value or b"")
                        except ValueError as error:
                            log.warning(
                                "lifecycle.undecodable", offset=record.offset, error=str(error)
                            )
                            continue
                        if event.model == settings.model_name and router.apply(event):
                            METRICS.model_event(event)
                            changed = True
                if changed:
                    await following.sync(router.state(settings.model_name))
        finally:
            await consumer.stop()


# Where a fleet serves and HEADRACE_SCORE_IN_INGEST=1, the ingest agent scores the batches
# it reads and writes the online store itself; no agent reads ``features`` back to score.
SCORE_IN_INGEST = settings.score_in_ingest and fleet is not None
