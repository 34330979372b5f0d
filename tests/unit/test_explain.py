"""Shapley values by permutation sampling, checked against functions whose Shapley values
are known (additive ones; exact enumeration of coalitions for small interacting ones),
the efficiency property, reproducibility, the sampling rule and a trained model."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifact import load_model
from models.backends import OnnxRuntimeBackend
from models.cascade import Cascade
from models.dataset import TrainingSet, demo_training_set
from models.explain import (
    BACKGROUND_ROWS,
    METHOD,
    background_of,
    background_sample,
    explain_prediction,
    explain_sampled,
    explanation_seed,
    permutation_shapley,
    top_features,
)
from models.export import ONNX_FILE_NAME
from models.router import BUCKETS, bucket
from models.scoring import LoadedModel, class_probabilities, conformal_for, model_outputs
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import DomainSpec


def exact_shapley(f: Any, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The oracle: every coalition S, v(S) = mean over the reference rows of f with the
    features in S taken from x, weighted |S|! (d - |S| - 1)! / d!."""
    d = len(x)

    def v(coalition: tuple[int, ...]) -> float:
        rows = background.copy()
        rows[:, list(coalition)] = x[list(coalition)]
        return float(np.mean(f(rows)))

    phi = np.zeros(d)
    for j in range(d):
        others = [k for k in range(d) if k != j]
        for size in range(d):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            for coalition in itertools.combinations(others, size):
                phi[j] += weight * (v((*coalition, j)) - v(coalition))
    return phi


def interacting(rows: np.ndarray) -> np.ndarray:
    """A function with interactions of every order up to three."""
    return np.asarray(
        np.tanh(
            rows[:, 0] * rows[:, 1] - 0.5 * rows[:, 2] + 0.3 * rows[:, 0] * rows[:, 1] * rows[:, 3]
        )
    )


# -- the estimator ----------------------------------------------------------------------------


def test_an_additive_function_is_explained_exactly() -> None:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=6)
    background = rng.normal(size=(40, 6))
    x = rng.normal(size=6)

    def linear(rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows @ weights + 0.7)

    shapley = permutation_shapley(linear, x, background, seed=11)
    np.testing.assert_allclose(
        shapley.attributions, weights * (x - background.mean(axis=0)), atol=1e-12
    )
    assert shapley.base_value == pytest.approx(float(linear(background).mean()), abs=1e-12)
    assert shapley.value == pytest.approx(float(linear(x[np.newaxis])[0]), abs=1e-12)
    assert shapley.chains == 40 * 2
    assert shapley.evaluations == 40 + 1 + 80 * 5  # reference rows, x, the steps between


def test_two_features_with_an_interaction_are_exact_from_one_antithetic_pair() -> None:
    """With two features an ordering and its reverse are all the orderings there are."""
    rng = np.random.default_rng(5)
    background = rng.normal(size=(25, 2))
    x = np.array([1.5, -0.8])

    def product(rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows[:, 0] * rows[:, 1])

    shapley = permutation_shapley(product, x, background, seed=2)
    np.testing.assert_allclose(
        shapley.attributions, exact_shapley(product, x, background), atol=1e-12
    )


