"""The ``headrace`` command: Faust's own command line plus the project's commands.

``headrace worker -l info`` is Faust's worker; ``infra``, ``produce``, ``bench``,
``model``, ``replay``, ``demo`` and ``offline-writer`` sit beside it. Bad arguments give
one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from headrace import infra
from streams.event_loop import EventLoopError, loop_factory, use_event_loop
from streams.settings import OFFLINE_BATCH_ROWS, OFFLINE_WITHIN_S, Settings, SettingsError
from streams.spec import SpecError, load_spec

if TYPE_CHECKING:
    from headrace.lifecycle_commands import LifecycleCommands
    from headrace.replay import ReplayReport
    from models.lifecycle import ModelEvent, ModelState


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"headrace: {message}", err=True)
    sys.exit(code)


@click.group("infra", help="Start, stop or show the local Kafka, Redis and S3 endpoint.")
def infra_group() -> None:
    pass


def _print_services(services: list[infra.ServiceStatus]) -> None:
    for service in services:
        state = "running" if service.running else "stopped"
        pid = f" pid={service.pid}" if service.pid else ""
        click.echo(f"{service.name:<6} {state:<8} {service.address}{pid} {service.detail}".rstrip())


def _infra_command(action: str) -> None:
    state_dir = infra.default_state_dir()
    try:
        services = getattr(infra, action)(state_dir)
    except infra.InfraError as error:
        _fail(str(error), code=1)
    _print_services(services)


@infra_group.command("up", help="Start what is not running yet and wait until it answers.")
def infra_up() -> None:
    _infra_command("up")


@infra_group.command("down", help="Stop exactly the processes that `up` started.")
def infra_down() -> None:
    _infra_command("down")


@infra_group.command("status", help="Show each service and its address.")
def infra_status() -> None:
    _infra_command("status")


def _share(name: str) -> Any:
    def check(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            message = f"{name} must be between 0 and 1"
            raise click.BadParameter(message)
        return value

    return check


@click.command("produce", help="Produce synthetic payments (or a JSONL file) to events.raw.")
@click.option("--count", type=click.IntRange(min=0), default=5_000, show_default=True)
@click.option(
    "--rate", type=click.FloatRange(min=0), default=0.0, help="events/s, 0 = as fast as possible"
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--malformed", type=float, default=0.10, show_default=True, callback=_share("--malformed")
)
@click.option(
    "--duplicates", type=float, default=0.02, show_default=True, callback=_share("--duplicates")
)
@click.option(
    "--old-versions", type=float, default=0.05, show_default=True, callback=_share("--old-versions")
)
@click.option(
    "--file",
    "jsonl",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="send each line of this JSONL file instead",
)
@click.option("--topic", default=None, help="default: the events.raw topic of the settings")
def produce_command(  # noqa: PLR0913, PLR0917 - one parameter per click option
    count: int,
    rate: float,
    seed: int,
    malformed: float,
    duplicates: float,
    old_versions: float,
    jsonl: Path | None,
    topic: str | None,
) -> None:
    from headrace.produce import produce_file, produce_synthetic
    from streams.synthetic import MixSpec

    settings = Settings.from_env()
    target = topic or settings.topics.raw
    try:
        if jsonl is not None:
            summary = asyncio.run(produce_file(settings, target, jsonl, rate=rate or None))
        else:
            summary = asyncio.run(
                produce_synthetic(
                    settings,
                    target,
                    MixSpec(
                        count=count,
                        seed=seed,
                        malformed_share=malformed,
                        duplicate_share=duplicates,
                        old_version_share=old_versions,
                    ),
                    rate=rate or None,
                ),
            )
    except ValueError as error:
        _fail(str(error))
    click.echo(json.dumps(summary))


@click.group("bench", help="Benchmarks that print figures (JSON with --json).")
def bench_group() -> None:
    pass


@bench_group.command("validate", help="Validation throughput: pure logic and through the agent.")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--count", type=click.IntRange(min=1_000), default=50_000, show_default=True)
@click.option("--agent-count", type=click.IntRange(min=1_000), default=20_000, show_default=True)
@click.option("--no-agent", is_flag=True, help="skip the measurement through the real broker")
def bench_validate(as_json: bool, count: int, agent_count: int, no_agent: bool) -> None:
    from bench.validate import agent_events_per_s, pure_events_per_s

    settings = Settings.from_env()
    result: dict[str, Any] = pure_events_per_s(settings.spec_path, count=count)
    if not no_agent:
        try:
            result.update(agent_events_per_s(count=agent_count))
        except infra.InfraError as error:
            _fail(str(error), code=1)
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<28} {value}")
    click.echo(json.dumps(result))


@bench_group.command(
    "features", help="Feature throughput, online reads, Parquet writes, state RSS."
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--events", type=click.IntRange(min=250_000), default=1_000_000, show_default=True)
@click.option("--quick", is_flag=True, help="smaller runs (a smoke test, not the figures)")
def bench_features(as_json: bool, events: int, quick: bool) -> None:
    from bench.features import state_rss_growth_isolated, updates_per_s
    from bench.offline_store import parquet_rows_per_s
    from bench.online_store import online_get_latency

    settings = Settings.from_env()
    try:
        infra.up(infra.default_state_dir())
    except infra.InfraError as error:
        _fail(str(error), code=1)
    result: dict[str, Any] = {}
    result.update(updates_per_s(settings.spec_path, count=20_000 if quick else 100_000))
    result.update(online_get_latency(settings.redis_url, reads=2_000 if quick else 20_000))
    result.update(parquet_rows_per_s(settings.s3_endpoint_url, rows=20_000 if quick else 200_000))
    result.update(
        state_rss_growth_isolated(settings.spec_path, events=250_000 if quick else events)
    )
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<34} {value}")
    click.echo(json.dumps(result))


@bench_group.command("swap", help="Throughput before, during and after a hot model swap.")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--rate", type=click.FloatRange(min=50), default=150.0, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=20), default=45.0, show_default=True)
def bench_swap(as_json: bool, rate: float, seconds: float) -> None:
    from bench.swap import swap_figures

    try:
        result = swap_figures(Settings.from_env().spec_path, rate=rate, seconds=seconds)
    except infra.InfraError as error:
        _fail(str(error), code=1)
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<24} {value}")
    click.echo(json.dumps(result))


@bench_group.command("scoring", help="Backends by batch size, batching gain, ECE, coverage.")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--events", type=click.IntRange(min=2_000), default=120_000, show_default=True)
@click.option(
    "--agent/--no-agent",
    default=True,
    show_default=True,
    help="also time the scoring agent through the broker (starts the servers)",
)
def bench_scoring(as_json: bool, events: int, agent: bool) -> None:
    from bench.scoring import scoring_figures

    result = scoring_figures(Settings.from_env().spec_path, events=events, agent=agent)
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<34} {value}")
    click.echo(json.dumps(result))


@bench_group.command(
    "e2e", help="One worker end to end: max throughput, latency at 1k and 5k/s, vs a plain loop."
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--drain-events", type=click.IntRange(min=5_000), default=40_000, show_default=True)
@click.option("--paced-s", type=click.FloatRange(min=5), default=15.0, show_default=True)
@click.option(
    "--with-downstream", is_flag=True, help="also drain with the feedback and drift agents on"
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the draining worker's stacks here, sampled by CPU time for 20 s, folded",
)
@click.option(
    "--offline-writer-process",
    is_flag=True,
    help="write the offline store from `headrace offline-writer` beside each worker",
)
def bench_e2e(  # noqa: PLR0913, PLR0917 - one parameter per click option
    as_json: bool,
    drain_events: int,
    paced_s: float,
    with_downstream: bool,
    profile: Path | None,
    offline_writer_process: bool,
) -> None:
    from bench.e2e import E2eConfig, e2e_figures

    config = E2eConfig(
        drain_events=drain_events,
        paced_s=paced_s,
        with_downstream=with_downstream,
        profile_path=profile,
        offline_writer_process=offline_writer_process,
    )
    try:
        result = e2e_figures(Settings.from_env().spec_path, config)
    except infra.InfraError as error:
        _fail(str(error), code=1)
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<34} {value}")
    click.echo(json.dumps(result))


@bench_group.command(
    "demo", help="The demo's cost: CPU per payment by process, messages per payment by topic."
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--count", type=click.IntRange(min=2_000), default=24_000, show_default=True)
def bench_demo(as_json: bool, count: int) -> None:
    from bench.demo_cost import demo_figures

    try:
        result = demo_figures(count, say=lambda line: click.echo(line, err=True))
    except (infra.InfraError, RuntimeError) as error:
        _fail(str(error), code=1)
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<34} {value}")
    click.echo(json.dumps(result))


@bench_group.command(
    "drift", help="Drift on River's SEA stream: detection delay, false alarms, coverage."
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True)
def bench_drift(as_json: bool, seed: int, trials: int) -> None:
    from bench.drift import drift_figures

    result = drift_figures(seed, trials=trials)
    if not as_json:
        for key, value in result.items():
            click.echo(f"{key:<34} {value}")
    click.echo(json.dumps(result))


@click.group(
    "model",
    help="Train, register and roll out models: each change is one event on model.events.",
)
def model_group() -> None:
    pass


@model_group.command("train", help="Train the demo domain's model and write a model directory.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--events", type=click.IntRange(min=1_000), default=30_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--members", type=click.IntRange(min=1, max=32), default=5, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
def model_train(out: Path, events: int, seed: int, members: int, epochs: int) -> None:
    from models.dataset import demo_training_set
    from models.train_model import train_model
    from models.training import TrainingConfig
    from streams.spec import load_spec

    settings = Settings.from_env()
    data = demo_training_set(load_spec(settings.spec_path), events, seed)
    trained = train_model(data, out, TrainingConfig(members=members, epochs=epochs, seed=seed))
    metadata = trained.metadata
    click.echo(
        json.dumps(
            {
                "directory": str(out),
                "rows": metadata.training_rows,
                "feature_version": metadata.feature_version,
                "temperature": round(metadata.temperature, 4),
                **{k: round(v, 4) for k, v in metadata.metrics.items()},
            },
        ),
    )


# -- the model lifecycle: one event on model.events per change, then MLflow's aliases

Work = Callable[[Settings], Coroutine[Any, Any, int]]

_reason = click.option("--reason", default="", help="why, for the log")


def parse_time_ms(text: str, option: str = "--at") -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC when it names no zone)."""
    if text.isdecimal():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} takes ISO-8601 or epoch milliseconds, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _iso(timestamp_ms: int | None) -> str:
    if timestamp_ms is None:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_share(name: str, value: float, high: float) -> None:
    if not 0 < value <= high:
        _fail(f"{name} must be in (0, {high:g}], not {value:g}")


