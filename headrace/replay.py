"""Replay for debugging: re-score logged ``features`` records and compare with the log.

``run_replay`` reads the ``features`` records whose Kafka message timestamps lie in
``[from_ms, to_ms]`` (both inclusive; the start and end offsets come from
``offsets_for_times``) and the ``predictions`` topic in full, indexed by request id.
Shadow predictions are counted, never compared: the decision is what was answered.

* As served (the default): a record is routed again, by its request id, with the state
  folded from ``model.events`` up to the ``model.sequence`` its prediction logged (the
  events with that sequence or less), and scored with the version that route picks. The
  route and the version must match the logged ones. A record with no logged prediction
  is routed with the state live at its message timestamp and reported as missing.
* Pinned (``pinned`` a version id): every record is scored with that version; the route
  is not compared, the version is.

A prediction answered on the fast path (``answered_by: fast_path``, the record was past
its deadline) is re-scored on the fast path too. Records are re-scored in batches per
version. The report counts ``total``, ``identical``, ``differing`` and
``missing_predictions`` (their sum is ``total``) and lists the first differences in
record order.

Tolerance: probabilities and uncertainty numbers agree when they are within
``TOLERANCE`` = 1e-9 absolute; classes, conformal sets, ``answered_by``, version and route
must be equal. Measured with the ONNX Runtime CPU backend on a cascade model, rescoring
3,000 records in batches of 1 to 1,000 rather than all at once: ONNX Runtime's member
probabilities were bit-identical at every batch size, and the final numbers moved by at
most 3e-15, all from numpy's float64 matrix-vector product in the triage model, whose
summation order depends on the batch shape (``tests/unit/test_replay.py`` fails with
exact equality). 1e-9 is six orders of magnitude above that and two below the float32
rounding (about 1e-7) that a different model, backend or feature vector shows. So the
replay must run the backend the worker ran: ``HEADRACE_BACKEND``, or the same machine's
default; the report names the backend of each version.

``explain`` is the one-request view: the logged decision, the features record it points
at, the state it was routed by, its shadow predictions, and the same comparison; and the
request's feature attributions from the ``explanations`` topic when the worker sampled it
(``models.explain``), computed again with the version's model to check they reproduce.

Known limit: a worker that failed to load a canary routes its records to the champion
until the ``load_failed`` event lands; replay routes them to the canary, and reports the
route as different.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from headrace.lifecycle_commands import resolve_version, state_at
from headrace.model_log import read_log
from models.explain import explain_prediction
from models.fleet import ArtifactMismatchError, verified_download
from models.lifecycle import ModelEvent, ModelState, VersionInfo, apply
from models.registry import ModelRegistry
from models.router import route
from models.scoring import LoadedModel, conformal_for, load_served_model, model_outputs
from streams.settings import Settings

TOLERANCE = 1e-9  # absolute, on probabilities and uncertainty numbers (module doc)
FIRST = 10  # differences and missing predictions listed in a report
RESCORE_BATCH = 4_096
_NUMBERS = ("confidence", "entropy", "mutual_information", "conformal_alpha")
_POLL_MS = 200
_STALL_S = 30.0
_REQUEST_TIMEOUT_MS = 10_000


# (version, feature records, fast path) -> one output (or None: not scorable) per record
class Score(Protocol):
    """Re-scores records with a version; ``alpha``: the conformal level the state had
    adapted that version to (None: the trained one)."""

    def __call__(
        self,
        version: str,
        records: Sequence[Mapping[str, Any]],
        fast: bool,
        alpha: float | None = None,
    ) -> list[dict[str, Any] | None]: ...


class ReplayError(RuntimeError):
    """The replay cannot run as asked; the message says why."""


# -- comparing one prediction ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    field: str  # e.g. "route", "probabilities[1]", "uncertainty.entropy"
    logged: Any
    replayed: Any


@dataclass(frozen=True, slots=True)
class Replayed:
    version: str
    route: str | None  # None: not compared (a pinned version)
    output: Mapping[str, Any] | None  # None: not scorable (feature version mismatch)


def _close(logged: Any, replayed: Any, tolerance: float) -> bool:
    numbers = all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in (logged, replayed)
    )
    if not numbers:
        return bool(logged == replayed)
    if math.isnan(logged) or math.isnan(replayed):
        return math.isnan(logged) and math.isnan(replayed)
    return bool(abs(logged - replayed) <= tolerance)


def _compared(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """The compared fields of a prediction (or a model output), flattened by name."""
    uncertainty = prediction.get("uncertainty") or {}
    flat = {key: prediction.get(key) for key in ("answered_by", "predicted", "low_confidence")}
    flat.update({f"uncertainty.{k}": uncertainty.get(k) for k in ("conformal_set", *_NUMBERS)})
    probabilities = prediction.get("probabilities") or []
    flat.update({f"probabilities[{i}]": p for i, p in enumerate(probabilities)})
    return flat


def compare(
    logged: Mapping[str, Any], replayed: Replayed, *, tolerance: float = TOLERANCE
) -> list[Difference]:
    """How the re-scored output differs from the logged prediction; empty when identical."""
    found: list[Difference] = []
    logged_version = (logged.get("model") or {}).get("version")
    if logged_version != replayed.version:
        found.append(Difference("model.version", logged_version, replayed.version))
    if replayed.route is not None and logged.get("route") != replayed.route:
        found.append(Difference("route", logged.get("route"), replayed.route))
    output = replayed.output
    if output is None or "error" in logged:
        if (output is None) != ("error" in logged):
            scored = "scored" if output else "not scored: feature version mismatch"
            found.append(Difference("error", logged.get("error"), scored))
        return found
    was, now = _compared(logged), _compared(output)
    found.extend(
        Difference(key, was.get(key), now.get(key))
        for key in {**was, **now}
        if not _close(was.get(key), now.get(key), tolerance)
    )
    return found


# -- the serving state at any sequence or time ----------------------------------------------


@dataclass(frozen=True)
class ServingHistory:
    """The model's state after each applied event: ``states[n]`` is the state at sequence n."""

    states: tuple[ModelState, ...]

    @classmethod
    def of(cls, events: Iterable[ModelEvent], model: str) -> ServingHistory:
        state = ModelState(model)
        states = [state]
        for event in events:
            if event.model != model:
                continue
            after = apply(state, event)
            if after is not state:
                states.append(after)
                state = after
        return cls(tuple(states))

    def at_sequence(self, sequence: int) -> ModelState | None:
        """The state folded from the events with ``sequence`` or less; None past the log."""
        return self.states[sequence] if 0 <= sequence < len(self.states) else None

    def at_time(self, at_ms: int) -> ModelState:
        """The state live at ``at_ms``: applied event times never decrease (``fold_until``)."""
        live = self.states[0]
        for state in self.states[1:]:
            if state.last_event_ms is None or state.last_event_ms > at_ms:
                break
            live = state
        return live