def test_sampling_converges_to_the_exact_shapley_values() -> None:
    rng = np.random.default_rng(8)
    background = rng.normal(size=(12, 4))
    x = np.array([1.2, 0.9, -1.1, 0.6])
    exact = exact_shapley(interacting, x, background)
    few = permutation_shapley(interacting, x, background, seed=1, permutations=2)
    many = permutation_shapley(interacting, x, background, seed=1, permutations=400)
    error_few = np.abs(few.attributions - exact).max()
    error_many = np.abs(many.attributions - exact).max()
    assert error_many < 0.01
    assert error_many < error_few
    # Both add up to the same total, exactly.
    assert few.attributions.sum() == pytest.approx(exact.sum(), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=9),  # features
    st.integers(min_value=1, max_value=20),  # reference rows
    st.integers(min_value=1, max_value=5),  # orderings per row
    st.integers(min_value=0, max_value=2**63 - 1),  # seed
)
def test_attributions_add_up_to_the_value_minus_the_base_value(
    width: int, rows: int, permutations: int, seed: int
) -> None:
    rng = np.random.default_rng(seed % 1_000)
    background = rng.normal(size=(rows, width))
    x = rng.normal(size=width)
    weights = rng.normal(size=(width, width))

    def network(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-np.tanh(matrix @ weights).sum(axis=1))))

    shapley = permutation_shapley(network, x, background, seed=seed, permutations=permutations)
    assert shapley.base_value == pytest.approx(float(network(background).mean()), abs=1e-12)
    assert shapley.attributions.sum() == pytest.approx(shapley.value - shapley.base_value, abs=1e-9)
    assert shapley.chains == rows * permutations


