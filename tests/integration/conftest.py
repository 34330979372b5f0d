"""Integration fixtures: the real broker, Redis and S3 endpoint, isolated workers, and a small
trained model for them to score with.

The servers are started once per session with ``headrace infra up`` (reused when already
running, stopped at the end only if this session started them). A server that cannot
start fails the run with the reason; integration tests are never skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from headrace import infra
from headrace.worker_process import WorkerProcess, isolated_env
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec

ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[list[infra.ServiceStatus]]:
    state_dir = infra.default_state_dir()
    before = {s.name for s in infra.status(state_dir) if s.running}
    try:
        services = infra.up(state_dir)
    except infra.InfraError as error:
        pytest.fail(f"the integration servers could not start: {error}", pytrace=False)
    yield services
    if not before and os.environ.get("HEADRACE_KEEP_INFRA") != "1":
        infra.down(state_dir)


@dataclass
class IsolatedRun:
    """Its own topics, consumer group, state directory and worker log files."""

    env: dict[str, str]
    settings: Settings
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def settings_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def start_worker(self, name: str = "worker", module: str = "headrace") -> WorkerProcess:
        worker = WorkerProcess(env=self.env, log_path=self.log_dir / f"{name}.log", module=module)
        worker.start()
        self.workers.append(worker)
        return worker


@pytest.fixture
def isolated(
    infrastructure: list[infra.ServiceStatus],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[IsolatedRun]:
    log_dir = ARTIFACTS / request.node.name
    shutil.rmtree(log_dir, ignore_errors=True)  # this run's worker logs only
    env = isolated_env(tmp_path)
    run = IsolatedRun(env=env, settings=Settings.from_env({**os.environ, **env}), log_dir=log_dir)
    yield run
    for worker in run.workers:
        worker.stop()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    """A small model, quick to train (two members, 3 epochs over 3,000 demo events); a test
    module that needs another defines its own ``model_dir``."""
    directory = tmp_path_factory.mktemp("model")
    data = demo_training_set(load_spec(spec_path), 3_000, seed=4)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=3))
    return directory


@pytest.fixture
def scoring(isolated: IsolatedRun, model_dir: Path) -> IsolatedRun:
    """An isolated run whose workers validate, featurize and score, with default settings."""
    isolated.env["HEADRACE_MODEL_DIR"] = str(model_dir)
    isolated.settings = Settings.from_env({**isolated.settings_env(), **isolated.env})
    return isolated