# -- replaying records -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeaturesMessage:
    record: Mapping[str, Any]  # the features record as the worker read it
    timestamp_ms: int  # the Kafka message timestamp: the worker's deadline counted from it


@dataclass
class ReplayReport:
    mode: str  # "as_served" or "model"
    model_version: str | None = None  # the pinned version
    tolerance: float = TOLERANCE
    total: int = 0  # features records replayed (read again ones left out)
    identical: int = 0
    differing: int = 0
    missing_predictions: int = 0
    redelivered: int = 0  # flagged, or an event id already seen: the worker skipped them
    shadows: int = 0  # shadow predictions of the records, counted, not compared
    duplicate_predictions: int = 0  # a decision logged again for the same request id
    versions: Counter[str] = field(default_factory=Counter)  # records re-scored per version
    backends: dict[str, str] = field(default_factory=dict)  # per version
    first_differences: list[dict[str, Any]] = field(default_factory=list)
    first_missing: list[dict[str, Any]] = field(default_factory=list)
    range_ms: tuple[int, int] | None = None

    @property
    def all_identical(self) -> bool:
        return self.identical == self.total

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["versions"] = dict(self.versions)
        if span := data.pop("range_ms"):
            data["from_ms"], data["to_ms"] = span
        return data


@dataclass(frozen=True, slots=True)
class _Planned:
    index: int
    request_id: str
    record: Mapping[str, Any]
    logged: Mapping[str, Any]
    version: str
    route: str | None
    fast: bool


