"""The lifecycle command path without Kafka: an in-memory log and registry, and the CLI's
argument checks, which answer before anything is contacted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from headrace.cli import model_group, parse_time_ms
from headrace.lifecycle_commands import (
    LifecycleCommands,
    LifecycleError,
    expected_aliases,
    history,
    resolve_version,
    state_at,
)
from headrace.model_log import InMemoryModelLog, LoggedEvent
from models.lifecycle import (
    ModelEvent,
    ModelState,
    VersionInfo,
    apply,
    encode_event,
    next_event,
)
from models.registry import AliasDifference, InMemoryRegistry
from models.scoring import model_version
from streams.settings import Settings

MODEL = "m"
HASH = "a" * 64


def info(version: str, registry_version: str) -> VersionInfo:
    return VersionInfo(version, HASH, f"memory://{registry_version}", registry_version, 0)


def event(state: ModelState, kind: str, version: str, at_ms: int, **data: object) -> ModelEvent:
    return next_event(
        state,
        kind,  # type: ignore[arg-type]
        version,
        data=data,
        actor="test",
        reason="",
        now_ms=at_ms,
        event_id=f"e{state.sequence + 1}",
    )


def registered(state: ModelState, version: str, registry_version: str, at_ms: int) -> ModelEvent:
    data = {
        "artifact_hash": HASH,
        "artifact_uri": "memory://x",
        "registry_version": registry_version,
    }
    return event(state, "registered", version, at_ms, **data)


@pytest.fixture
def rollout_log() -> list[LoggedEvent]:
    """Two versions registered, the first promoted, the second canary at 5, then 25."""
    state = ModelState(MODEL)
    logged = []
    steps: list[Callable[[ModelState], ModelEvent]] = [
        lambda s: registered(s, "aaaa11112222", "1", 1_000),
        lambda s: registered(s, "bbbb33334444", "2", 2_000),
        lambda s: event(s, "promoted", "aaaa11112222", 3_000),
        lambda s: event(s, "canary_started", "bbbb33334444", 4_000, percent=5.0),
        lambda s: event(s, "traffic_shifted", "bbbb33334444", 5_000, percent=25.0),
    ]
    for offset, step in enumerate(steps):
        built = step(state)
        state = apply(state, built)
        logged.append(LoggedEvent(offset * 2, built))  # offsets need not be dense
    return logged


# -- pure parts ---------------------------------------------------------------------------


def test_expected_aliases_name_champion_and_challenger() -> None:
    versions = {"a": info("a", "1"), "b": info("b", "2"), "c": info("c", "3")}
    empty = ModelState(MODEL)
    assert expected_aliases(empty) == {"champion": None, "challenger": None}
    state = ModelState(MODEL, versions=versions, champion="a")
    assert expected_aliases(state) == {"champion": "1", "challenger": None}
    shadowed = replace(state, shadow="c", shadow_fraction=0.1)
    assert expected_aliases(shadowed) == {"champion": "1", "challenger": "3"}
    both = replace(shadowed, canary="b", canary_percent=5.0)
    assert expected_aliases(both) == {"champion": "1", "challenger": "2"}  # the canary first


def test_state_at_an_offset_or_a_time(rollout_log: list[LoggedEvent]) -> None:
    now = state_at(rollout_log, MODEL)
    assert (now.canary, now.canary_percent, now.sequence) == ("bbbb33334444", 25.0, 5)
    at_offset = state_at(rollout_log, MODEL, offset=6)  # the canary_started event
    assert (at_offset.canary, at_offset.canary_percent) == ("bbbb33334444", 5.0)
    assert state_at(rollout_log, MODEL, offset=7) == at_offset
    before_canary = state_at(rollout_log, MODEL, at_ms=3_999)
    assert (before_canary.champion, before_canary.canary) == ("aaaa11112222", None)
    assert state_at(rollout_log, MODEL, at_ms=999) == ModelState(MODEL)
    assert state_at(rollout_log, "other") == ModelState("other")
    with pytest.raises(ValueError, match="not both"):
        state_at(rollout_log, MODEL, at_ms=1, offset=1)


def test_history_marks_the_event_the_fold_ignored(rollout_log: list[LoggedEvent]) -> None:
    loser = replace(rollout_log[-1].event, event_id="late", data={"percent": 50.0})
    entries = history([*rollout_log, LoggedEvent(99, loser)], MODEL)
    assert [entry.applied for entry in entries] == [True] * 5 + [False]
    assert [entry.offset for entry in entries] == [0, 2, 4, 6, 8, 99]


def test_versions_by_id_or_unique_prefix() -> None:
    versions = {v: info(v, "1") for v in ("abcd11112222", "abcd99998888", "ef0012345678")}
    state = ModelState(MODEL, versions=versions)
    assert resolve_version(state, "ef0012345678") == "ef0012345678"
    assert resolve_version(state, "ef00") == "ef0012345678"
    assert resolve_version(state, "abcd1") == "abcd11112222"
    with pytest.raises(LifecycleError, match="ambiguous: abcd11112222, abcd99998888"):
        resolve_version(state, "abcd")
    with pytest.raises(LifecycleError, match="at least 4 characters"):
        resolve_version(state, "ef0")
    with pytest.raises(LifecycleError, match=r"unknown version '1234'.*known: abcd11112222"):
        resolve_version(state, "1234")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000123", 1_700_000_000_123),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-14T22:13:20.123", 1_700_000_000_123),  # no zone: UTC
        ("2023-11-15T00:13:20.123+02:00", 1_700_000_000_123),
    ],
)
def test_times_in_iso_or_epoch_milliseconds(text: str, expected: int) -> None:
    assert parse_time_ms(text) == expected


# -- the command path, in memory ------------------------------------------------------------


def model_directory(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "model.onnx").write_bytes(name.encode() * 100)
    (directory / "metadata.json").write_text("{}")
    return directory


def commands(log: InMemoryModelLog, registry: InMemoryRegistry) -> LifecycleCommands:
    clock = iter(range(1_000, 10**6, 1_000))
    return LifecycleCommands(
        Settings(model_name=MODEL), registry, actor="tester", log=log, clock=lambda: next(clock)
    )


def test_a_rollout_goes_to_the_log_and_the_aliases_follow(tmp_path: Path) -> None:
    log, registry = InMemoryModelLog(), InMemoryRegistry()
    path = commands(log, registry)
    first, second = model_directory(tmp_path, "one"), model_directory(tmp_path, "two")
    v1, v2 = model_version(first), model_version(second)

    async def scenario() -> None:
        assert (await path.register(first, reason="baseline")).data["registry_version"] == "1"
        await path.register(second)
        await path.promote(v1[:6])
        assert registry.aliases(MODEL) == {"champion": "1"}
        await path.canary(v2[:4], percent=5)
        assert registry.aliases(MODEL) == {"champion": "1", "challenger": "2"}
        await path.shift(v2, percent=25, evidence={"rule": "healthy"})
        await path.rollback(v2, evidence={"ece": 0.3}, reason="worse calibration")

    asyncio.run(scenario())
    assert registry.aliases(MODEL) == {"champion": "1"}
    entries = asyncio.run(path.history())
    assert [e.event.kind for e in entries] == [
        "registered",
        "registered",
        "promoted",
        "canary_started",
        "traffic_shifted",
        "rolled_back",
    ]
    assert [e.event.sequence for e in entries] == [1, 2, 3, 4, 5, 6]
    assert {e.event.actor for e in entries} == {"tester"}
    assert entries[4].event.data == {"percent": 25, "evidence": {"rule": "healthy"}}
    assert asyncio.run(path.reconcile()) == []


def test_a_refused_change_writes_nothing(tmp_path: Path) -> None:
    log, registry = InMemoryModelLog(), InMemoryRegistry()
    path = commands(log, registry)
    directory = model_directory(tmp_path, "one")
    asyncio.run(path.register(directory))
    with pytest.raises(LifecycleError, match=r"traffic_shifted refused: .* is not the canary"):
        asyncio.run(path.shift(model_version(directory), percent=10))
    with pytest.raises(LifecycleError, match="already registered"):
        asyncio.run(path.register(directory))
    assert len(log.records) == 1
    assert len(registry.versions(MODEL)) == 1  # refused before a second copy was stored


class RacingLog(InMemoryModelLog):
    """Another writer's event lands between our read and our append."""

    def __init__(self, rival: ModelEvent) -> None:
        super().__init__()
        self.rival: ModelEvent | None = rival

    async def append(self, event: ModelEvent) -> int:
        if self.rival is not None:
            await super().append(self.rival)
            self.rival = None
        return await super().append(event)


