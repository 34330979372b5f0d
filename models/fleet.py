"""The model versions a worker serves, swapped as the lifecycle log moves.

``ModelFleet.sync(state)`` is called with the folded ``ModelState`` after each change on
``model.events``. It loads every version the state routes to (champion, canary, shadow)
that is not loaded yet, through the ``loader`` (download from the registry, verify the
artifact hash, build the backend), and then publishes one immutable ``ServingSet``. The
scoring agent reads ``fleet.current`` once per chunk, so a swap happens between chunks:
no record is dropped, and none is scored twice. A ``calibration_changed`` event that moves
a version's ``conformal_alpha`` (adaptive conformal inference) swaps in the same model
with its sets at that level.

A version that fails to load or verify is never routed to: the serving set's
``routing`` state leaves it out (a failed canary or shadow is dropped; a failed new
champion leaves the previous champion serving), and the failure is reported through
``on_failure`` so the caller records it as a ``load_failed`` event.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from models.lifecycle import ModelState, VersionInfo
from models.registry import ModelRegistry, artifact_hash
from models.router import Route, route
from models.serving import ChunkScorer

log = structlog.get_logger(__name__)

Loader = Callable[[VersionInfo], ChunkScorer]
FailureHook = Callable[[str, str], Awaitable[None]]  # (version, error)


@dataclass(frozen=True)
class ServingSet:
    """What serves now: the log's state, the state routed by, the loaded versions."""

    state: ModelState  # as folded from the log
    routing: ModelState  # the state with versions that did not load left out
    scorers: Mapping[str, ChunkScorer] = field(default_factory=dict)

    def route(self, key: str) -> Route | None:
        return route(self.routing, key)


def routable_state(
    state: ModelState, loaded: Mapping[str, object], previous_champion: str | None
) -> ModelState:
    """``state`` with only loaded versions in its slots (see the module doc)."""
    champion = state.champion
    if champion is not None and champion not in loaded:
        champion = previous_champion if previous_champion in loaded else None
    canary = state.canary if state.canary in loaded else None
    shadow = state.shadow if state.shadow in loaded else None
    return replace(
        state,
        champion=champion,
        canary=canary,
        canary_percent=state.canary_percent if canary else 0.0,
        shadow=shadow,
        shadow_fraction=state.shadow_fraction if shadow else 0.0,
    )


class ModelFleet:
    def __init__(self, loader: Loader, *, on_failure: FailureHook | None = None) -> None:
        self._loader = loader
        self._on_failure = on_failure
        self._failed: set[str] = set()
        self.current: ServingSet | None = None
        self.ready = asyncio.Event()  # set once some version serves

    async def sync(self, state: ModelState) -> ServingSet:
        """Load what ``state`` routes to, then publish the new serving set."""
        previous = self.current
        scorers = dict(previous.scorers) if previous else {}
        wanted = [v for v in (state.champion, state.canary, state.shadow) if v is not None]
        for version in wanted:
            if version in scorers or version in self._failed:
                continue
            info = state.versions[version]
            try:
                scorers[version] = await asyncio.to_thread(self._loader, info)
            except Exception as error:  # noqa: BLE001 - any failure to load is recorded
                self._failed.add(version)
                log.warning("fleet.load_failed", version=version, error=str(error))
                if self._on_failure is not None:
                    await self._on_failure(version, f"{type(error).__name__}: {error}")
        for version, scorer in scorers.items():
            alpha = state.calibration.get(version, {}).get("conformal_alpha")
            if alpha != scorer.alpha:
                scorers[version] = scorer.recalibrated(alpha)
        previous_champion = previous.routing.champion if previous else None
        routing = routable_state(state, scorers, previous_champion)
        serving_versions = {routing.champion, routing.canary, routing.shadow}
        keep = {v: s for v, s in scorers.items() if v in serving_versions}
        serving = ServingSet(state, routing, keep)
        self.current = serving
        if serving.routing.champion or serving.routing.canary:
            self.ready.set()
        log.info(
            "fleet.synced",
            sequence=state.sequence,
            champion=serving.routing.champion,
            canary=serving.routing.canary,
            canary_percent=serving.routing.canary_percent,
            shadow=serving.routing.shadow,
        )
        return serving


class ArtifactMismatchError(RuntimeError):
    """A downloaded model's files do not hash to what its registered event says."""


def verified_download(
    registry: ModelRegistry, name: str, info: VersionInfo, cache_dir: Path
) -> Path:
    """The version's files under ``cache_dir/<version>``, downloaded once and verified.

    A cached copy is used only when it still hashes to ``info.artifact_hash``; a fresh
    download that does not is deleted and refused.
    """
    destination = cache_dir / info.version
    if destination.exists():
        if artifact_hash(destination) == info.artifact_hash:
            return destination
        shutil.rmtree(destination)
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = cache_dir / f".{info.version}.{uuid.uuid4().hex}.download"
    try:
        registry.download(name, info.registry_version, scratch)
        got = artifact_hash(scratch)
        if got != info.artifact_hash:
            raise ArtifactMismatchError(
                f"version {info.version}: artifacts hash to {got[:12]}, "
                f"the registered event says {info.artifact_hash[:12]}"
            )
        scratch.rename(destination)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return destination