def replay_records(  # noqa: PLR0913 - the inputs, then keyword-only choices
    messages: Sequence[FeaturesMessage],
    decisions: Mapping[str, Mapping[str, Any]],
    history: ServingHistory,
    score: Score,
    *,
    pinned: str | None = None,
    tolerance: float = TOLERANCE,
) -> ReplayReport:
    """Re-score ``messages`` and compare with their logged ``decisions`` (module doc)."""
    report = ReplayReport("as_served" if pinned is None else "model", pinned, tolerance)
    differing: list[tuple[int, dict[str, Any]]] = []
    planned: dict[tuple[str, bool, float | None], list[_Planned]] = defaultdict(list)
    seen: set[str] = set()
    for message in messages:
        record = message.record
        request_id = str(record["event_id"])
        if record.get("redelivered") or request_id in seen:
            report.redelivered += 1
            continue
        seen.add(request_id)
        index = report.total
        report.total += 1
        logged = decisions.get(request_id)
        if logged is None:
            _missing(report, request_id, message, history, pinned)
            continue
        fast = logged.get("answered_by") == "fast_path"
        if pinned is not None:
            planned[pinned, fast, None].append(
                _Planned(index, request_id, record, logged, pinned, None, fast)
            )
            continue
        sequence = (logged.get("model") or {}).get("sequence")
        state = (
            history.at_sequence(sequence)
            if isinstance(sequence, int)
            else history.at_time(message.timestamp_ms)
        )
        chosen = None if state is None else route(state, request_id)
        if chosen is None:
            why = Difference("model.sequence", sequence, "no version serves at this sequence")
            differing.append((index, _entry(request_id, None, None, [why])))
            continue
        version = chosen.decision_version
        alpha = state.calibration.get(version, {}).get("conformal_alpha") if state else None
        planned[version, fast, alpha].append(
            _Planned(index, request_id, record, logged, version, chosen.route, fast)
        )
    for (version, fast, alpha), items in planned.items():
        for start in range(0, len(items), RESCORE_BATCH):
            chunk = items[start : start + RESCORE_BATCH]
            outputs = score(version, [p.record for p in chunk], fast, alpha)
            for item, output in zip(chunk, outputs, strict=True):
                report.versions[version] += 1
                replayed = Replayed(version, item.route, output)
                if found := compare(item.logged, replayed, tolerance=tolerance):
                    entry = _entry(item.request_id, version, item.route, found)
                    differing.append((item.index, entry))
                else:
                    report.identical += 1
            differing = _first(differing)  # only the first few are kept, in record order
    report.differing = report.total - report.identical - report.missing_predictions
    report.first_differences = [entry for _, entry in _first(differing)]
    return report


