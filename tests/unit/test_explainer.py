"""The explainer process (``models.explainer``): the same explanations as in the worker's
own interpreter, a bad request answered and the next one served, a dead child replaced,
and a child that leaves when its input ends."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.dataset import demo_training_set
from models.explain import explain_prediction
from models.explainer import (
    MODELS_KEPT,
    NICENESS,
    ExplainerError,
    ExplainerProcess,
    answer,
    load_for_explaining,
    serve,
)
from models.scoring import LoadedModel, load_served_model, model_outputs
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import DomainSpec
from tests.unit.test_serving import records_of

VERSION = "v-explainer"


@pytest.fixture(scope="module")
def served(
    payments_spec: DomainSpec, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """A trained model as the worker loads it, and a few records with their predictions."""
    directory = tmp_path_factory.mktemp("explainer-model")
    data = demo_training_set(payments_spec, 2_000, seed=5)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=2))
    model = load_served_model(directory, VERSION, "onnxruntime-cpu")  # the worker's loader
    records = records_of(data, range(1_500, 1_506))
    pairs = []
    for record, output in zip(records, model_outputs(model, records), strict=True):
        assert output is not None
        pairs.append((record, {"request_id": record["event_id"], "route": "champion", **output}))
    return model, pairs


def request_of(
    model: LoadedModel, record: dict[str, Any], prediction: dict[str, Any]
) -> dict[str, Any]:
    return {
        "directory": str(model.directory),
        "version": model.version,
        "backend": model.backend.name,
        "record": record,
        "prediction": prediction,
        "computed_at": 7,
    }


def test_the_served_loop_answers_each_line_as_the_worker_would_explain_it(
    served: tuple[LoadedModel, list[tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    model, pairs = served
    lines = [orjson.dumps(request_of(model, r, p)) for r, p in pairs[:3]]
    lines.insert(1, b"{not json")
    lines.insert(2, orjson.dumps({**request_of(model, *pairs[0]), "directory": "/nonexistent"}))
    lines.insert(0, orjson.dumps({**request_of(model, *pairs[0]), "record": None}))
    replies = io.BytesIO()
    assert serve(io.BytesIO(b"\n".join(lines) + b"\n"), replies) == 0
    answers = [orjson.loads(line) for line in replies.getvalue().splitlines()]
    assert answers.pop(0) == {"loaded": VERSION}
    assert len(answers) == 5
    assert "not a JSON request" in answers[1]["error"]
    assert "No such file" in answers[2]["error"]
    for reply, (record, prediction) in zip(
        [answers[0], answers[3], answers[4]], pairs[:3], strict=True
    ):
        here = explain_prediction(model, record, prediction, computed_at=7)
        assert reply["explanation"] == orjson.loads(orjson.dumps(here))
        assert reply["compute_ms"] > 0


def test_the_child_explains_and_a_dead_child_is_replaced(
    served: tuple[LoadedModel, list[tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    model, pairs = served
    directory = model.directory
    assert directory is not None

    async def scenario() -> None:
        explainer = ExplainerProcess()
        try:
            await explainer.start()
            first_pid = explainer.pid
            assert first_pid is not None
            await explainer.load(
                directory=directory, version=model.version, backend=model.backend.name
            )
            # Nicer than the worker (set before the child answered): serving gets the CPU first.
            assert os.getpriority(os.PRIO_PROCESS, first_pid) == min(
                os.getpriority(os.PRIO_PROCESS, 0) + NICENESS, 19
            )
            for record, prediction in pairs[:2]:
                explanation, cost_ms = await explainer.explain(
                    directory=directory,
                    version=model.version,
                    backend=model.backend.name,
                    record=record,
                    prediction=prediction,
                    computed_at=7,
                )
                here = explain_prediction(model, record, prediction, computed_at=7)
                assert explanation == orjson.loads(orjson.dumps(here))
                assert cost_ms > 0
            with pytest.raises(ExplainerError, match="No such file"):
                await explainer.explain(
                    directory=Path("/nonexistent"),
                    version="v0",
                    backend=None,
                    record=pairs[0][0],
                    prediction=pairs[0][1],
                    computed_at=7,
                )
            assert explainer.pid == first_pid  # a bad request does not cost the child
            record, prediction = pairs[2]
            request: dict[str, Any] = {
                "directory": directory,
                "version": model.version,
                "backend": model.backend.name,
                "record": record,
                "prediction": prediction,
                "computed_at": 7,
            }
            here = orjson.loads(
                orjson.dumps(explain_prediction(model, record, prediction, computed_at=7))
            )
            # Killed while the request is on its way: that request fails...
            os.kill(first_pid, signal.SIGKILL)
            with pytest.raises(ExplainerError, match="explainer process"):
                await explainer.explain(**request)
            # ...and the next one starts a new child.
            assert (await explainer.explain(**request))[0] == here
            assert explainer.started == 2
            second_pid = explainer.pid
            assert second_pid not in (None, first_pid)
            # Found dead between requests: replaced before the request is sent.
            assert second_pid is not None
            os.kill(second_pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            assert (await explainer.explain(**request))[0] == here
            assert explainer.started == 3
        finally:
            last = explainer.pid
            await explainer.close()
        assert last is not None
        with pytest.raises(ProcessLookupError):
            os.kill(last, 0)
        assert explainer.pid is None

    asyncio.run(scenario())


def test_the_child_ignores_sigint_and_leaves_when_its_input_ends() -> None:
    """A worker killed outright closes the child's input: the child exits by itself."""
    with subprocess.Popen(
        [sys.executable, "-m", "models.explainer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write(b"ready?\n")  # answered once the child serves
            child.stdin.flush()
            assert b"not a JSON request" in child.stdout.readline()
            child.send_signal(signal.SIGINT)  # what Ctrl-C sends the whole process group
            time.sleep(0.5)
            assert child.poll() is None
            child.stdin.close()
            assert child.wait(timeout=60) == 0
        finally:
            if child.poll() is None:
                child.kill()


def test_the_child_keeps_the_versions_it_used_last(
    served: tuple[LoadedModel, list[tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    model, pairs = served
    models: dict[tuple[str, str], LoadedModel] = {}
    versions = [f"v{i}" for i in range(MODELS_KEPT + 2)]
    for version in [*versions[:MODELS_KEPT], versions[0], *versions[MODELS_KEPT:]]:
        reply = orjson.loads(answer({**request_of(model, *pairs[0]), "version": version}, models))
        assert reply["explanation"]["model"]["version"] == version
    # v0 was used again before v4 and v5 came: v1 and v2 went, the oldest in use.
    assert [version for _, version in models] == ["v3", "v0", "v4", "v5"]


def test_a_backend_this_machine_lacks_falls_back_to_the_first_available(
    served: tuple[LoadedModel, list[tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    model, _ = served
    assert model.directory is not None
    loaded = load_for_explaining(model.directory, VERSION, "no-such-backend")
    # The first this machine has (models.backends.backend_factories' order).
    assert loaded.backend.name in {"tensorrt", "torch-cuda-graph", "onnxruntime-cpu"}
    assert loaded.directory == model.directory
    assert loaded.version == VERSION
