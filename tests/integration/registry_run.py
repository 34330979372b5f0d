"""A worker serving one registered champion from ``model.events``, for integration tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from headrace import scenario
from headrace.lifecycle_commands import LifecycleCommands
from models.registry import MlflowRegistry
from models.scoring import model_version
from streams.settings import Settings
from tests.integration.conftest import IsolatedRun


def serve_champion(
    isolated: IsolatedRun, model_dir: Path, **env: str
) -> tuple[Settings, LifecycleCommands, str]:
    """Register ``model_dir``, promote it, start a worker in registry mode and wait until
    it serves; the settings, the command path and the champion's version."""
    isolated.env.update(HEADRACE_SERVE_REGISTRY="1", **env)
    settings = Settings.from_env({**isolated.settings_env(), **isolated.env})
    Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    commands = LifecycleCommands(
        settings, MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts), actor="test"
    )
    version = model_version(model_dir)

    async def setup() -> None:
        await scenario.prepare_topics(settings)
        await commands.register(model_dir)
        await commands.promote(version)

    asyncio.run(setup())
    worker = isolated.start_worker()
    asyncio.run(scenario.wait_until_serving(settings, worker))
    return settings, commands, version