def _actor() -> str:
    """Who changes the lifecycle: HEADRACE_ACTOR, or user@host."""
    if actor := os.environ.get("HEADRACE_ACTOR"):
        return actor
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _commands(settings: Settings) -> LifecycleCommands:
    from headrace.lifecycle_commands import LifecycleCommands
    from models.registry import MlflowRegistry

    database = settings.mlflow_uri.removeprefix("sqlite:///")
    if database != settings.mlflow_uri and database not in {"", ":memory:"}:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    registry = MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts)
    return LifecycleCommands(settings, registry, actor=_actor())


def _lifecycle(work: Work, *, registry: bool = True) -> None:
    """Run ``work``; any failure is one line on stderr and exit status 1."""
    import logging

    from aiokafka.errors import KafkaError

    from headrace.lifecycle_commands import LifecycleError
    from headrace.model_log import ModelLogError

    errors: tuple[type[Exception], ...] = (
        LifecycleError,
        ModelLogError,
        LookupError,  # a version MLflow does not have
        OSError,  # a model directory that is not one
        ValueError,
    )
    if registry:
        from mlflow.exceptions import MlflowException

        errors = (*errors, MlflowException)
    settings = Settings.from_env()
    # aiokafka logs each failed connection attempt (the one error line says it once), and
    # MLflow announces the tables it creates in a new database.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        code = asyncio.run(work(settings))
    except KafkaError as error:
        _fail(f"Kafka at {settings.bootstrap_servers}: {error}", code=1)
    except errors as error:
        _fail(str(error), code=1)
    if code:
        sys.exit(code)