def walked_chains(
    f: Any, x: np.ndarray, background: np.ndarray, seed: int, permutations: int
) -> tuple[np.ndarray, int]:
    """The oracle for skipped repeats: the same orderings as ``permutation_shapley``
    (same generator, same draws), each chain walked one row at a time, every row
    evaluated. Returns the attributions and the rows evaluated."""
    rows, width = background.shape
    rng = np.random.default_rng(seed)
    chains = rows * permutations
    drawn = rng.permuted(np.tile(np.arange(width), (math.ceil(chains / 2), 1)), axis=1)
    orders = [drawn[c // 2] if c % 2 == 0 else drawn[c // 2][::-1] for c in range(chains)]
    totals = np.zeros(width)
    evaluated = 0
    for c, order in enumerate(orders):
        row = background[c // permutations].copy()
        before = float(f(row[np.newaxis])[0])
        evaluated += 1
        for feature in order:
            row[feature] = x[feature]
            after = float(f(row[np.newaxis])[0])
            evaluated += 1
            totals[feature] += after - before
            before = after
    return totals / chains, evaluated


@settings(max_examples=80, deadline=None)
@given(
    st.integers(min_value=1, max_value=7),  # features
    st.integers(min_value=1, max_value=8),  # reference rows
    st.integers(min_value=1, max_value=4),  # orderings per row
    st.integers(min_value=0, max_value=2**32 - 1),  # seed
)
def test_steps_that_change_nothing_are_skipped_and_the_attributions_are_unchanged(
    width: int, rows: int, permutations: int, seed: int
) -> None:
    """Values drawn from {0, 1, missing}, so the explained row and a reference row often
    agree on a feature: the estimate equals walking every chain row by row, a feature that
    agrees with every reference row gets exactly 0, and fewer rows are evaluated."""
    rng = np.random.default_rng(seed)
    choices = np.array([0.0, 1.0, np.nan])
    background = choices[rng.integers(0, 3, size=(rows, width))]
    x = choices[rng.integers(0, 3, size=width)]
    weights = rng.normal(size=(width, width))

    def network(matrix: np.ndarray) -> np.ndarray:
        filled = np.nan_to_num(matrix, nan=0.5)
        return np.asarray(1.0 / (1.0 + np.exp(-np.tanh(filled @ weights).sum(axis=1))))

    shapley = permutation_shapley(network, x, background, seed=seed, permutations=permutations)
    walked, every_row = walked_chains(network, x, background, seed, permutations)
    np.testing.assert_allclose(shapley.attributions, walked, rtol=0, atol=1e-12)
    agreeing = np.all((background == x) | (np.isnan(background) & np.isnan(x)), axis=0)
    assert np.all(shapley.attributions[agreeing] == 0.0)
    chains = rows * permutations
    assert shapley.evaluations <= rows + 1 + chains * (width - 1)
    if agreeing.any() and width > 1:
        assert shapley.evaluations < rows + 1 + chains * (width - 1)
    assert every_row == chains * (width + 1)


def test_the_same_seed_gives_the_same_attributions_and_another_seed_others() -> None:
    rng = np.random.default_rng(13)
    background = rng.normal(size=(16, 5))
    x = rng.normal(size=5)
    first = permutation_shapley(interacting, x, background, seed=99)
    again = permutation_shapley(interacting, x, background, seed=99)
    other = permutation_shapley(interacting, x, background, seed=100)
    assert np.array_equal(first.attributions, again.attributions)
    assert not np.array_equal(first.attributions, other.attributions)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=9),  # features
    st.integers(min_value=1, max_value=12),  # reference rows
    st.integers(min_value=1, max_value=4),  # orderings per row
    st.integers(min_value=1, max_value=60),  # rows per call
    st.integers(min_value=0, max_value=2**32 - 1),  # seed
)
def test_blocks_of_chains_give_what_one_call_gives(
    width: int, rows: int, permutations: int, rows_per_call: int, seed: int
) -> None:
    """The model is given whole chains at a time, at most ``rows_per_call`` rows a call
    (or one chain's, if more; the reference rows and x ride with the first call), in the
    type asked for; every row is evaluated once and the estimate is the one-call one."""
    rng = np.random.default_rng(seed)
    choices = np.array([0.0, 1.0, -2.5, np.nan])
    background = choices[rng.integers(0, 4, size=(rows, width))]
    x = choices[rng.integers(0, 4, size=width)]
    weights = rng.normal(size=(width, width))
    calls: list[tuple[int, Any]] = []

    def network(matrix: np.ndarray) -> np.ndarray:
        calls.append((len(matrix), matrix.dtype))
        filled = np.nan_to_num(matrix.astype(np.float64), nan=0.5)
        return np.asarray(1.0 / (1.0 + np.exp(-np.tanh(filled @ weights).sum(axis=1))))

    whole = permutation_shapley(network, x, background, seed=seed, permutations=permutations)
    assert len(calls) == 1
    calls.clear()
    blocked = permutation_shapley(
        network,
        x,
        background,
        seed=seed,
        permutations=permutations,
        dtype=np.float32,
        rows_per_call=rows_per_call,
    )
    assert {dtype for _, dtype in calls} == {np.dtype(np.float32)}
    assert calls[0][0] >= rows + 1
    largest = max(rows_per_call, width - 1)
    assert all(0 < size <= largest for size, _ in calls[1:])
    assert calls[0][0] <= rows + 1 + largest
    assert sum(size for size, _ in calls) == blocked.evaluations == whole.evaluations
    # The rows are the float64 ones cast, so only the network's float64 arithmetic on
    # them may differ: values in {0, 1, -2.5, missing} are exact in float32.
    np.testing.assert_allclose(blocked.attributions, whole.attributions, rtol=0, atol=1e-12)
    assert blocked.base_value == pytest.approx(whole.base_value, abs=1e-12)


def test_bad_shapes_and_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        permutation_shapley(interacting, np.zeros(3), np.zeros((4, 5)), seed=0)
    with pytest.raises(ValueError, match="permutations"):
        permutation_shapley(interacting, np.zeros(5), np.zeros((4, 5)), seed=0, permutations=0)
    with pytest.raises(ValueError, match="rows_per_call"):
        permutation_shapley(interacting, np.zeros(5), np.zeros((4, 5)), seed=0, rows_per_call=0)


def test_the_seed_depends_on_the_request_and_the_version() -> None:
    seed = explanation_seed("req-1", "abc")
    assert seed == explanation_seed("req-1", "abc")
    assert len({seed, explanation_seed("req-2", "abc"), explanation_seed("req-1", "abd")}) == 3


# -- which requests are explained ---------------------------------------------------------------


def test_the_sampled_share_is_the_setting_and_nested() -> None:
    ids = [f"event-{i}" for i in range(40_000)]
    for share in (0.01, 0.2):
        got = sum(explain_sampled(i, share) for i in ids) / len(ids)
        assert abs(got - share) < 4 * math.sqrt(share * (1 - share) / len(ids))
    small = {i for i in ids if explain_sampled(i, 0.05)}
    assert small <= {i for i in ids if explain_sampled(i, 0.2)}
    assert not any(explain_sampled(i, 0.0) for i in ids)
    assert all(explain_sampled(i, 1.0) for i in ids)


def test_the_sample_is_independent_of_the_canary_buckets() -> None:
    ids = [f"event-{i}" for i in range(20_000)]
    canary = {
        i for i in ids if bucket(i, salt="model\x00v2", person=b"headrace.canary") < BUCKETS // 2
    }
    sampled = [i for i in ids if explain_sampled(i, 0.2)]
    in_canary = sum(i in canary for i in sampled) / len(sampled)
    assert abs(in_canary - 0.5) < 0.04


# -- reference rows -----------------------------------------------------------------------------


def test_the_background_sample_is_seeded_and_keeps_order() -> None:
    x = np.arange(1_000, dtype=np.float64).reshape(500, 2)
    sample = background_sample(x, rows=50, seed=7)
    assert sample.shape == (50, 2)
    assert np.array_equal(sample, background_sample(x, rows=50, seed=7))
    assert np.all(np.diff(sample[:, 0]) > 0)
    assert np.array_equal(background_sample(x[:10], rows=50), x[:10])


@pytest.fixture(scope="module")
def trained(
    payments_spec: DomainSpec, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, TrainingSet, Path]:
    directory = tmp_path_factory.mktemp("explain-model")
    data = demo_training_set(payments_spec, 3_000, seed=8)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=2))
    _, metadata = load_model(directory)
    model = LoadedModel(
        name=metadata.name,
        version="v-test",
        metadata=metadata,
        backend=OnnxRuntimeBackend(directory / ONNX_FILE_NAME),
        conformal=conformal_for(metadata),
        cascade=Cascade.from_state(metadata.cascade) if metadata.cascade else None,
    )
    return model, data, directory


