"""The rollout controller's decision: shift the canary's traffic, promote it, roll it back.

A pure function of the model state and two arms' statistics. ``champion`` and ``canary``
must cover the same period, *since the canary's last step* (resetting the counters at
each ``traffic_shifted`` is the caller's business), and count labelled outcomes: ``n``
predictions whose label has arrived, ``errors`` of them wrong. ``p99_ms`` is the arm's
99th-percentile latency, None until the caller has latency samples enough for a p99.

The rules, in order; the first that fires decides:

1. ``latency_slo``: the canary's p99 is above ``p99_slo_ms``: roll back.
2. With no champion there is nothing to compare against: wait (a person promotes).
3. Until both arms have ``min_samples`` labelled outcomes: wait.
4. ``error_ratio``: the canary's error rate is above ``rollback_error_ratio`` times the
   champion's, the champion's taken as at least ``1 / n`` so that a champion with no
   errors still leaves room for one: roll back. A blunt guard, not a test.
5. ``non_inferior``: a one-sided two-proportion z-test of non-inferiority rejects
   ``H0: p_canary - p_champion >= margin`` at ``alpha``, and the canary's p99 is known
   and within the SLO: shift to the next of ``steps`` above the canary's percent, or
   promote when it is at (or past) the last step.
6. ``inferior``: the mirror test rejects ``H0: p_canary - p_champion <= margin`` at
   ``alpha``: the canary is worse than the margin allows; roll back.
7. ``inconclusive``: both arms have ``max_samples`` labelled outcomes and neither test
   has decided: the canary could not be shown non-inferior within its budget; roll back.
   A canary about ``margin`` worse than the champion would otherwise wait for ever, as
   neither test can reject its H0.
8. Otherwise: wait (None).

The test statistic is ``z = (p_canary - p_champion - margin) / se`` with the unpooled
standard error ``se = sqrt(p_c (1 - p_c) / n_c + p_0 (1 - p_0) / n_0)`` (under H0 the
rates differ, so they are not pooled); the p-value is ``Phi(z)``, and H0 is rejected when
it is at most ``alpha`` (the inferiority test's p-value is ``Phi(-z)``). In ``se`` each
rate is kept within ``[1/(2n), 1 - 1/(2n)]``, so that arms without errors (the usual case
for a good model) still give a finite ``z``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, Literal

from models.lifecycle import ModelState

__all__ = [
    "DEFAULT_POLICY",
    "ArmStats",
    "Decision",
    "DecisionKind",
    "RolloutPolicy",
    "decide",
    "decide_shadow",
    "next_step",
    "non_inferiority_test",
    "normal_cdf",
]

DecisionKind = Literal["canary_started", "traffic_shifted", "promoted", "rolled_back"]
Rule = Literal["latency_slo", "error_ratio", "non_inferior", "inferior", "inconclusive"]


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    steps: tuple[float, ...] = (5.0, 25.0, 100.0)  # canary percents, increasing
    min_samples: int = 200  # labelled outcomes per arm before anything but latency decides
    max_samples: int = 2_000  # labelled outcomes per arm (each step) before an undecided
    # canary is rolled back
    margin: float = 0.02  # non-inferiority margin on the error rate
    alpha: float = 0.05
    rollback_error_ratio: float = 2.0
    p99_slo_ms: float = 50.0

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < step <= 100 for step in self.steps):
            raise ValueError(f"steps must be percents in (0, 100], not {self.steps}")
        if any(later <= earlier for earlier, later in pairwise(self.steps)):
            raise ValueError(f"steps must increase, not {self.steps}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, not {self.min_samples}")
        if self.max_samples < self.min_samples:
            raise ValueError(
                f"max_samples must be at least min_samples ({self.min_samples}), "
                f"not {self.max_samples}"
            )
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), not {self.margin}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha}")
        if not self.rollback_error_ratio >= 1:
            raise ValueError(f"rollback_error_ratio must be >= 1, not {self.rollback_error_ratio}")
        if not self.p99_slo_ms > 0:
            raise ValueError(f"p99_slo_ms must be positive, not {self.p99_slo_ms}")


DEFAULT_POLICY = RolloutPolicy()


@dataclass(frozen=True, slots=True)
class ArmStats:
    n: int  # labelled outcomes since the last step
    errors: int
    p99_ms: float | None = None  # None until there are latency samples enough

    def __post_init__(self) -> None:
        if not 0 <= self.errors <= self.n:
            raise ValueError(f"need 0 <= errors <= n, not errors={self.errors}, n={self.n}")
        if self.p99_ms is not None and not (math.isfinite(self.p99_ms) and self.p99_ms >= 0):
            raise ValueError(f"p99_ms must be finite and not negative, not {self.p99_ms}")

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.n if self.n else None

    def to_evidence(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p99_ms": self.p99_ms,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    version: str  # the canary
    percent: float | None  # the next step, for traffic_shifted; None otherwise
    evidence: Mapping[str, Any]  # JSON-encodable: both arms, the test, the rule that fired

    def event_data(self) -> dict[str, Any]:
        """``data`` for the lifecycle event that carries the decision out."""
        if self.kind in {"traffic_shifted", "canary_started"}:
            return {"percent": self.percent, "evidence": dict(self.evidence)}
        return {"evidence": dict(self.evidence)}


def normal_cdf(x: float) -> float:
    """The standard normal distribution function, ``Phi(x)``."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _bounded_rate(arm: ArmStats) -> float:
    half = 0.5 / arm.n
    return min(max(arm.errors / arm.n, half), 1.0 - half)