def _summary(data: Mapping[str, Any], width: int = 40) -> str:
    """The event's data in one short line; the full data is in ``history --json``."""
    parts = []
    for key, value in data.items():
        if key == "artifact_uri":
            continue
        if key == "artifact_hash":
            text = f"{value:.12}…"
        elif isinstance(value, float):
            text = f"{value:g}"
        elif isinstance(value, Mapping):
            text = json.dumps(value, sort_keys=True)
        else:
            text = str(value)
        parts.append(f"{key}={text if len(text) <= width else text[: width - 1] + '…'}")
    return " ".join(parts)


def _event_line(event: ModelEvent) -> str:
    detail = _summary(event.data)
    return f"#{event.sequence} {event.kind} {event.version} {detail}".rstrip()


def _change(change: Callable[[LifecycleCommands], Awaitable[ModelEvent]]) -> None:
    async def work(settings: Settings) -> int:
        event = await change(_commands(settings))
        click.echo(_event_line(event))
        return 0

    _lifecycle(work)


@model_group.command("register", help="Store a model directory in MLflow and log `registered`.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True)
@_reason
def model_register(directory: Path, reason: str) -> None:
    _change(lambda commands: commands.register(directory, reason=reason))


@model_group.command(
    "retrain", help="Train a candidate on recent labels, register it and start it in shadow."
)
@click.option(
    "--window-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="labels of events this recent; default: all",
)
@click.option(
    "--since-ms",
    type=click.IntRange(min=0),
    default=None,
    help="labels of events at or after this event time (epoch ms); with --window-hours: both",
)
@click.option("--shadow-fraction", type=float, default=1.0, show_default=True, help="in (0, 1]")
@click.option("--min-rows", type=click.IntRange(min=10), default=500, show_default=True)
def model_retrain(
    window_hours: float | None, since_ms: int | None, shadow_fraction: float, min_rows: int
) -> None:
    _check_share("--shadow-fraction", shadow_fraction, 1.0)

    async def work(settings: Settings) -> int:
        from headrace.retrain import RetrainError, retrain

        try:
            result = await retrain(
                settings,
                _commands(settings),
                window_ms=None if window_hours is None else int(window_hours * 3_600_000),
                since_ms=since_ms,
                shadow_fraction=shadow_fraction,
                min_rows=min_rows,
                now_ms=int(datetime.now(UTC).timestamp() * 1000),
            )
        except RetrainError as error:
            _fail(str(error), code=1)
        click.echo(f"trained on {result.rows} labelled rows")
        click.echo(_event_line(result.registered))
        click.echo(_event_line(result.shadow))
        return 0

    _lifecycle(work)


@model_group.command("shadow", help="Score a fraction of traffic with VERSION too, logged only.")
@click.argument("version")
@click.option("--fraction", type=float, required=True, help="in (0, 1]")
@_reason
def model_shadow(version: str, fraction: float, reason: str) -> None:
    _check_share("--fraction", fraction, 1.0)
    _change(lambda commands: commands.shadow(version, fraction=fraction, reason=reason))


@model_group.command("stop-shadow", help="Stop shadowing VERSION.")
@click.argument("version")
@_reason
def model_stop_shadow(version: str, reason: str) -> None:
    _change(lambda commands: commands.stop_shadow(version, reason=reason))


@model_group.command("canary", help="Send a percentage of traffic to VERSION.")
@click.argument("version")
@click.option("--percent", type=float, required=True, help="in (0, 100]")
@_reason
def model_canary(version: str, percent: float, reason: str) -> None:
    _check_share("--percent", percent, 100.0)
    _change(lambda commands: commands.canary(version, percent=percent, reason=reason))


@model_group.command("shift", help="Change the canary VERSION's percentage of traffic.")
@click.argument("version")
@click.option("--percent", type=float, required=True, help="in (0, 100]")
@_reason
def model_shift(version: str, percent: float, reason: str) -> None:
    _check_share("--percent", percent, 100.0)
    _change(lambda commands: commands.shift(version, percent=percent, reason=reason))


@model_group.command("promote", help="Make VERSION the champion.")
@click.argument("version")
@_reason
def model_promote(version: str, reason: str) -> None:
    _change(lambda commands: commands.promote(version, reason=reason))


@model_group.command("rollback", help="End the canary or shadow VERSION; the champion stays.")
@click.argument("version")
@click.option("--evidence", default="{}", help="a JSON object: the figures behind the decision")
@_reason
def model_rollback(version: str, evidence: str, reason: str) -> None:
    try:
        figures = json.loads(evidence)
    except json.JSONDecodeError:
        figures = None
    if not isinstance(figures, dict):
        _fail(f"--evidence must be a JSON object, not {evidence!r}")
    _change(lambda commands: commands.rollback(version, evidence=figures, reason=reason))


@model_group.command("retire", help="Retire VERSION for good (it must not serve).")
@click.argument("version")
@_reason
def model_retire(version: str, reason: str) -> None:
    _change(lambda commands: commands.retire(version, reason=reason))


@model_group.command("history", help="Every lifecycle event of the model, in log order.")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event")
def model_history(as_json: bool) -> None:
    from headrace.lifecycle_commands import history
    from headrace.model_log import read_log

    async def work(settings: Settings) -> int:
        for entry in history(await read_log(settings), settings.model_name):
            event = entry.event
            if as_json:
                record = {"offset": entry.offset, "applied": entry.applied, **asdict(event)}
                click.echo(json.dumps({**record, "time": _iso(event.timestamp_ms)}))
                continue
            reason = f" {json.dumps(event.reason)}" if event.reason else ""
            ignored = "" if entry.applied else " (ignored: not applied by the fold)"
            click.echo(
                f"{entry.offset:>6} {_iso(event.timestamp_ms)} {_event_line(event)}"
                f" by {event.actor}{reason}{ignored}"
            )
        return 0

    _lifecycle(work, registry=False)


@model_group.command("state", help="The serving state folded from the log, now or back then.")
@click.option("--at", "at", default=None, help="the state live at this time (ISO-8601 or ms)")
@click.option("--offset", type=int, default=None, help="after the events up to this offset")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def model_state(at: str | None, offset: int | None, as_json: bool) -> None:
    from headrace.lifecycle_commands import expected_aliases, state_at
    from headrace.model_log import read_log

    if at is not None and offset is not None:
        _fail("give --at or --offset, not both")
    if offset is not None and offset < 0:
        _fail(f"--offset must be 0 or more, not {offset}")
    try:
        at_ms = None if at is None else parse_time_ms(at)
    except ValueError as error:
        _fail(str(error))

    async def work(settings: Settings) -> int:
        logged = await read_log(settings)
        state = state_at(logged, settings.model_name, at_ms=at_ms, offset=offset)
        aliases = expected_aliases(state)
        if as_json:
            click.echo(json.dumps({**asdict(state), "aliases": aliases}, sort_keys=True))
            return 0
        for line in _state_lines(state, aliases):
            click.echo(line)
        return 0

    _lifecycle(work, registry=False)


def _state_lines(state: ModelState, aliases: Mapping[str, str | None]) -> list[str]:
    when = "no events" if state.last_event_ms is None else _iso(state.last_event_ms)
    lines = [f"model     {state.model} at sequence {state.sequence} ({when})"]
    lines.append(f"champion  {state.champion or '-'}")
    canary = f"{state.canary} at {state.canary_percent:g}%" if state.canary else "-"
    lines.append(f"canary    {canary}")
    shadow = f"{state.shadow} at fraction {state.shadow_fraction:g}" if state.shadow else "-"
    lines.append(f"shadow    {shadow}")
    named = " ".join(f"{alias}={version or '-'}" for alias, version in aliases.items())
    lines.append(f"aliases   {named}")
    lines.extend(
        f"version   {info.version} {info.status} registry={info.registry_version}"
        for info in state.versions.values()
    )
    return lines


@model_group.command("reconcile", help="Compare MLflow's aliases with the log; exit 1 if apart.")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--repair", is_flag=True, help="then set the aliases from the log")
def model_reconcile(as_json: bool, repair: bool) -> None:
    async def work(settings: Settings) -> int:
        commands = _commands(settings)
        differences = await (commands.sync_aliases() if repair else commands.reconcile())
        if as_json:
            found = [asdict(difference) for difference in differences]
            click.echo(json.dumps({"differences": found, "repaired": repair}))
        for difference in [] if as_json else differences:
            click.echo(
                f"{difference.alias}: log says {difference.expected or 'none'}, "
                f"MLflow has {difference.actual or 'none'}"
            )
        return 1 if differences and not repair else 0

    _lifecycle(work)


# -- replay: re-score logged features records, compare with the logged predictions


@click.command(
    "replay",
    help="Re-score the features records of a time range (or one request) and compare with "
    "the logged predictions. Exit status: 0 when every record is reproduced, 1 when one "
    "differs or has no prediction (or on a failure, said on stderr), 2 for bad arguments.",
)
@click.option("--from", "from_text", default=None, help="ISO-8601 or epoch ms (message time)")
@click.option("--to", "to_text", default=None, help="ISO-8601 or epoch ms, inclusive")
@click.option("--model", "version", default=None, help="re-score with this version (or prefix)")
@click.option("--as-served", is_flag=True, help="with the version each record was routed to")
@click.option("--request-id", default=None, help="explain this one prediction instead")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def replay_command(  # noqa: PLR0913, PLR0917 - one parameter per click option
    from_text: str | None,
    to_text: str | None,
    version: str | None,
    as_served: bool,
    request_id: str | None,
    as_json: bool,
) -> None:
    if version is not None and as_served:
        _fail("give --model or --as-served, not both")
    from_ms, to_ms = _replay_range(from_text, to_text, request_id)

    async def work(settings: Settings) -> int:
        from headrace import replay
        from models.registry import MlflowRegistry

        registry = MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts)
        try:
            if request_id is not None:
                explained = await replay.explain(
                    settings, registry, request_id, model_version=version
                )
                lines = [] if as_json else _explanation_lines(explained)
                result, reproduced = explained, bool(explained["replay"]["identical"])
            else:
                report = await replay.run_replay(
                    settings, registry, from_ms=from_ms, to_ms=to_ms, model_version=version
                )
                lines = [] if as_json else _report_lines(report)
                result, reproduced = report.to_json(), report.all_identical
        except replay.ReplayError as error:
            click.echo(f"headrace: {error}", err=True)
            return 1
        for line in lines:
            click.echo(line)
        if as_json:
            click.echo(json.dumps(result, default=str))
        return 0 if reproduced else 1

    _lifecycle(work)