def test_the_first_writer_of_a_sequence_wins(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    directory = model_directory(tmp_path, "one")
    version = model_version(directory)
    rival = registered(ModelState(MODEL), version, "7", 500)
    log = RacingLog(rival)
    with pytest.raises(LifecycleError, match="another change landed first; retry"):
        asyncio.run(commands(log, registry).register(directory))
    entries = history(asyncio.run(log.read()), MODEL)
    assert [(e.event.actor, e.applied) for e in entries] == [("test", True), ("tester", False)]


class BrokenAliases(InMemoryRegistry):
    def set_alias(self, name: str, alias: str, registry_version: str) -> None:  # noqa: ARG002
        raise ConnectionError("registry down")


def test_the_change_stands_when_the_registry_cannot_follow(tmp_path: Path) -> None:
    log, registry = InMemoryModelLog(), BrokenAliases()
    path = commands(log, registry)
    directory = model_directory(tmp_path, "one")
    asyncio.run(path.register(directory))
    with pytest.raises(LifecycleError, match=r"in the log at offset 1.*registry down"):
        asyncio.run(path.promote(model_version(directory)))
    assert asyncio.run(path.state()).champion == model_version(directory)
    assert asyncio.run(path.reconcile()) == [AliasDifference("champion", "1", None)]


def test_reconcile_reports_an_alias_set_behind_the_logs_back(tmp_path: Path) -> None:
    log, registry = InMemoryModelLog(), InMemoryRegistry()
    path = commands(log, registry)
    first, second = model_directory(tmp_path, "one"), model_directory(tmp_path, "two")
    asyncio.run(path.register(first))
    asyncio.run(path.register(second))
    asyncio.run(path.promote(model_version(first)))
    registry.set_alias(MODEL, "challenger", "2")
    registry.set_alias(MODEL, "staging", "2")  # not the log's business
    assert asyncio.run(path.reconcile()) == [AliasDifference("challenger", None, "2")]
    assert asyncio.run(path.sync_aliases()) == [AliasDifference("challenger", None, "2")]
    assert registry.aliases(MODEL) == {"champion": "1", "staging": "2"}
    assert asyncio.run(path.reconcile()) == []


def test_load_failed_ends_the_canary(tmp_path: Path) -> None:
    log, registry = InMemoryModelLog(), InMemoryRegistry()
    path = commands(log, registry)
    first, second = model_directory(tmp_path, "one"), model_directory(tmp_path, "two")
    asyncio.run(path.register(first))
    asyncio.run(path.register(second))
    asyncio.run(path.promote(model_version(first)))
    asyncio.run(path.canary(model_version(second), percent=10))
    failed = asyncio.run(path.load_failed(model_version(second), error="bad", worker="w1"))
    assert failed.data == {"error": "bad", "worker": "w1"}
    assert asyncio.run(path.state()).canary is None
    assert registry.aliases(MODEL) == {"champion": "1"}


def test_an_undecodable_record_is_skipped_with_its_offset(tmp_path: Path) -> None:
    log = InMemoryModelLog()
    log.append_raw(b"not json")
    log.append_raw(encode_event(registered(ModelState(MODEL), "aaaa11112222", "1", 1)))
    with capture_logs() as logs:
        logged = asyncio.run(log.read())
    assert [entry.offset for entry in logged] == [1]
    assert [(e["event"], e["offset"]) for e in logs] == [("model_log.undecodable", 0)]


# -- the command line: bad arguments answer before Kafka is contacted -----------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["canary", "abcd", "--percent", "150"], "--percent must be in (0, 100], not 150"),
        (["canary", "abcd", "--percent", "-1"], "--percent must be in (0, 100], not -1"),
        (["shift", "abcd", "--percent", "0"], "--percent must be in (0, 100], not 0"),
        (["shadow", "abcd", "--fraction", "1.5"], "--fraction must be in (0, 1], not 1.5"),
        (["shadow", "abcd", "--fraction", "nan"], "--fraction must be in (0, 1], not nan"),
        (["state", "--at", "2024-01-01", "--offset", "3"], "give --at or --offset, not both"),
        (["state", "--at", "yesterday"], "--at takes ISO-8601 or epoch milliseconds"),
        (["state", "--offset", "-2"], "--offset must be 0 or more"),
        (["rollback", "abcd", "--evidence", "[1]"], "--evidence must be a JSON object"),
    ],
)
def test_bad_arguments_give_one_line(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(model_group, args, env={"HEADRACE_BROKER": "kafka://127.0.0.1:1"})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("headrace: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_an_unreachable_broker_is_one_line() -> None:
    # Port 1 on loopback refuses at once: nothing listens there.
    result = CliRunner().invoke(
        model_group, ["history"], env={"HEADRACE_BROKER": "kafka://127.0.0.1:1"}
    )
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("headrace: Kafka at 127.0.0.1:1: ")
    assert result.stdout == ""