def record_of(data: TrainingSet, i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "entity_id": "card",
        "event_time": i,
        "feature_version": data.feature_version,
        "features": {
            n: (None if np.isnan(v) else float(v))
            for n, v in zip(data.names, data.features[i], strict=True)
        },
    }


def test_a_trained_artifact_keeps_its_reference_rows(
    trained: tuple[LoadedModel, TrainingSet, Path],
) -> None:
    model, data, _ = trained
    background, kind = background_of(model.metadata)
    assert kind == "training_sample"
    assert background.shape == (BACKGROUND_ROWS, len(data.names))
    # Rows of the training split (the first 60 percent, by time), missing values kept.
    train = data.features[: int(len(data.features) * 0.6)]
    for row in background[:5]:
        same = (train == row) | (np.isnan(train) & np.isnan(row))
        assert same.all(axis=1).any()


def test_a_served_prediction_is_explained_and_reproduced(
    trained: tuple[LoadedModel, TrainingSet, Path],
) -> None:
    model, data, _ = trained
    records = [record_of(data, i) for i in range(1_800, 3_000)]
    outputs = model_outputs(model, records)
    by_path: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for record, output in zip(records, outputs, strict=True):
        assert output is not None
        by_path.setdefault(output["answered_by"], []).append((record, output))
    assert set(by_path) == {"triage", "ensemble"}
    for record, output in by_path["triage"][:15] + by_path["ensemble"][:15]:
        prediction = {"request_id": record["event_id"], "route": "champion", **output}
        explained = explain_prediction(model, record, prediction, computed_at=5)
        assert explained["method"] == METHOD
        assert explained["feature_names"] == list(data.names)
        assert explained["probability"] == pytest.approx(output["probabilities"][1], abs=1e-12)
        assert explained["served_probability"] == output["probabilities"][1]
        total = sum(explained["attributions"])
        assert total == pytest.approx(explained["probability"] - explained["base_value"], abs=1e-9)
        assert explained["samples"] == 2 * BACKGROUND_ROWS
        assert explained["seed"] == explanation_seed(record["event_id"], "v-test")
        again = explain_prediction(model, record, prediction, computed_at=6)
        assert again["attributions"] == explained["attributions"]
    base = explained["base_value"]
    background, _ = background_of(model.metadata)
    served = class_probabilities(model, background.astype(np.float32))[:, 1].mean()
    assert base == pytest.approx(float(served), abs=1e-12)
    top = top_features(explained, 3)
    assert len(top) == 3
    assert abs(top[0][2]) >= abs(top[1][2]) >= abs(top[2][2])