def _replay_range(
    from_text: str | None, to_text: str | None, request_id: str | None
) -> tuple[int, int]:
    """--from and --to in epoch milliseconds (0, 0 with --request-id); bad ones fail."""
    if request_id is not None:
        if from_text is not None or to_text is not None:
            _fail("give --from and --to, or --request-id, not both")
        return 0, 0
    if from_text is None or to_text is None:
        _fail("give --from and --to, or --request-id")
    try:
        from_ms, to_ms = parse_time_ms(from_text, "--from"), parse_time_ms(to_text, "--to")
    except ValueError as error:
        _fail(str(error))
    if from_ms > to_ms:
        _fail(f"--from ({_iso(from_ms)}) is after --to ({_iso(to_ms)})")
    return from_ms, to_ms


def _differences_text(differences: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{d['field']} logged {d['logged']!r}, replayed {d['replayed']!r}" for d in differences
    )


def _report_lines(report: ReplayReport) -> list[str]:
    how = "as served" if report.model_version is None else f"with {report.model_version}"
    start, end = report.range_ms or (None, None)
    counts = (
        f"{report.identical} identical, {report.differing} differing, "
        f"{report.missing_predictions} without a prediction"
    )
    also = (
        f"{report.shadows} shadow predictions, {report.redelivered} redelivered records, "
        f"{report.duplicate_predictions} duplicate predictions"
    )
    lines = [
        f"replay    {_iso(start)} .. {_iso(end)} {how} (tolerance {report.tolerance:g})",
        f"total     {report.total}: {counts}",
        f"also      {also}",
    ]
    lines.extend(
        f"version   {version} {count} records on {report.backends.get(version, '-')}"
        for version, count in sorted(report.versions.items())
    )
    lines.extend(
        f"differs   {entry['request_id']}: {_differences_text(entry['differences'])}"
        for entry in report.first_differences
    )
    lines.extend(
        f"missing   {entry['request_id']} at {_iso(entry['timestamp_ms'])} "
        f"(would be {entry['version'] or '-'} via {entry['route'] or '-'})"
        for entry in report.first_missing
    )
    return lines


