"""The one path every lifecycle change takes: the log first, then MLflow's aliases.

A change reads ``model.events``, folds it, builds the next event with ``next_event`` (a
change the state does not allow is a ``LifecycleError`` saying why), appends it, and reads
the log again to confirm that the fold applied it: when two writers race for the same
sequence number the first one in the log wins, and the other is told to retry. Only then
are the registry's aliases set from the new state: ``champion`` names the champion's
registry version, ``challenger`` the canary's (or, with no canary, the shadow's), and an
alias with nothing to name is deleted. The log is the source of truth; when the registry
update fails the change still stands, and ``reconcile`` reports the difference until the
next change, or ``sync_aliases``, sets the aliases again.

Registering stores the model's files in the registry before the ``registered`` event is
appended: storing bytes changes nothing that serves, the event does.

Versions are named by our 12-hex id or a unique prefix of it of at least four characters.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.model_log import KafkaModelLog, LoggedEvent, ModelLog
from models.lifecycle import EventKind, ModelEvent, ModelState, apply, fold_until, next_event
from models.registry import AliasDifference, ModelRegistry, artifact_hash, reconcile
from models.scoring import model_version
from streams.settings import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
MIN_PREFIX = 4


class LifecycleError(Exception):
    """A lifecycle change that may not, or did not, happen; the message says why."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    offset: int
    event: ModelEvent
    applied: bool  # False: the fold ignored it (a lost race, or invalid when written)


def expected_aliases(state: ModelState) -> dict[str, str | None]:
    """The registry version each alias must name in ``state``; None: no such alias."""

    def registry_version(version: str | None) -> str | None:
        return None if version is None else state.versions[version].registry_version

    return {
        CHAMPION: registry_version(state.champion),
        CHALLENGER: registry_version(state.canary or state.shadow),
    }


def state_at(
    logged: Iterable[LoggedEvent],
    model: str,
    *,
    at_ms: int | None = None,
    offset: int | None = None,
) -> ModelState:
    """The model's state after the events up to ``offset`` (inclusive), or as it was live
    at ``at_ms``; the whole log with neither."""
    if at_ms is not None and offset is not None:
        raise ValueError("give a time or an offset, not both")
    events = [entry.event for entry in logged if offset is None or entry.offset <= offset]
    return fold_until(events, at_ms=at_ms).get(model) or ModelState(model)


def history(logged: Iterable[LoggedEvent], model: str) -> list[HistoryEntry]:
    """The model's events in log order, each marked with whether the fold applied it."""
    state = ModelState(model)
    entries = []
    for entry in logged:
        if entry.event.model != model:
            continue
        after = apply(state, entry.event)
        entries.append(HistoryEntry(entry.offset, entry.event, applied=after is not state))
        state = after
    return entries


def resolve_version(state: ModelState, text: str) -> str:
    """Our version id named by ``text``: the id itself or a unique prefix of it."""
    if text in state.versions:
        return text
    known = sorted(state.versions)
    matches = [version for version in known if version.startswith(text)]
    if len(text) >= MIN_PREFIX and len(matches) == 1:
        return matches[0]
    if len(text) >= MIN_PREFIX and matches:
        raise LifecycleError(f"version {text!r} is ambiguous: {', '.join(matches)}")
    listed = ", ".join(known) or "none"
    if matches:
        raise LifecycleError(
            f"version {text!r}: give at least {MIN_PREFIX} characters; known: {listed}"
        )
    raise LifecycleError(f"unknown version {text!r} of {state.model}; known: {listed}")


