"""Replay without Kafka: the comparison, the state by sequence and time, re-scoring with a
fake scorer, the tolerance against a real model's batch sizes, and the CLI's argument
checks, which answer before anything is contacted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from headrace.cli import _report_lines, replay_command
from headrace.replay import (
    FIRST,
    TOLERANCE,
    Difference,
    FeaturesMessage,
    Replayed,
    ServingHistory,
    compare,
    replay_records,
)
from models.dataset import demo_training_set
from models.lifecycle import ModelEvent, ModelState, apply, next_event
from models.router import route
from models.scoring import load_served_model, model_outputs
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import DomainSpec

MODEL = "m"


def output(p: float, *, answered_by: str = "ensemble") -> dict[str, Any]:
    return {
        "probabilities": [1.0 - p, p],
        "predicted": int(p >= 0.5),
        "uncertainty": {
            "confidence": max(p, 1.0 - p),
            "entropy": 0.5,
            "mutual_information": 0.01,
            "conformal_set": [int(p >= 0.5)],
            "conformal_alpha": 0.1,
        },
        "low_confidence": False,
        "answered_by": answered_by,
    }


def logged(
    version: str, route_kind: str, out: Mapping[str, Any], sequence: int = 4
) -> dict[str, Any]:
    return {
        "model": {"name": MODEL, "version": version, "sequence": sequence},
        "route": route_kind,
        **out,
    }


# -- compare ---------------------------------------------------------------------------------


def test_the_same_output_is_identical() -> None:
    assert (
        compare(logged("v1", "champion", output(0.3)), Replayed("v1", "champion", output(0.3)))
        == []
    )


def test_numbers_within_the_tolerance_are_identical_and_beyond_it_differ() -> None:
    near, far = output(0.3), output(0.3)
    near["probabilities"][0] += TOLERANCE / 10
    far["probabilities"][0] += TOLERANCE * 10
    far["uncertainty"]["entropy"] += TOLERANCE * 10
    was = logged("v1", "champion", output(0.3))
    assert compare(was, Replayed("v1", "champion", near)) == []
    assert [d.field for d in compare(was, Replayed("v1", "champion", far))] == [
        "uncertainty.entropy",
        "probabilities[0]",
    ]


def test_version_route_class_set_and_path_are_compared_exactly() -> None:
    was = logged("v1", "champion", output(0.3))
    found = compare(was, Replayed("v2", "canary", output(0.7, answered_by="triage")))
    fields = [d.field for d in found]
    for expected in (
        "model.version",
        "route",
        "answered_by",
        "predicted",
        "uncertainty.conformal_set",
        "probabilities[1]",
    ):
        assert expected in fields
    assert found[0] == Difference("model.version", "v1", "v2")
    assert found[1] == Difference("route", "champion", "canary")


def test_a_pinned_replay_does_not_compare_the_route() -> None:
    was = logged("v1", "canary", output(0.3))
    assert compare(was, Replayed("v1", None, output(0.3))) == []


def test_a_feature_version_mismatch_must_be_logged_as_one() -> None:
    error = {"model": {"version": "v1"}, "route": "champion", "error": "feature_version 2 ..."}
    assert compare(error, Replayed("v1", "champion", None)) == []
    assert [d.field for d in compare(error, Replayed("v1", "champion", output(0.3)))] == ["error"]
    scored = logged("v1", "champion", output(0.3))
    assert [d.field for d in compare(scored, Replayed("v1", "champion", None))] == ["error"]


def test_a_missing_probability_is_a_difference() -> None:
    short = output(0.3)
    short["probabilities"] = short["probabilities"][:1]
    found = compare(logged("v1", "champion", output(0.3)), Replayed("v1", "champion", short))
    assert found == [Difference("probabilities[1]", 0.3, None)]


# -- the state at a sequence or a time -------------------------------------------------------


def lifecycle(*changes: tuple[str, str, dict[str, Any]]) -> list[ModelEvent]:
    state, events = ModelState(MODEL), []
    for at_ms, (kind, version, data) in enumerate(changes, start=1):
        event = next_event(
            state,
            kind,  # type: ignore[arg-type]
            version,
            data=data,
            actor="test",
            reason="",
            now_ms=at_ms * 1_000,
            event_id=f"e{at_ms}",
        )
        state = apply(state, event)
        events.append(event)
    return events


def registered(version: str) -> tuple[str, str, dict[str, Any]]:
    data = {"artifact_hash": "a" * 64, "artifact_uri": f"mem://{version}", "registry_version": "1"}
    return ("registered", version, data)


EVENTS = lifecycle(
    registered("v1"),
    registered("v2"),
    ("promoted", "v1", {}),
    ("canary_started", "v2", {"percent": 50}),
)


def test_the_history_gives_the_state_at_each_sequence_and_time() -> None:
    other = replace(EVENTS[0], model="other")  # another model's events are not folded
    history = ServingHistory.of([other, *EVENTS], MODEL)
    assert [s.sequence for s in history.states] == [0, 1, 2, 3, 4]
    assert history.at_sequence(3).champion == "v1"  # type: ignore[union-attr]
    assert history.at_sequence(3).canary is None  # type: ignore[union-attr]
    assert history.at_sequence(4).canary == "v2"  # type: ignore[union-attr]
    assert history.at_sequence(5) is None
    assert history.at_time(500).sequence == 0
    assert history.at_time(3_999).sequence == 3
    assert history.at_time(4_000).sequence == 4


# -- replaying records with a fake scorer -----------------------------------------------------


class FakeScorer:
    """A version's output is a function of one feature; remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def __call__(
        self,
        version: str,
        records: Sequence[Mapping[str, Any]],
        fast: bool,
        alpha: float | None = None,
    ) -> list[dict[str, Any] | None]:
        assert alpha is None  # these logs never adapt the conformal level
        self.calls.append((version, len(records), fast))
        shift = 0.1 if version == "v2" else 0.0
        path = "fast_path" if fast else "ensemble"
        return [output(r["features"]["x"] + shift, answered_by=path) for r in records]