def _explanation_lines(explained: Mapping[str, Any]) -> list[str]:
    at, model, output = explained["features_at"], explained["model"] or {}, explained["output"]
    event = f"entity {explained['entity_id']} event time {_iso(explained['event_time'])}"
    where = f"{at['topic']}[{at['partition']}]@{at['offset']}"
    served = f"{model.get('version')} via {explained['route']} at sequence {model.get('sequence')}"
    lines = [
        f"request   {explained['request_id']} {event}",
        f"features  version {explained['feature_version']} at {where}",
        *(f"  {name} = {value}" for name, value in (explained["features"] or {}).items()),
        f"model     {model.get('name')} {served}",
    ]
    if "error" in explained:
        lines.append(f"error     {explained['error']}")
    else:
        late = " (deadline missed)" if explained.get("deadline_missed") else ""
        lines.append(
            f"output    predicted {output.get('predicted')} probabilities "
            f"{output.get('probabilities')} by {output.get('answered_by')}{late}"
        )
        uncertainty = output.get("uncertainty") or {}
        lines.append("uncertain " + " ".join(f"{k}={v}" for k, v in uncertainty.items()))
    if state := explained["state"]:
        lines.append(f"state     {_replay_state_text(state)}")
    lines.extend(
        f"shadow    {(shadow['model'] or {}).get('version')} predicted {shadow['predicted']} "
        f"probabilities {shadow['probabilities']}"
        for shadow in explained["shadows"]
    )
    replayed = explained["replay"]
    verdict = (
        "identical"
        if replayed["identical"]
        else f"differs: {_differences_text(replayed['differences'])}"
    )
    lines.append(f"replay    {verdict} ({', '.join(replayed['backends'].values()) or '-'})")
    lines.extend(_attribution_lines(explained.get("explanation")))
    return lines