def _first(entries: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    return sorted(entries, key=lambda pair: pair[0])[:FIRST]


def _entry(
    request_id: str, version: str | None, route_kind: str | None, found: list[Difference]
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "version": version,
        "route": route_kind,
        "differences": [
            {"field": d.field, "logged": d.logged, "replayed": d.replayed} for d in found
        ],
    }


def _missing(
    report: ReplayReport,
    request_id: str,
    message: FeaturesMessage,
    history: ServingHistory,
    pinned: str | None,
) -> None:
    report.missing_predictions += 1
    if len(report.first_missing) >= FIRST:
        return
    chosen = route(history.at_time(message.timestamp_ms), request_id)
    served = (chosen.decision_version, chosen.route) if chosen else (None, None)
    report.first_missing.append(
        {
            "request_id": request_id,
            "timestamp_ms": message.timestamp_ms,
            "version": pinned or served[0],
            "route": None if pinned else served[1],
        }
    )


# -- the models -------------------------------------------------------------------------------


class VersionLoader:
    """Each version as a ``LoadedModel``, downloaded once from the registry, hash-verified,
    and built as the worker builds it (the backend of ``settings.backend``, or the best)."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, versions: Mapping[str, VersionInfo]
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._versions = versions
        self._cache_dir = settings.data_dir / settings.app_id / "replay-models"
        self.loaded: dict[str, LoadedModel] = {}

    def __call__(self, version: str) -> LoadedModel:
        if version in self.loaded:
            return self.loaded[version]
        info = self._versions.get(version)
        if info is None:
            raise ReplayError(f"version {version} is not registered in model.events")
        name = self._settings.model_name
        try:
            directory = verified_download(self._registry, name, info, self._cache_dir)
        except ArtifactMismatchError as error:
            raise ReplayError(str(error)) from None
        self.loaded[version] = load_served_model(directory, version, self._settings.backend or None)
        return self.loaded[version]

    def outputs(
        self,
        version: str,
        records: Sequence[Mapping[str, Any]],
        fast: bool,
        alpha: float | None = None,
    ) -> list[dict[str, Any] | None]:
        model = self(version)
        if alpha is not None:
            model = replace(model, conformal=conformal_for(model.metadata, alpha))
        return model_outputs(model, records, fast=fast)

    def backends(self) -> dict[str, str]:
        return {version: model.backend.name for version, model in self.loaded.items()}


# -- reading Kafka ----------------------------------------------------------------------------


@dataclass
class LoggedPredictions:
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by request id
    shadows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    duplicates: int = 0


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=_REQUEST_TIMEOUT_MS,
        fetch_max_wait_ms=100,
        max_poll_records=10_000,
    )


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    if topic not in await consumer.topics():
        raise ReplayError(f"topic {topic} does not exist")
    # The consumer learns a topic's partitions once it holds one of them (``topics()``
    # fetches a metadata snapshot of its own).
    first = TopicPartition(topic, 0)
    consumer.assign([first])
    await consumer.end_offsets([first])
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def _read_ranges(
    consumer: AIOKafkaConsumer,
    ranges: Mapping[TopicPartition, tuple[int, int]],
    keep: Callable[[Any], bool],
) -> list[Any]:
    """The records of each partition from its start offset to its end (exclusive) that
    ``keep`` accepts; ReplayError when nothing arrives for ``_STALL_S`` seconds."""
    pending = {tp: (start, end) for tp, (start, end) in ranges.items() if start < end}
    if not pending:
        return []
    consumer.assign(list(pending))
    for partition, (start, _) in pending.items():
        consumer.seek(partition, start)
    kept: list[Any] = []
    progress = time.monotonic()
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=_POLL_MS)
        for partition, records in fetched.items():
            end = pending[partition][1] if partition in pending else -1
            kept.extend(r for r in records if r.offset < end and keep(r))
        for partition in list(pending):
            if await consumer.position(partition) >= pending[partition][1]:
                consumer.pause(partition)
                del pending[partition]
        if fetched:
            progress = time.monotonic()
        elif time.monotonic() - progress > _STALL_S:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in pending)
            raise ReplayError(f"{where} not read to the end within {_STALL_S:g} s")
    return kept


async def read_features(settings: Settings, from_ms: int, to_ms: int) -> list[FeaturesMessage]:
    """The features records with message timestamps in ``[from_ms, to_ms]``, per partition
    in offset order, partitions one after the other."""
    topic = settings.topics.features
    consumer = _consumer(settings)
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(dict.fromkeys(partitions, from_ms))
        stops = await consumer.offsets_for_times(dict.fromkeys(partitions, to_ms + 1))

        def offset(found: Any, partition: TopicPartition) -> int:
            return ends[partition] if found is None else int(found.offset)

        ranges = {tp: (offset(starts[tp], tp), offset(stops[tp], tp)) for tp in partitions}
        records = await _read_ranges(consumer, ranges, lambda r: from_ms <= r.timestamp <= to_ms)
    finally:
        await consumer.stop()
    return [FeaturesMessage(orjson.loads(r.value), int(r.timestamp)) for r in records]


async def read_features_at(settings: Settings, at: Mapping[str, Any]) -> FeaturesMessage:
    """The features record at ``{topic, partition, offset}`` (a prediction's pointer)."""
    partition = TopicPartition(str(at["topic"]), int(at["partition"]))
    consumer = _consumer(settings)
    try:
        await consumer.start()
        await _partitions(consumer, partition.topic)
        offset = int(at["offset"])
        records = await _read_ranges(consumer, {partition: (offset, offset + 1)}, lambda _: True)
    finally:
        await consumer.stop()
    if not records:
        raise ReplayError(
            f"no features record at {partition.topic}[{partition.partition}]@{offset}"
        )
    return FeaturesMessage(orjson.loads(records[0].value), int(records[0].timestamp))


async def read_predictions(settings: Settings, request_ids: Iterable[str]) -> LoggedPredictions:
    """The predictions topic from the beginning to its end at the time of the call; only
    the records keyed by one of ``request_ids`` are decoded. The first decision of a
    request id is kept (the worker may write one twice after a restart)."""
    wanted = {request_id.encode() for request_id in request_ids}
    topic = settings.topics.predictions
    consumer = _consumer(settings)
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic)
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        ranges = {tp: (beginnings[tp], ends[tp]) for tp in partitions}
        records = await _read_ranges(consumer, ranges, lambda r: r.key in wanted)
    finally:
        await consumer.stop()
    logged = LoggedPredictions()
    for record in records:
        prediction = orjson.loads(record.value)
        request_id = str(prediction["request_id"])
        if prediction.get("shadow"):
            logged.shadows.setdefault(request_id, []).append(prediction)
        elif request_id in logged.decisions:
            logged.duplicates += 1
        else:
            logged.decisions[request_id] = prediction
    return logged


async def read_explanation(settings: Settings, request_id: str) -> dict[str, Any] | None:
    """The first explanation of ``request_id`` on the explanations topic; None when there
    is none (the request was not sampled) or no such topic."""
    topic = settings.topics.explanations
    consumer = _consumer(settings)
    try:
        await consumer.start()
        try:
            partitions = await _partitions(consumer, topic)
        except ReplayError:  # a deployment that never explained anything
            return None
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        ranges = {tp: (beginnings[tp], ends[tp]) for tp in partitions}
        wanted = request_id.encode()
        records = await _read_ranges(consumer, ranges, lambda r: r.key == wanted)
    finally:
        await consumer.stop()
    if not records:
        return None
    explanation: dict[str, Any] = orjson.loads(records[0].value)
    return explanation


def explanation_reproduced(
    model: LoadedModel,
    record: Mapping[str, Any],
    decision: Mapping[str, Any],
    logged: Mapping[str, Any],
    *,
    tolerance: float = TOLERANCE,
) -> bool:
    """Whether computing the explanation again gives the logged attributions and base."""
    again = explain_prediction(
        model,
        record,
        decision,
        computed_at=int(logged.get("computed_at") or 0),
        permutations=int(logged.get("permutations") or 1),
    )
    pairs = [
        *zip(again["attributions"], logged.get("attributions") or [], strict=False),
        (again["base_value"], logged.get("base_value")),
        (again["probability"], logged.get("probability")),
    ]
    return len(again["attributions"]) == len(logged.get("attributions") or []) and all(
        _close(a, b, tolerance) for a, b in pairs
    )


# -- the two commands -------------------------------------------------------------------------


async def _history(settings: Settings) -> tuple[ServingHistory, ModelState]:
    logged = await read_log(settings)
    model = settings.model_name
    return ServingHistory.of((e.event for e in logged), model), state_at(logged, model)


def _pin(latest: ModelState, version_text: str | None) -> str | None:
    return None if version_text is None else resolve_version(latest, version_text)


async def run_replay(
    settings: Settings,
    registry: ModelRegistry,
    *,
    from_ms: int,
    to_ms: int,
    model_version: str | None = None,
) -> ReplayReport:
    """Replay the features records of ``[from_ms, to_ms]``: as served, or with the version
    ``model_version`` names (an id or a unique prefix)."""
    if from_ms > to_ms:
        raise ReplayError(f"the range starts at {from_ms} ms, after its end at {to_ms} ms")
    history, latest = await _history(settings)
    pinned = _pin(latest, model_version)
    messages = await read_features(settings, from_ms, to_ms)
    request_ids = {str(m.record["event_id"]) for m in messages}
    predictions = await read_predictions(settings, request_ids)
    loader = VersionLoader(settings, registry, latest.versions)
    report = replay_records(messages, predictions.decisions, history, loader.outputs, pinned=pinned)
    report.shadows = sum(len(shadows) for shadows in predictions.shadows.values())
    report.duplicate_predictions = predictions.duplicates
    report.backends = loader.backends()
    report.range_ms = (from_ms, to_ms)
    return report


async def explain(
    settings: Settings,
    registry: ModelRegistry,
    request_id: str,
    *,
    model_version: str | None = None,
) -> dict[str, Any]:
    """One prediction: its features, version, route, output and uncertainty, the model
    state it was routed by, its shadow predictions, and whether re-scoring reproduces it."""
    history, latest = await _history(settings)
    pinned = _pin(latest, model_version)
    predictions = await read_predictions(settings, [request_id])
    decision = predictions.decisions.get(request_id)
    if decision is None:
        raise ReplayError(f"no prediction for request id {request_id!r} on the predictions topic")
    if not decision.get("features_at"):
        raise ReplayError(f"the prediction of {request_id!r} points at no features record")
    message = await read_features_at(settings, decision["features_at"])
    if message.record.get("event_id") != request_id:
        raise ReplayError(f"the features record of {request_id!r} is another event's")
    loader = VersionLoader(settings, registry, latest.versions)
    report = replay_records(
        [message], {request_id: decision}, history, loader.outputs, pinned=pinned
    )
    sequence = (decision.get("model") or {}).get("sequence")
    state = history.at_sequence(sequence) if isinstance(sequence, int) else None
    explanation = await read_explanation(settings, request_id)
    if explanation is not None:
        version = str((explanation.get("model") or {}).get("version"))
        reproduced = version in latest.versions and explanation_reproduced(
            loader(version), message.record, decision, explanation
        )
        explanation = {**explanation, "reproduced": reproduced}
    output_keys = ("probabilities", "predicted", "uncertainty", "low_confidence", "answered_by")
    return {
        "request_id": request_id,
        **{key: decision.get(key) for key in ("entity_id", "event_time", "scored_at")},
        "features_at": decision["features_at"],
        "feature_version": message.record.get("feature_version"),
        "features": message.record.get("features"),
        "model": decision.get("model"),
        "route": decision.get("route"),
        "output": {key: decision.get(key) for key in output_keys if key in decision},
        **{key: decision[key] for key in ("error", "deadline_missed") if key in decision},
        "latency_ms": decision.get("latency_ms"),
        "state": None if state is None else state_summary(state),
        "shadows": [
            {key: shadow.get(key) for key in ("model", "predicted", "probabilities")}
            for shadow in predictions.shadows.get(request_id, [])
        ],
        "explanation": explanation,
        "replay": {
            "identical": report.identical == 1,
            "mode": report.mode,
            "backends": loader.backends(),
            "tolerance": report.tolerance,
            "differences": [d for entry in report.first_differences for d in entry["differences"]],
        },
    }


def state_summary(state: ModelState) -> dict[str, Any]:
    return {
        "sequence": state.sequence,
        "last_event_ms": state.last_event_ms,
        "champion": state.champion,
        "canary": state.canary,
        "canary_percent": state.canary_percent,
        "shadow": state.shadow,
        "shadow_fraction": state.shadow_fraction,
        "versions": {version: info.status for version, info in state.versions.items()},
    }