def messages(count: int) -> list[FeaturesMessage]:
    return [
        FeaturesMessage(
            {"event_id": f"r{i}", "feature_version": "f1", "features": {"x": (i % 80) / 100}},
            timestamp_ms=10_000 + i,
        )
        for i in range(count)
    ]


def served(records: list[FeaturesMessage], history: ServingHistory) -> dict[str, dict[str, Any]]:
    """The decisions a worker at sequence 4 would have logged."""
    score, state = FakeScorer(), history.at_sequence(4)
    assert state is not None
    decisions = {}
    for message in records:
        request_id = message.record["event_id"]
        chosen = route(state, request_id)
        assert chosen is not None
        [out] = score(chosen.decision_version, [message.record], fast=False)
        assert out is not None
        decisions[request_id] = logged(chosen.decision_version, chosen.route, out)
    return decisions


def test_a_faithful_log_is_reproduced_as_served() -> None:
    history = ServingHistory.of(EVENTS, MODEL)
    records = messages(400)
    scorer = FakeScorer()
    report = replay_records(records, served(records, history), history, scorer)
    assert (report.total, report.identical, report.differing) == (400, 400, 0)
    assert report.missing_predictions == 0
    assert set(report.versions) == {"v1", "v2"}
    assert sum(report.versions.values()) == 400
    assert 100 < report.versions["v2"] < 300  # the canary at 50 percent
    assert {call[0] for call in scorer.calls} == {"v1", "v2"}  # one batch per version
    assert report.all_identical
    assert report.to_json()["first_differences"] == []


def test_a_pinned_version_differs_exactly_on_the_other_versions_records() -> None:
    history = ServingHistory.of(EVENTS, MODEL)
    records = messages(300)
    decisions = served(records, history)
    report = replay_records(records, decisions, history, FakeScorer(), pinned="v1")
    canary = [rid for rid, d in decisions.items() if d["route"] == "canary"]
    assert report.mode == "model"
    assert report.differing == len(canary)
    assert report.identical == 300 - len(canary)
    assert report.versions == {"v1": 300}
    assert len(report.first_differences) == FIRST
    firsts = [entry["request_id"] for entry in report.first_differences]
    in_order = sorted(canary, key=lambda rid: int(rid[1:]))[:FIRST]
    assert firsts == in_order  # the first ones in record order, whatever the batches
    fields = {d["field"] for d in report.first_differences[0]["differences"]}
    assert "model.version" in fields
    assert "route" not in fields


def test_a_route_that_does_not_reproduce_is_a_difference() -> None:
    history = ServingHistory.of(EVENTS, MODEL)
    records = messages(50)
    decisions = served(records, history)
    canary_id = next(rid for rid, d in decisions.items() if d["route"] == "canary")
    decisions[canary_id]["model"]["sequence"] = 3  # routed before the canary began
    report = replay_records(records, decisions, history, FakeScorer())
    assert report.differing == 1
    [entry] = report.first_differences
    assert (entry["request_id"], entry["version"], entry["route"]) == (canary_id, "v1", "champion")
    fields = [d["field"] for d in entry["differences"]]
    assert fields[:2] == ["model.version", "route"]


