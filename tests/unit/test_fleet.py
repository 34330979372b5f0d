"""The fleet: swaps to what the state routes to, never to a version that did not load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from models.fleet import ArtifactMismatchError, ModelFleet, verified_download
from models.lifecycle import ModelState, VersionInfo
from models.registry import InMemoryRegistry, artifact_hash
from models.serving import ChunkScorer


def info(version: str) -> VersionInfo:
    return VersionInfo(version, "0" * 64, f"mem://{version}", "1", 0)


def state(**slots: Any) -> ModelState:
    versions = {v: info(v) for v in ("v1", "v2", "v3")}
    return ModelState("m", sequence=slots.pop("sequence", 1), versions=versions, **slots)


class FakeScorer:
    def __init__(self, version: str, alpha: float | None = None) -> None:
        self.version = version
        self.alpha = alpha

    def recalibrated(self, alpha: float | None) -> FakeScorer:
        return FakeScorer(self.version, alpha)


def fake_scorer(version: str) -> ChunkScorer:
    return cast("ChunkScorer", FakeScorer(version))


def test_sync_loads_champion_canary_and_shadow_and_routes_to_them() -> None:
    loaded: list[str] = []

    def load(version_info: VersionInfo) -> ChunkScorer:
        loaded.append(version_info.version)
        return fake_scorer(version_info.version)

    fleet = ModelFleet(load)
    serving = asyncio.run(
        fleet.sync(
            state(champion="v1", canary="v2", canary_percent=50, shadow="v3", shadow_fraction=1)
        )
    )
    assert sorted(loaded) == ["v1", "v2", "v3"]
    assert fleet.ready.is_set()
    routes = {serving.route(f"r{i}").route for i in range(200)}  # type: ignore[union-attr]
    assert routes == {"champion", "canary"}
    assert serving.route("r1").shadow_version == "v3"  # type: ignore[union-attr]


def test_a_version_that_fails_to_load_is_not_routed_to_and_is_reported() -> None:
    failures: list[tuple[str, str]] = []

    def load(version_info: VersionInfo) -> ChunkScorer:
        if version_info.version == "v2":
            raise ArtifactMismatchError("bad hash")
        return fake_scorer(version_info.version)

    async def report(version: str, error: str) -> None:
        failures.append((version, error))

    fleet = ModelFleet(load, on_failure=report)
    asyncio.run(fleet.sync(state(champion="v1")))
    serving = asyncio.run(fleet.sync(state(champion="v1", canary="v2", canary_percent=100)))
    assert failures == [("v2", "ArtifactMismatchError: bad hash")]
    assert serving.routing.canary is None
    assert {serving.route(f"r{i}").decision_version for i in range(50)} == {"v1"}  # type: ignore[union-attr]
    promoted = asyncio.run(fleet.sync(state(champion="v2")))  # a failed champion: v1 serves on
    assert promoted.routing.champion == "v1"
    assert set(promoted.scorers) == {"v1"}
    assert len(failures) == 1  # not retried


def test_the_previous_champion_is_let_go_once_the_new_one_serves() -> None:
    fleet = ModelFleet(lambda i: fake_scorer(i.version))
    asyncio.run(fleet.sync(state(champion="v1")))
    serving = asyncio.run(fleet.sync(state(champion="v2")))
    assert set(serving.scorers) == {"v2"}


def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"graph")
    (directory / "metadata.json").write_text("{}")
    return directory


def test_verified_download_accepts_matching_files_and_refuses_others(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    registered = registry.register("m", model_dir(tmp_path), version="abc")
    good = VersionInfo("abc", registered.artifact_hash, "", registered.registry_version, 0)
    path = verified_download(registry, "m", good, tmp_path / "cache")
    assert artifact_hash(path) == registered.artifact_hash
    assert verified_download(registry, "m", good, tmp_path / "cache") == path  # cached
    bad = VersionInfo("abd", "f" * 64, "", registered.registry_version, 0)
    with pytest.raises(ArtifactMismatchError, match="abd"):
        verified_download(registry, "m", bad, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["abc"]  # nothing left


def test_a_calibration_change_swaps_in_the_version_at_its_new_level() -> None:
    fleet = ModelFleet(lambda i: fake_scorer(i.version))
    asyncio.run(fleet.sync(state(champion="v1")))
    adapted = state(champion="v1", sequence=2, calibration={"v1": {"conformal_alpha": 0.08}})
    serving = asyncio.run(fleet.sync(adapted))
    assert serving.scorers["v1"].alpha == 0.08
    assert asyncio.run(fleet.sync(adapted)).scorers["v1"] is serving.scorers["v1"]  # unchanged