TOP_ATTRIBUTIONS = 8  # features listed by replay --request-id, by |attribution|


def _attribution_lines(explanation: Mapping[str, Any] | None) -> list[str]:
    if explanation is None:
        return ["explained none: this request was not sampled (HEADRACE_EXPLAIN_SHARE)"]
    from models.explain import top_features

    total = sum(explanation["attributions"])
    reproduced = "reproduced" if explanation.get("reproduced") else "not reproduced"
    method = (
        f"explained {explanation['method']} of class {explanation['target_class']}, "
        f"{explanation['samples']} samples against {explanation['reference_rows']} "
        f"{explanation['reference']} rows, seed {explanation['seed']} ({reproduced})"
    )
    total_line = (
        f"  base {explanation['base_value']:.4f} + attributions {total:+.4f} "
        f"= probability {explanation['probability']:.4f}"
    )
    lines = [method, total_line]
    lines.extend(
        f"  {name} = {value} {attribution:+.4f}"
        for name, value, attribution in top_features(explanation, TOP_ATTRIBUTIONS)
    )
    return lines


def _replay_state_text(state: Mapping[str, Any]) -> str:
    canary = f"{state['canary']} at {state['canary_percent']:g}%" if state["canary"] else "-"
    shadow = f"{state['shadow']} at {state['shadow_fraction']:g}" if state["shadow"] else "-"
    return (
        f"sequence {state['sequence']} ({_iso(state['last_event_ms'])}): "
        f"champion {state['champion'] or '-'}, canary {canary}, shadow {shadow}"
    )