def test_missing_redelivered_unknown_sequence_and_fast_path() -> None:
    history = ServingHistory.of(EVENTS, MODEL)
    records = messages(20)
    decisions = served(records, history)
    del decisions["r3"]
    decisions["r4"]["model"]["sequence"] = 9  # a state the log never reached
    decisions["r5"]["answered_by"] = "fast_path"
    again = FeaturesMessage({**records[0].record}, timestamp_ms=99_999)
    flagged = FeaturesMessage({**records[1].record, "redelivered": True}, timestamp_ms=99_999)
    scorer = FakeScorer()
    report = replay_records([*records, again, flagged], decisions, history, scorer)
    assert report.total == 20
    assert report.redelivered == 2
    assert report.missing_predictions == 1
    [missing] = report.first_missing
    assert missing["request_id"] == "r3"
    assert missing["version"] in {"v1", "v2"}
    assert report.differing == 1
    assert report.first_differences[0]["differences"][0]["field"] == "model.sequence"
    assert report.identical == 18
    assert (decisions["r5"]["model"]["version"], 1, True) in scorer.calls
    assert not report.all_identical


def test_the_report_as_json_and_as_text() -> None:
    history = ServingHistory.of(EVENTS, MODEL)
    records = messages(30)
    decisions = served(records, history)
    report = replay_records(records, decisions, history, FakeScorer(), pinned="v1")
    report.range_ms = (10_000, 10_029)
    data = report.to_json()
    for key in ("total", "identical", "differing", "missing_predictions", "first_differences"):
        assert key in data
    assert (data["from_ms"], data["to_ms"]) == (10_000, 10_029)
    assert data["versions"] == {"v1": 30}
    text = "\n".join(_report_lines(report))
    assert "with v1" in text
    assert f"total     30: {report.identical} identical" in text


# -- the tolerance against a real model --------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(payments_spec: DomainSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("replay-model")
    data = demo_training_set(payments_spec, 3_000, seed=12)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=1))
    return directory


def test_batch_sizes_change_a_real_models_outputs_by_less_than_the_tolerance(
    model_dir: Path, payments_spec: DomainSpec
) -> None:
    model = load_served_model(model_dir, "v", "onnxruntime-cpu")
    data = demo_training_set(payments_spec, 1_500, seed=99)
    rng = np.random.default_rng(3)
    features = np.concatenate([data.features, rng.normal(0, 20, data.features.shape)])
    records = [
        {
            "feature_version": data.feature_version,
            "features": {
                n: None if np.isnan(v) else float(v) for n, v in zip(data.names, row, strict=True)
            },
        }
        for row in features
    ]
    whole = model_outputs(model, records)
    assert {o["answered_by"] for o in whole if o} == {"triage", "ensemble"}
    for size in (1, 7, 256):
        for start in range(0, len(records), size):
            part = model_outputs(model, records[start : start + size])
            for was, now in zip(whole[start : start + size], part, strict=True):
                assert was is not None
                assert compare({"model": {"version": "v"}, **was}, Replayed("v", None, now)) == []


# -- the command line's argument checks ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give --from and --to, or --request-id"),
        (["--from", "2024-01-01"], "give --from and --to, or --request-id"),
        (["--to", "2024-01-01"], "give --from and --to, or --request-id"),
        (["--request-id", "r1", "--from", "1"], "not both"),
        (["--from", "2024-01-02", "--to", "2024-01-01"], "is after --to"),
        (["--from", "yesterday", "--to", "1"], "--from takes ISO-8601 or epoch milliseconds"),
        (["--from", "1", "--to", "soon"], "--to takes ISO-8601 or epoch milliseconds"),
        (["--from", "1", "--to", "2", "--model", "abcd", "--as-served"], "--model or --as-served"),
    ],
)
def test_bad_arguments_give_one_line(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(
        replay_command, args, env={"HEADRACE_BROKER": "kafka://127.0.0.1:1"}
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("headrace: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_an_unreachable_broker_is_one_line() -> None:
    result = CliRunner().invoke(
        replay_command,
        ["--from", "1", "--to", "2", "--json"],
        env={"HEADRACE_BROKER": "kafka://127.0.0.1:1"},
    )
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("headrace: Kafka at 127.0.0.1:1: ")
    assert result.stdout == ""
