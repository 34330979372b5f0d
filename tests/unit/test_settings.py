"""Worker settings read from the environment: defaults, values, and refused values."""

from __future__ import annotations

import pytest

from streams.settings import Settings, SettingsError


def test_the_producer_linger_is_5_ms_unless_set() -> None:
    assert Settings.from_env({}).producer_linger_ms == 5
    assert Settings.from_env({"HEADRACE_PRODUCER_LINGER_MS": ""}).producer_linger_ms == 5
    assert Settings.from_env({"HEADRACE_PRODUCER_LINGER_MS": "20"}).producer_linger_ms == 20
    assert Settings.from_env({"HEADRACE_PRODUCER_LINGER_MS": "0"}).producer_linger_ms == 0


@pytest.mark.parametrize("bad", ["-1", "5.5", "soon"])
def test_a_linger_that_is_not_a_count_of_milliseconds_is_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="HEADRACE_PRODUCER_LINGER_MS"):
        Settings.from_env({"HEADRACE_PRODUCER_LINGER_MS": bad})


def test_the_worker_runs_on_uvloop_unless_asyncio_is_asked_for() -> None:
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings.from_env({"HEADRACE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="HEADRACE_EVENT_LOOP must be one of uvloop, asyncio"):
        Settings.from_env({"HEADRACE_EVENT_LOOP": "trio"})


def test_the_first_gc_threshold_is_50_000_unless_set() -> None:
    assert Settings.from_env({}).gc_threshold == 50_000
    assert Settings.from_env({"HEADRACE_GC_THRESHOLD": "0"}).gc_threshold == 0
    assert Settings.from_env({"HEADRACE_GC_THRESHOLD": "2000"}).gc_threshold == 2000
    with pytest.raises(SettingsError, match="HEADRACE_GC_THRESHOLD must be >= 0, got -1"):
        Settings.from_env({"HEADRACE_GC_THRESHOLD": "-1"})


def test_the_offline_store_is_written_in_the_worker_unless_set_to_0() -> None:
    assert Settings.from_env({}).offline_in_worker is True
    assert Settings.from_env({"HEADRACE_OFFLINE_IN_WORKER": "1"}).offline_in_worker is True
    assert Settings.from_env({"HEADRACE_OFFLINE_IN_WORKER": "0"}).offline_in_worker is False
    with pytest.raises(SettingsError, match="HEADRACE_OFFLINE_IN_WORKER"):
        Settings.from_env({"HEADRACE_OFFLINE_IN_WORKER": "no"})


def test_the_profile_endpoint_is_off_unless_set_to_1() -> None:
    assert Settings.from_env({}).debug_profile is False
    assert Settings.from_env({"HEADRACE_DEBUG_PROFILE": "1"}).debug_profile is True
    assert Settings.from_env({"HEADRACE_DEBUG_PROFILE": "0"}).debug_profile is False
    with pytest.raises(SettingsError, match="HEADRACE_DEBUG_PROFILE"):
        Settings.from_env({"HEADRACE_DEBUG_PROFILE": "yes"})


def test_an_undecided_canary_has_a_budget_of_at_least_its_minimum() -> None:
    assert Settings.from_env({}).rollout_max_samples == 2_000
    raised = Settings.from_env({"HEADRACE_ROLLOUT_MIN_SAMPLES": "3000"})
    assert raised.rollout_max_samples == 3_000  # the default follows a larger minimum
    assert Settings.from_env({"HEADRACE_ROLLOUT_MAX_SAMPLES": "400"}).rollout_max_samples == 400
    with pytest.raises(SettingsError, match="HEADRACE_ROLLOUT_MAX_SAMPLES must be >= 200"):
        Settings.from_env({"HEADRACE_ROLLOUT_MAX_SAMPLES": "199"})
