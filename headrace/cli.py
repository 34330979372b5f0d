"""The ``headrace`` command: Faust's own command line plus the project's commands.

``headrace worker -l info`` is Faust's worker; ``infra``, ``produce``, ``bench`` and
``demo`` sit beside it. Bad arguments give one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from headrace import infra
from streams.settings import Settings, SettingsError
from streams.spec import SpecError


def _fail(message: str, code: int = 2) -> None:
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


@bench_group.command("scoring", help="Backends by batch size, batching gain, ECE, coverage.")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--events", type=click.IntRange(min=2_000), default=60_000, show_default=True)
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


@click.group("model", help="Train models (the registry commands join here).")
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


@click.command("demo", help="Start the infrastructure and a worker, stream payments, summarise.")
@click.option("--count", type=click.IntRange(min=100), default=5_000, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0), default=2_000.0, show_default=True)
def demo_command(count: int, rate: float) -> None:
    from headrace.demo import run_demo

    try:
        code = run_demo(count=count, rate=rate)
    except infra.InfraError as error:
        _fail(str(error), code=1)
    sys.exit(code)


PROJECT_COMMANDS = (infra_group, produce_command, bench_group, model_group, demo_command)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings.from_env()
        if args[:1] == ["infra"]:
            # No Faust app needed to manage the servers.
            root: click.Group = click.Group("headrace", commands=[infra_group])
            root.main(args, prog_name="headrace", standalone_mode=False)
            return
        app = _load_app()
    except (SettingsError, SpecError) as error:
        _fail(str(error))
    except click.ClickException as error:
        _fail(error.format_message(), code=error.exit_code)
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
    import agents.ingest
    import agents.score
    import agents.stores
    import agents.web  # noqa: F401
    from streams.app import app

    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    return app
