"""Explanations through the real broker: a worker serving a registered champion with
``HEADRACE_EXPLAIN_SHARE=0.2`` writes Shapley values for exactly the scored requests the
sampling rule picks, each adding up to its probability minus its base value, and
``headrace replay --request-id`` shows them (and reproduces them)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from headrace.cli import replay_command
from headrace.kafka_io import Record, collect, produce
from models.artifact import load_metadata
from models.dataset import demo_training_set
from models.explain import METHOD, explain_sampled
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import IsolatedRun
from tests.integration.registry_run import serve_champion

pytestmark = pytest.mark.integration

SHARE = 0.2
EVENTS = 1_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("explained-model")
    data = demo_training_set(load_spec(spec_path), 3_000, seed=19)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=3))
    return directory


def keys(records: list[Record]) -> set[str]:
    return {r.key.decode() for r in records if r.key}


def test_a_sampled_share_of_decisions_is_explained_and_replay_shows_it(
    isolated: IsolatedRun, model_dir: Path
) -> None:
    settings, _, version = serve_champion(isolated, model_dir, HEADRACE_EXPLAIN_SHARE=str(SHARE))
    generated = list(PaymentGenerator(MixSpec(count=EVENTS, seed=23)))
    wanted = {m.event_id for m in generated if m.expected == VALID and m.event_id}
    asyncio.run(
        produce(
            settings.bootstrap_servers,
            settings.topics.raw,
            [(m.key, m.value) for m in generated],
            rate=500,
        )
    )
    predictions = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: wanted <= keys(got),
            timeout_s=180,
        )
    )
    # Delivery is at least once: a message read again after a rebalance is scored again
    # (from its entity's state by then), so a request id may have several decisions.
    decisions: dict[str, list[dict[str, Any]]] = {}
    for record in predictions:
        prediction = orjson.loads(record.value)
        if not prediction.get("shadow"):
            decisions.setdefault(str(prediction["request_id"]), []).append(prediction)
    assert wanted <= set(decisions)
    sampled = {rid for rid in decisions if explain_sampled(rid, SHARE)}
    assert abs(len(sampled) / len(decisions) - SHARE) < 0.05, (len(sampled), len(decisions))

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.explanations],
            until=lambda got: sampled <= keys(got),
            timeout_s=120,
        )
    )
    explanations = {r.key.decode(): orjson.loads(r.value) for r in records if r.key}
    assert set(explanations) == sampled  # every sampled decision, and nothing else
    names = load_metadata(model_dir).feature_names
    for request_id, explanation in explanations.items():
        # the decision it explains: the one whose probability it reproduces
        decision = min(
            decisions[request_id],
            key=lambda d: abs(d["probabilities"][1] - explanation["probability"]),
        )
        assert explanation["request_id"] == request_id
        assert explanation["model"] == {"name": settings.model_name, "version": version}
        assert explanation["method"] == METHOD
        assert explanation["feature_names"] == names
        assert len(explanation["attributions"]) == len(names)
        assert explanation["probability"] == pytest.approx(decision["probabilities"][1], abs=1e-6)
        total = sum(explanation["attributions"])
        assert total == pytest.approx(
            explanation["probability"] - explanation["base_value"], abs=1e-9
        )
        assert explanation["reference"] == "training_sample"
        assert explanation["computed_at"] >= decision["scored_at"]
    costs = sorted(e["compute_ms"] for e in explanations.values())
    print(
        f"explained {len(explanations)} of {len(decisions)} decisions; compute ms "
        f"median {costs[len(costs) // 2]:.2f}, p90 {costs[int(len(costs) * 0.9)]:.2f}"
    )

    # replay --request-id shows it, as text and as JSON, and reproduces it.
    request_id = min(sampled)
    text = CliRunner().invoke(replay_command, ["--request-id", request_id], env=isolated.env)
    assert text.exit_code == 0, text.output
    print(text.stdout)
    explanation = explanations[request_id]
    top = max(
        zip(explanation["feature_names"], explanation["attributions"], strict=True),
        key=lambda pair: abs(pair[1]),
    )[0]
    for fragment in (
        f"explained {METHOD}",
        "(reproduced)",
        f"  {top} = ",
        str(explanation["seed"]),
    ):
        assert fragment in text.stdout, text.stdout
    as_json = CliRunner().invoke(
        replay_command, ["--request-id", request_id, "--json"], env=isolated.env
    )
    assert as_json.exit_code == 0, as_json.output
    shown = json.loads(as_json.stdout.strip().splitlines()[-1])["explanation"]
    assert shown["attributions"] == explanation["attributions"]
    assert shown["reproduced"] is True

    unsampled = min(set(decisions) - sampled)
    none = CliRunner().invoke(replay_command, ["--request-id", unsampled], env=isolated.env)
    assert none.exit_code == 0, none.output
    assert "explained none: this request was not sampled" in none.stdout
