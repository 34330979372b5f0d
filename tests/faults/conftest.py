"""Fault and scale tests: the integration fixtures, a trained model, workers that score.

Run with ``make test-faults`` (``pytest tests/faults``); the default ``pytest`` run leaves
them out (``testpaths``), as they take minutes each. Each test writes its figures to
``test-artifacts/faults/<test>.json``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.worker_process import WorkerProcess
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from tests.integration.conftest import IsolatedRun, infrastructure, isolated

__all__ = ["infrastructure", "isolated"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
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


def start_another_worker(run: IsolatedRun, name: str) -> WorkerProcess:
    """A further worker of the same app (same topics and group) with its own state directory:
    two workers on one machine must not share RocksDB files."""
    env = {**run.env, "HEADRACE_DATA_DIR": str(Path(run.env["HEADRACE_DATA_DIR"]) / name)}
    worker = WorkerProcess(env=env, log_path=run.log_dir / f"{name}.log")
    worker.start()
    run.workers.append(worker)
    return worker
