"""bench.retrain_window: candidates trained on a mix of the two concepts' labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import retrain_window
from models.dataset import drifted_fraud_probability, fraud_probability


def test_drifted_labels_follow_the_drifted_concept() -> None:
    names = ("card_present", "device_risk")
    present = np.array([[1.0, 0.9]] * 2_000)  # drifted: fraud with p = sigmoid(2.55) = 0.93
    labels = retrain_window.drifted_labels(present, names, seed=1)
    expected = drifted_fraud_probability({"card_present": 1.0, "device_risk": 0.9})
    assert expected > 0.9 > fraud_probability({"card_present": 1.0, "device_risk": 0.9})
    assert labels.mean() == pytest.approx(expected, abs=0.02)


def test_one_json_line_with_an_error_rate_per_share_of_old_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert retrain_window.main(["--rows", "300", "--seed", "5"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["rows"] == 300
    assert figures["held_out_rows"] == 300
    errors = figures["error_rate_by_old_share"]
    assert list(errors) == ["0", "0.3", "0.5", "0.7", "1"]
    assert all(0.0 <= rate <= 1.0 for rate in errors.values())


def test_too_few_rows_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        retrain_window.main(["--rows", "5"])
    assert exit_info.value.code == 2
    assert "--rows must be at least 100" in capsys.readouterr().err