def non_inferiority_test(
    canary: ArmStats, champion: ArmStats, margin: float
) -> tuple[float, float]:
    """``(z, p_value)`` of ``H0: p_canary - p_champion >= margin`` (see the module doc)."""
    if canary.n < 1 or champion.n < 1:
        raise ValueError("both arms need at least one labelled outcome")
    difference = canary.errors / canary.n - champion.errors / champion.n
    canary_rate, champion_rate = _bounded_rate(canary), _bounded_rate(champion)
    variance = (
        canary_rate * (1.0 - canary_rate) / canary.n
        + champion_rate * (1.0 - champion_rate) / champion.n
    )
    z = (difference - margin) / math.sqrt(variance)
    return z, normal_cdf(z)


def next_step(percent: float, steps: tuple[float, ...]) -> float | None:
    """The first step above ``percent``; None at or past the last step (time to promote)."""
    return next((step for step in steps if step > percent), None)


def _fired_rule(
    state: ModelState,
    champion: ArmStats,
    canary: ArmStats,
    p_values: tuple[float, float] | None,  # non-inferiority's and inferiority's
    policy: RolloutPolicy,
) -> tuple[DecisionKind, Rule] | None:
    if canary.p99_ms is not None and canary.p99_ms > policy.p99_slo_ms:
        return "rolled_back", "latency_slo"
    if state.champion is None or min(champion.n, canary.n) < policy.min_samples:
        return None
    return _error_rule(state, champion, canary, p_values, policy)


def _error_rule(
    state: ModelState,
    champion: ArmStats,
    canary: ArmStats,
    p_values: tuple[float, float] | None,
    policy: RolloutPolicy,
) -> tuple[DecisionKind, Rule] | None:
    """Rules 4 to 8, once both arms have ``min_samples`` labelled outcomes."""
    champion_rate = max(champion.errors / champion.n, 1.0 / champion.n)
    if canary.errors / canary.n > policy.rollback_error_ratio * champion_rate:
        return "rolled_back", "error_ratio"
    non_inferior_p, inferior_p = p_values if p_values is not None else (1.0, 1.0)
    if non_inferior_p <= policy.alpha and canary.p99_ms is not None:
        last_step = next_step(state.canary_percent, policy.steps) is None
        return ("promoted" if last_step else "traffic_shifted"), "non_inferior"
    if inferior_p <= policy.alpha:
        return "rolled_back", "inferior"
    if min(champion.n, canary.n) >= policy.max_samples:
        return "rolled_back", "inconclusive"
    return None


def _judge(
    state: ModelState,
    champion: ArmStats,
    arm: ArmStats,
    policy: RolloutPolicy,
    *,
    role: Literal["canary", "shadow"],
) -> tuple[DecisionKind, dict[str, Any]] | None:
    """The rule that fires for ``arm`` (the canary of ``state``) and the evidence every
    decision carries: the rule, the champion, the test and the policy, then the arm under
    its ``role``: its version, its share of the traffic (the canary's percent, the shadow's
    fraction) and its counts."""
    z, p_value = (
        non_inferiority_test(arm, champion, policy.margin) if arm.n and champion.n else (None, None)
    )
    p_inferior = None if z is None else normal_cdf(-z)
    p_values = None if p_value is None or p_inferior is None else (p_value, p_inferior)
    fired = _fired_rule(state, champion, arm, p_values, policy)
    if fired is None:
        return None
    kind, rule = fired
    share = (
        {"canary_percent": state.canary_percent}
        if role == "canary"
        else {"shadow_fraction": state.shadow_fraction}
    )
    return kind, {
        "rule": rule,
        "champion_version": state.champion,
        "champion": champion.to_evidence(),
        "z": z,
        "p_value": p_value,
        "p_value_inferior": p_inferior,
        "policy": {
            "min_samples": policy.min_samples,
            "max_samples": policy.max_samples,
            "margin": policy.margin,
            "alpha": policy.alpha,
            "rollback_error_ratio": policy.rollback_error_ratio,
            "p99_slo_ms": policy.p99_slo_ms,
        },
        f"{role}_version": state.canary,
        **share,
        role: arm.to_evidence(),
    }


def decide(
    state: ModelState,
    champion: ArmStats,
    canary: ArmStats,
    policy: RolloutPolicy = DEFAULT_POLICY,
) -> Decision | None:
    """What to do with the canary of ``state`` now; None to keep waiting (module doc)."""
    if state.canary is None:
        return None
    judged = _judge(state, champion, canary, policy, role="canary")
    if judged is None:
        return None
    kind, evidence = judged
    percent = next_step(state.canary_percent, policy.steps) if kind == "traffic_shifted" else None
    return Decision(kind, state.canary, percent, evidence)


def decide_shadow(
    state: ModelState,
    champion: ArmStats,
    shadow: ArmStats,
    policy: RolloutPolicy = DEFAULT_POLICY,
) -> Decision | None:
    """What to do with the shadow of ``state`` while no canary runs: start it as a canary
    at the first step when its labelled outcomes pass the same non-inferiority test and
    its p99 holds the SLO, or roll it back on the canary's rollback rules; else wait.

    ``champion`` and ``shadow`` count the same requests (a shadowed request is scored by
    both), since the shadow started.
    """
    if state.shadow is None or state.canary is not None or state.champion is None:
        return None
    as_canary = replace(state, canary=state.shadow, canary_percent=0.0)
    judged = _judge(as_canary, champion, shadow, policy, role="shadow")
    if judged is None:
        return None
    kind, evidence = judged
    if kind == "rolled_back":
        return Decision("rolled_back", state.shadow, None, evidence)
    return Decision("canary_started", state.shadow, policy.steps[0], evidence)