def _with_evidence(data: dict[str, Any], evidence: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data`` with the figures behind an automatic decision, when there are any."""
    return data if evidence is None else {**data, "evidence": dict(evidence)}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LifecycleCommands:
    """Lifecycle changes of ``settings.model_name``, each one event on the log."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        *,
        actor: str,
        log: ModelLog | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.actor = actor
        self.log = log or KafkaModelLog(settings)
        self._clock = clock

    @property
    def model(self) -> str:
        return self.settings.model_name

    # -- reading ------------------------------------------------------------------------

    async def state(self) -> ModelState:
        return state_at(await self.log.read(), self.model)

    async def history(self) -> list[HistoryEntry]:
        return history(await self.log.read(), self.model)

    async def reconcile(self) -> list[AliasDifference]:
        """Where the registry's aliases differ from the folded log; changes nothing."""
        state = await self.state()
        actual = await asyncio.to_thread(self.registry.aliases, self.model)
        return reconcile(expected_aliases(state), actual)

    async def sync_aliases(self) -> list[AliasDifference]:
        """Set the registry's aliases from the log; the differences there were."""
        state = await self.state()
        return await asyncio.to_thread(self._set_aliases, state)

    # -- changes ------------------------------------------------------------------------

    async def register(self, directory: Path, *, reason: str = "") -> ModelEvent:
        version = model_version(directory)
        # Refused before a copy is stored; the real event is checked again on a fresh read.
        placeholder = {
            "artifact_hash": artifact_hash(directory),
            "artifact_uri": "-",
            "registry_version": "-",
        }
        self._next(await self.state(), "registered", version, placeholder, reason)
        stored = await asyncio.to_thread(
            self.registry.register, self.model, directory, version=version
        )
        data = {
            "artifact_hash": stored.artifact_hash,
            "artifact_uri": stored.artifact_uri,
            "registry_version": stored.registry_version,
        }
        return await self._change("registered", version, data, reason, resolve=False)

    async def shadow(self, version: str, *, fraction: float, reason: str = "") -> ModelEvent:
        return await self._change("shadow_started", version, {"fraction": fraction}, reason)

    async def stop_shadow(self, version: str, *, reason: str = "") -> ModelEvent:
        return await self._change("shadow_stopped", version, {}, reason)

    async def canary(
        self,
        version: str,
        *,
        percent: float,
        evidence: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> ModelEvent:
        data: dict[str, Any] = {"percent": percent}
        if evidence is not None:
            data["evidence"] = dict(evidence)
        return await self._change("canary_started", version, data, reason)

    async def shift(
        self,
        version: str,
        *,
        percent: float,
        evidence: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> ModelEvent:
        data = _with_evidence({"percent": percent}, evidence)
        return await self._change("traffic_shifted", version, data, reason)

    async def promote(
        self, version: str, *, evidence: Mapping[str, Any] | None = None, reason: str = ""
    ) -> ModelEvent:
        return await self._change("promoted", version, _with_evidence({}, evidence), reason)

    async def rollback(
        self, version: str, *, evidence: Mapping[str, Any] | None = None, reason: str = ""
    ) -> ModelEvent:
        data = {"evidence": dict(evidence or {})}  # required, even when empty
        return await self._change("rolled_back", version, data, reason)

    async def retire(self, version: str, *, reason: str = "") -> ModelEvent:
        return await self._change("retired", version, {}, reason)

    async def change_calibration(
        self, version: str, values: Mapping[str, float], *, reason: str = ""
    ) -> ModelEvent:
        """Log new calibration numbers for a version (``conformal_alpha``, ...)."""
        return await self._change("calibration_changed", version, dict(values), reason)

    async def load_failed(self, version: str, *, error: str, worker: str) -> ModelEvent:
        data = {"error": error, "worker": worker}
        return await self._change("load_failed", version, data, f"load failed on {worker}")

    # -- the path -----------------------------------------------------------------------

    def _next(
        self,
        state: ModelState,
        kind: EventKind,
        version: str,
        data: Mapping[str, Any],
        reason: str,
    ) -> ModelEvent:
        try:
            return next_event(
                state,
                kind,
                version,
                data=data,
                actor=self.actor,
                reason=reason,
                now_ms=self._clock(),
                event_id=uuid.uuid4().hex,
            )
        except ValueError as error:
            raise LifecycleError(f"{kind} refused: {error}") from None

    async def _change(
        self,
        kind: EventKind,
        version: str,
        data: Mapping[str, Any],
        reason: str,
        *,
        resolve: bool = True,
    ) -> ModelEvent:
        state = state_at(await self.log.read(), self.model)
        if resolve:
            version = resolve_version(state, version)
        event = self._next(state, kind, version, data, reason)
        offset = await self.log.append(event)
        logged = await self.log.read()
        before = state_at(logged, self.model, offset=offset - 1)
        if apply(before, event) is before:
            raise LifecycleError(
                f"another change landed first; retry ({kind} of {version} at offset {offset} "
                "was not applied)"
            )
        try:
            await asyncio.to_thread(self._set_aliases, state_at(logged, self.model))
        except Exception as error:  # the change stands: the log is the source of truth
            raise LifecycleError(
                f"{kind} of {version} is in the log at offset {offset}, but the registry's "
                f"aliases were not set ({error}); `headrace model reconcile` shows them"
            ) from error
        return event

    def _set_aliases(self, state: ModelState) -> list[AliasDifference]:
        actual = self.registry.aliases(self.model)
        differences = reconcile(expected_aliases(state), actual)
        for difference in differences:
            if difference.expected is None:
                self.registry.delete_alias(self.model, difference.alias)
            else:
                self.registry.set_alias(self.model, difference.alias, difference.expected)
        return differences