@click.command(
    "demo",
    help="Servers, v1, a worker; payments with a concept drift: detect, retrain, roll out.",
)
@click.option("--count", type=click.IntRange(min=1_000), default=30_000, show_default=True)
@click.option("--rate", type=click.FloatRange(min=10, max=5_000), default=200.0, show_default=True)
@click.option(
    "--drift-at",
    type=click.FloatRange(min=0.05, max=0.9),
    default=0.3,
    show_default=True,
    help="where in the stream the fraud pattern changes",
)
@click.option("--keep-running", is_flag=True, help="keep the worker and dashboard up afterwards")
def demo_command(count: int, rate: float, drift_at: float, keep_running: bool) -> None:
    from headrace.demo import run_demo

    try:
        code = run_demo(count=count, rate=rate, drift_at=drift_at, keep_running=keep_running)
    except infra.InfraError as error:
        _fail(str(error), code=1)
    sys.exit(code)


@click.command(
    "offline-writer",
    help="Write the features topic to the offline store, beside workers run with "
    "HEADRACE_OFFLINE_IN_WORKER=0; SIGTERM or Ctrl-C writes what is held and stops.",
)
@click.option(
    "--batch-rows", type=click.IntRange(min=1), default=OFFLINE_BATCH_ROWS, show_default=True
)
@click.option(
    "--within-s",
    type=click.FloatRange(min=0.01, max=3_600),
    default=OFFLINE_WITHIN_S,
    show_default=True,
    help="the longest a record waits to be written",
)
def offline_writer_command(batch_rows: int, within_s: float) -> None:
    import signal

    from aiokafka.errors import KafkaError

    from headrace.offline_writer import run_offline_writer

    settings = Settings.from_env()

    async def work() -> dict[str, int]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        counts = await run_offline_writer(settings, stop, batch_rows=batch_rows, within_s=within_s)
        return asdict(counts)

    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            counts = runner.run(work())
    except EventLoopError as error:
        _fail(str(error))
    except KafkaError as error:
        _fail(f"Kafka at {settings.bootstrap_servers}: {error}", code=1)
    except OSError as error:
        _fail(f"offline store at {settings.offline_location}: {error}", code=1)
    click.echo(json.dumps(counts))