def test_an_artifact_without_reference_rows_is_explained_against_the_training_means(
    trained: tuple[LoadedModel, TrainingSet, Path],
) -> None:
    model, data, _ = trained
    older = dataclasses.replace(
        model, metadata=dataclasses.replace(model.metadata, background=None)
    )
    record = record_of(data, 2_100)
    (output,) = model_outputs(older, [record])
    assert output is not None
    explained = explain_prediction(older, record, {"request_id": "e2100", **output}, computed_at=0)
    assert explained["reference"] == "training_means"
    assert explained["reference_rows"] == 1
    nan_row = np.full((1, len(data.names)), np.nan, dtype=np.float32)
    at_means = float(class_probabilities(older, nan_row)[0, 1])
    assert explained["base_value"] == pytest.approx(at_means, abs=1e-12)
    total = sum(explained["attributions"])
    assert total == pytest.approx(explained["probability"] - at_means, abs=1e-9)


def test_the_share_setting_is_a_fraction() -> None:
    from streams.settings import Settings, SettingsError

    assert Settings.from_env({}).explain_share == 0.01
    assert Settings.from_env({"HEADRACE_EXPLAIN_SHARE": "0"}).explain_share == 0.0
    assert Settings.from_env({"HEADRACE_EXPLAIN_SHARE": "0.25"}).explain_share == 0.25
    for bad in ("1.5", "-0.1", "nan", "some"):
        with pytest.raises(SettingsError, match="HEADRACE_EXPLAIN_SHARE"):
            Settings.from_env({"HEADRACE_EXPLAIN_SHARE": bad})


def test_replay_reproduces_a_logged_explanation_and_notices_a_changed_one(
    trained: tuple[LoadedModel, TrainingSet, Path],
) -> None:
    from headrace.replay import explanation_reproduced

    model, data, _ = trained
    record = record_of(data, 2_200)
    (output,) = model_outputs(model, [record])
    assert output is not None
    decision = {"request_id": "e2200", **output}
    logged = orjson.loads(
        orjson.dumps(explain_prediction(model, record, decision, computed_at=1))
    )  # as it crossed Kafka
    assert explanation_reproduced(model, record, decision, logged)
    changed = {**logged, "attributions": [*logged["attributions"][:-1], 0.5]}
    assert not explanation_reproduced(model, record, decision, changed)
    other = dataclasses.replace(model, version="v-other")  # another seed
    assert not explanation_reproduced(other, record, decision, logged)


def test_a_seeded_dropout_backend_answers_alike_when_called_from_two_threads(
    trained: tuple[LoadedModel, TrainingSet, Path],
) -> None:
    """The explainer calls the backend from its own thread while the scorer calls it from
    the event loop: a backend with shared seeded state must not mix the two calls."""
    from concurrent.futures import ThreadPoolExecutor

    from models.backends import choose_backend

    _, data, directory = trained
    network, _ = load_model(directory)
    backend = choose_backend(network, directory / ONNX_FILE_NAME, "torch-cpu-mc-dropout")
    batches = [data.features[i : i + 300].astype(np.float32) for i in range(0, 1_200, 300)]
    alone = [backend.member_probs(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            together = list(pool.map(backend.member_probs, batches))
            for solo, shared in zip(alone, together, strict=True):
                assert np.array_equal(solo, shared)
