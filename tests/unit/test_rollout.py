"""The rollout controller: the z-test by hand, each rule at its boundary, and that every
decision is a valid next lifecycle event."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.lifecycle import ModelState, VersionInfo, apply, decode_event, encode_event, next_event
from models.rollout import (
    ArmStats,
    Decision,
    RolloutPolicy,
    decide,
    decide_shadow,
    next_step,
    non_inferiority_test,
    normal_cdf,
)


def canary_state(percent: float = 5.0, *, champion: str | None = "v1") -> ModelState:
    versions = {v: VersionInfo(v, "a" * 64, f"s3://m/{v}", v[1:], 0) for v in ("v1", "v2")}
    return ModelState(
        "fraud",
        sequence=4,
        versions=versions,
        champion=champion,
        canary="v2",
        canary_percent=percent,
        last_event_ms=100,
    )


FAST = 20.0  # a p99 well within the default 50 ms SLO


class TestNormalCdf:
    def test_known_values(self) -> None:
        assert normal_cdf(0.0) == 0.5
        assert normal_cdf(-1.6448536269514722) == pytest.approx(0.05, abs=1e-15)
        assert normal_cdf(1.959963984540054) == pytest.approx(0.975, abs=1e-15)
        assert normal_cdf(-40.0) == 0.0

    @given(st.floats(-12.0, 12.0))
    def test_it_agrees_with_the_standard_library(self, x: float) -> None:
        assert normal_cdf(x) == pytest.approx(NormalDist().cdf(x), rel=1e-9, abs=1e-15)


class TestNonInferiorityTest:
    def test_a_hand_computed_rejection(self) -> None:
        # p_c = 110/2000 = 0.055, p_0 = 100/2000 = 0.05, margin 0.02:
        # se = sqrt(0.055 * 0.945 / 2000 + 0.05 * 0.95 / 2000) = sqrt(4.97375e-5) = 0.00705248
        # z = (0.005 - 0.02) / 0.00705248 = -2.12691, p = Phi(z) = 0.016714
        z, p = non_inferiority_test(ArmStats(2000, 110), ArmStats(2000, 100), 0.02)
        assert z == pytest.approx(-2.12691, abs=1e-5)
        assert p == pytest.approx(0.016714, abs=1e-6)

    def test_a_hand_computed_failure_to_reject(self) -> None:
        # p_c = 0.06, p_0 = 0.05 on 200 each: se = sqrt(0.000282 + 0.0002375) = 0.0227925
        # z = -0.01 / 0.0227925 = -0.43874, p = 0.33042
        z, p = non_inferiority_test(ArmStats(200, 12), ArmStats(200, 10), 0.02)
        assert z == pytest.approx(-0.43874, abs=1e-5)
        assert p == pytest.approx(0.33042, abs=1e-5)

    def test_arms_without_errors_keep_a_finite_statistic(self) -> None:
        # Both rates are held at 1/(2 * 200) = 0.0025 inside se:
        # se = sqrt(2 * 0.0025 * 0.9975 / 200) = 0.00499375, z = -0.02 / se = -4.00501
        z, p = non_inferiority_test(ArmStats(200, 0), ArmStats(200, 0), 0.02)
        assert z == pytest.approx(-4.00501, abs=1e-5)
        assert p == pytest.approx(3.1008e-5, rel=1e-3)

    def test_a_worse_canary_gives_a_larger_p_value(self) -> None:
        p_values = [
            non_inferiority_test(ArmStats(1000, errors), ArmStats(1000, 10), 0.02)[1]
            for errors in (5, 10, 20, 30, 40)
        ]
        assert p_values == sorted(p_values)
        assert p_values[0] < 0.001
        assert p_values[-1] > 0.5

    def test_it_needs_outcomes_in_both_arms(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            non_inferiority_test(ArmStats(0, 0), ArmStats(10, 1), 0.02)


class TestRules:
    def test_nothing_to_decide_without_a_canary(self) -> None:
        state = ModelState("fraud", champion="v1")
        assert decide(state, ArmStats(0, 0), ArmStats(0, 0, p99_ms=500.0)) is None

    def test_a_slow_canary_is_rolled_back_before_any_outcome_is_labelled(self) -> None:
        decision = decide(canary_state(), ArmStats(0, 0), ArmStats(0, 0, p99_ms=50.5))
        assert decision is not None
        assert (decision.kind, decision.version, decision.percent) == ("rolled_back", "v2", None)
        assert decision.evidence["rule"] == "latency_slo"
        assert decision.evidence["canary"]["p99_ms"] == 50.5
        assert decision.evidence["z"] is None

    def test_a_canary_at_the_slo_is_not_slow(self) -> None:
        assert decide(canary_state(), ArmStats(0, 0), ArmStats(0, 0, p99_ms=50.0)) is None

    def test_error_ratio_rollback_fires_above_twice_the_champion_rate(self) -> None:
        champion = ArmStats(1000, 10)  # 1 percent
        above = decide(canary_state(), champion, ArmStats(1000, 21, FAST))
        assert above is not None
        assert (above.kind, above.evidence["rule"]) == ("rolled_back", "error_ratio")
        # At exactly twice the rate the guard holds; the test then decides:
        # z = (0.02 - 0.01 - 0.02) / sqrt(0.02 * 0.98 / 1000 + 0.01 * 0.99 / 1000) = -1.8411,
        # p = 0.0328 <= 0.05, so the canary moves on.
        at = decide(canary_state(), champion, ArmStats(1000, 20, FAST))
        assert at is not None
        assert (at.kind, at.percent, at.evidence["rule"]) == (
            "traffic_shifted",
            25.0,
            "non_inferior",
        )
        assert at.evidence["p_value"] == pytest.approx(0.0328, abs=1e-4)

    def test_a_champion_without_errors_counts_as_one_error(self) -> None:
        champion = ArmStats(200, 0)  # its rate is floored at 1/200
        two = decide(canary_state(), champion, ArmStats(200, 2, FAST))
        three = decide(canary_state(), champion, ArmStats(200, 3, FAST))
        assert two is None  # not rolled back; z = -1.27, p = 0.10: not shown non-inferior
        assert three is not None
        assert (three.kind, three.evidence["rule"]) == ("rolled_back", "error_ratio")

    def test_nothing_but_latency_decides_below_min_samples(self) -> None:
        good = ArmStats(10_000, 0, FAST)
        assert decide(canary_state(), ArmStats(199, 0), good) is None
        assert decide(canary_state(), good, ArmStats(199, 150, FAST)) is None
        slow = decide(canary_state(), ArmStats(199, 0), ArmStats(199, 150, 80.0))
        assert slow is not None
        assert slow.evidence["rule"] == "latency_slo"

    def test_no_progress_while_the_canary_latency_is_unknown(self) -> None:
        assert decide(canary_state(), ArmStats(1500, 75), ArmStats(1500, 75)) is None
        assert decide(canary_state(), ArmStats(1500, 75), ArmStats(1500, 75, FAST)) is not None

    def test_no_progress_when_non_inferiority_is_not_shown(self) -> None:
        assert decide(canary_state(), ArmStats(200, 10), ArmStats(200, 12, FAST)) is None

    def test_a_canary_shown_worse_than_the_margin_allows_is_rolled_back(self) -> None:
        champion = ArmStats(1000, 100)  # 10 percent; twice that is the blunt guard
        # 15 percent: se = sqrt(0.15 * 0.85 / 1000 + 0.1 * 0.9 / 1000) = 0.0147479,
        # z = (0.05 - 0.02) / se = 2.03419, p = Phi(-z) = 0.020966 <= 0.05
        worse = decide(canary_state(), champion, ArmStats(1000, 150, FAST))
        assert worse is not None
        assert (worse.kind, worse.evidence["rule"]) == ("rolled_back", "inferior")
        assert worse.evidence["p_value_inferior"] == pytest.approx(0.020966, abs=1e-6)
        # 14 percent: z = 0.02 / 0.0145052 = 1.37882, p = 0.083975: not shown, keep counting
        assert decide(canary_state(), champion, ArmStats(1000, 140, FAST)) is None

    def test_an_undecided_canary_is_rolled_back_once_both_arms_reach_max_samples(self) -> None:
        policy = RolloutPolicy(min_samples=100, max_samples=1000)
        # Exactly the margin worse: z = 0, both p-values 0.5; neither test can ever decide.
        champion, canary = ArmStats(1000, 100), ArmStats(1000, 120, FAST)
        assert decide(canary_state(), champion, ArmStats(999, 120, FAST), policy) is None
        assert decide(canary_state(), ArmStats(999, 100), canary, policy) is None
        decision = decide(canary_state(), champion, canary, policy)
        assert decision is not None
        assert (decision.kind, decision.evidence["rule"]) == ("rolled_back", "inconclusive")
        assert decision.evidence["policy"]["max_samples"] == 1000
        shadow = ModelState("m", sequence=3, champion="v1", shadow="v2", shadow_fraction=1.0)
        undecided = decide_shadow(shadow, champion, canary, policy)
        assert undecided is not None
        assert (undecided.kind, undecided.evidence["rule"]) == ("rolled_back", "inconclusive")

    def test_a_good_canary_at_max_samples_still_climbs(self) -> None:
        policy = RolloutPolicy(min_samples=100, max_samples=1000)
        decision = decide(canary_state(), ArmStats(5000, 500), ArmStats(5000, 480, FAST), policy)
        assert decision is not None
        assert (decision.kind, decision.evidence["rule"]) == ("traffic_shifted", "non_inferior")

    def test_without_a_champion_only_latency_decides(self) -> None:
        state = canary_state(champion=None)
        assert decide(state, ArmStats(5000, 50), ArmStats(5000, 0, FAST)) is None
        slow = decide(state, ArmStats(0, 0), ArmStats(0, 0, 99.0))
        assert slow is not None
        assert slow.kind == "rolled_back"

    @pytest.mark.parametrize(
        ("percent", "kind", "next_percent"),
        [
            (5.0, "traffic_shifted", 25.0),
            (10.0, "traffic_shifted", 25.0),
            (25.0, "traffic_shifted", 100.0),
            (30.0, "traffic_shifted", 100.0),
            (100.0, "promoted", None),
        ],
    )
    def test_a_good_canary_climbs_the_steps_then_is_promoted(
        self, percent: float, kind: str, next_percent: float | None
    ) -> None:
        decision = decide(canary_state(percent), ArmStats(2000, 100), ArmStats(2000, 100, FAST))
        assert decision is not None
        assert (decision.kind, decision.percent) == (kind, next_percent)

    def test_custom_steps_promote_after_the_last_one(self) -> None:
        policy = RolloutPolicy(steps=(1.0, 10.0), min_samples=50)
        good = (ArmStats(1000, 10), ArmStats(1000, 10, FAST))
        first = decide(canary_state(1.0), *good, policy)
        last = decide(canary_state(10.0), *good, policy)
        assert first is not None
        assert (first.kind, first.percent) == ("traffic_shifted", 10.0)
        assert last is not None
        assert last.kind == "promoted"

    def test_the_evidence_names_both_arms_the_test_and_the_policy(self) -> None:
        decision = decide(canary_state(), ArmStats(2000, 100, 31.0), ArmStats(2000, 110, FAST))
        assert decision is not None
        evidence = decision.evidence
        assert evidence["champion"] == {
            "n": 2000,
            "errors": 100,
            "error_rate": 0.05,
            "p99_ms": 31.0,
        }
        assert evidence["canary"] == {"n": 2000, "errors": 110, "error_rate": 0.055, "p99_ms": FAST}
        assert evidence["z"] == pytest.approx(-2.12691, abs=1e-5)
        assert evidence["p_value"] == pytest.approx(0.016714, abs=1e-6)
        assert (evidence["champion_version"], evidence["canary_version"]) == ("v1", "v2")
        assert evidence["canary_percent"] == 5.0
        assert evidence["policy"]["margin"] == 0.02


class TestValidation:
    @pytest.mark.parametrize(
        "fields",
        [
            {"steps": ()},
            {"steps": (5.0, 5.0)},
            {"steps": (25.0, 5.0)},
            {"steps": (0.0, 100.0)},
            {"steps": (50.0, 101.0)},
            {"min_samples": 0},
            {"max_samples": 199},
            {"margin": -0.01},
            {"alpha": 0.0},
            {"alpha": 1.0},
            {"rollback_error_ratio": 0.5},
            {"p99_slo_ms": 0.0},
        ],
    )
    def test_policies_are_checked(self, fields: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match=next(iter(fields))):
            RolloutPolicy(**fields)

    @pytest.mark.parametrize(
        ("n", "errors", "p99_ms"),
        [(10, 11, None), (10, -1, None), (10, 1, -1.0), (10, 1, math.nan), (10, 1, math.inf)],
    )
    def test_arm_stats_are_checked(self, n: int, errors: int, p99_ms: float | None) -> None:
        with pytest.raises(ValueError, match=r"errors|p99_ms"):
            ArmStats(n, errors, p99_ms)

    def test_next_step(self) -> None:
        assert next_step(0.0, (5.0, 25.0, 100.0)) == 5.0
        assert next_step(5.0, (5.0, 25.0, 100.0)) == 25.0
        assert next_step(100.0, (5.0, 25.0, 100.0)) is None
        assert next_step(60.0, (5.0, 50.0)) is None


arms = st.builds(
    lambda n, share, p99: ArmStats(n, round(n * share), p99),
    st.integers(0, 5000),
    st.floats(0.0, 1.0),
    st.none() | st.floats(0.0, 120.0),
)


@given(arms, arms, st.sampled_from([1.0, 5.0, 12.5, 25.0, 60.0, 100.0]))
def test_every_decision_is_a_valid_next_event_with_its_evidence(
    champion: ArmStats, canary: ArmStats, percent: float
) -> None:
    state = canary_state(percent)
    decision = decide(state, champion, canary)
    if decision is None:
        return
    event = next_event(
        state,
        decision.kind,
        decision.version,
        data=decision.event_data(),
        actor="rollout-controller",
        reason=str(decision.evidence["rule"]),
        now_ms=200,
        event_id="decision",
    )
    assert decode_event(encode_event(event)) == event
    after = apply(state, event)
    assert after.champion == ("v2" if decision.kind == "promoted" else "v1")
    assert (after.canary is None) == (decision.kind != "traffic_shifted")
    assert_rule_holds(decision, champion, canary)


def assert_rule_holds(decision: Decision, champion: ArmStats, canary: ArmStats) -> None:
    policy = RolloutPolicy()
    rule = decision.evidence["rule"]
    if rule == "latency_slo":
        assert canary.p99_ms is not None
        assert canary.p99_ms > policy.p99_slo_ms
        return
    assert min(champion.n, canary.n) >= policy.min_samples
    if rule == "error_ratio":
        assert canary.errors / canary.n > 2 * max(champion.errors, 1) / champion.n
    elif rule == "inferior":
        assert decision.evidence["p_value_inferior"] <= policy.alpha
        assert canary.errors / canary.n > champion.errors / champion.n + policy.margin
    elif rule == "inconclusive":
        assert min(champion.n, canary.n) >= policy.max_samples
        assert decision.evidence["p_value"] > policy.alpha or canary.p99_ms is None
        assert decision.evidence["p_value_inferior"] > policy.alpha
    else:
        assert decision.evidence["p_value"] <= policy.alpha
        assert canary.p99_ms is not None
        assert canary.p99_ms <= policy.p99_slo_ms
        assert canary.errors / canary.n < champion.errors / champion.n + policy.margin


def test_a_good_shadow_becomes_a_canary_at_the_first_step_and_a_bad_one_is_rolled_back() -> None:
    state = ModelState("m", sequence=3, champion="v1", shadow="v2", shadow_fraction=1.0)
    champion = ArmStats(n=400, errors=40, p99_ms=5.0)
    good = decide_shadow(state, champion, ArmStats(n=400, errors=30, p99_ms=5.0))
    assert good is not None
    assert (good.kind, good.version, good.percent) == ("canary_started", "v2", 5.0)
    assert good.evidence["rule"] == "non_inferior"
    assert good.event_data()["percent"] == 5.0
    bad = decide_shadow(state, champion, ArmStats(n=400, errors=90, p99_ms=5.0))
    assert bad is not None
    assert (bad.kind, bad.evidence["rule"]) == ("rolled_back", "error_ratio")
    assert decide_shadow(state, champion, ArmStats(n=50, errors=0, p99_ms=5.0)) is None  # too few
    running = ModelState(
        "m", sequence=3, champion="v1", canary="v3", canary_percent=5.0, shadow="v2"
    )
    assert decide_shadow(running, champion, ArmStats(n=400, errors=30, p99_ms=5.0)) is None