PROJECT_COMMANDS = (
    infra_group,
    produce_command,
    bench_group,
    model_group,
    replay_command,
    demo_command,
    offline_writer_command,
)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings.from_env()
        light = {command.name: command for command in PROJECT_COMMANDS}
        if args[:1] and args[0] in light:
            if args[0] != "infra":
                load_spec(settings.spec_path)  # a bad domain spec is reported up front
            # Only the worker needs the Faust app in this process; the project's own
            # commands start workers as child processes when they need one.
            root: click.Group = click.Group("headrace", commands=[light[args[0]]])
            root.main(args, prog_name="headrace", standalone_mode=False)
            return
        # Before faust makes a loop: the worker's, and its consumer thread's.
        use_event_loop(settings.event_loop)
        app = _load_app()
    except (SettingsError, SpecError, EventLoopError) as error:
        _fail(str(error))
    except click.ClickException as error:
        _fail(error.format_message(), code=error.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", code=130)
    del settings
    from faust.cli.faust import cli

    for command in PROJECT_COMMANDS:
        cli.add_command(command)
    try:
        cli.main(args, prog_name="headrace", standalone_mode=False, app=app)
    except click.ClickException as error:
        _fail(error.format_message(), code=error.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", code=130)


def _load_app() -> Any:
    import agents.feedback
    import agents.ingest
    import agents.retrain
    import agents.rollout
    import agents.score
    import agents.stores
    import agents.web  # noqa: F401
    from streams.app import app

    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    return app
