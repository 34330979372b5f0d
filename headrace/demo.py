"""``headrace demo``: the infrastructure, a worker, a stream of payments, a summary."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import click
import orjson

from headrace import infra, scenario
from headrace.kafka_io import collect
from headrace.online import online_features
from headrace.worker_process import isolated_env
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tables.offline_store import ParquetOfflineStore


def run_demo(*, count: int, rate: float) -> int:
    click.echo(
        "headrace demo: starting Kafka, Redis and the S3 endpoint (first run downloads Kafka)"
    )
    for service in infra.up(infra.default_state_dir()):
        click.echo(f"  {service.name:<6} {service.address}")
    run_dir = REPO_ROOT / ".headrace" / "demo"
    run_name = f"demo-{int(time.time())}"
    model_dir = _demo_model(run_dir / "model")
    env = isolated_env(
        run_dir,
        name=run_name,
        HEADRACE_OFFLINE_URL=f"s3://headrace-demo/{run_name}",
        HEADRACE_MODEL_DIR=str(model_dir),
    )
    settings = Settings.from_env({**os.environ, **env})
    generator = PaymentGenerator(MixSpec(count=count, seed=int(time.time()) % 10_000))
    messages = [(m.key, m.value) for m in generator]
    expected = Counter(generator.expected)

    asyncio.run(scenario.prepare_topics(settings))
    click.echo(f"starting a worker (app {settings.app_id}, topics {settings.topics.raw} ...)")
    worker = scenario.start_worker(env, run_dir / settings.app_id, name="worker")
    try:
        asyncio.run(scenario.wait_until_serving(settings, worker))
        click.echo(
            f"producing {count} payments at up to {rate:.0f}/s, "
            f"{_share(expected)} malformed or duplicate"
        )
        started = time.perf_counter()
        with click.progressbar(length=count, label="produced") as bar:
            asyncio.run(
                scenario.produce_messages_with_progress(
                    settings, messages, rate or None, bar.update
                ),
            )
        outputs = asyncio.run(scenario.collect_outputs(settings, count, timeout_s=300))
        elapsed = time.perf_counter() - started
        code = _summarise(expected, outputs, elapsed, settings)
        _show_stores(outputs, settings)
        _show_predictions(outputs, settings)
    finally:
        worker.stop()
    return code


def _demo_model(directory: Path) -> Path:
    """Train the demo's model once (about 20 s) and reuse it on later runs."""
    if (directory / "metadata.json").exists():
        click.echo(f"model: reusing {directory}")
        return directory
    click.echo("training the demo model (ensemble of 3 MLPs on 8,000 labelled payments)")
    data = demo_training_set(load_spec(Settings.from_env().spec_path), 8_000, seed=1)
    trained = train_model(data, directory, TrainingConfig(members=3, hidden=32, epochs=6))
    metrics = trained.metadata.metrics
    click.echo(
        f"  held-out accuracy {metrics['accuracy_heldout']:.3f}, "
        f"ECE {metrics['ece_before']:.3f} -> {metrics['ece_after']:.3f} after temperature scaling"
    )
    return directory


def _show_predictions(outputs: scenario.Outputs, settings: Settings) -> None:
    wanted = {orjson.loads(r.value)["event_id"] for r in outputs.valid}
    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: len(got) >= len(wanted),
            timeout_s=60,
        ),
    )
    predictions = {p["request_id"]: p for p in (orjson.loads(r.value) for r in records)}
    if not predictions:
        click.echo("no predictions arrived")
        return
    scored = list(predictions.values())
    low = sum(1 for p in scored if p.get("low_confidence"))
    flagged = sum(1 for p in scored if p.get("predicted") == 1)
    sizes = Counter(len(p["uncertainty"]["conformal_set"]) for p in scored if "uncertainty" in p)
    click.echo(
        f"predictions: {len(predictions)} of {len(wanted)} events scored on "
        f"{settings.topics.predictions}; {flagged} predicted fraud, {low} low-confidence, "
        f"conformal set sizes {dict(sorted(sizes.items()))}"
    )


def _show_stores(outputs: scenario.Outputs, settings: Settings) -> None:
    """One entity's newest vector from Redis, and the Parquet rows on the S3 endpoint."""
    records = [orjson.loads(r.value) for r in outputs.valid]
    if not records:
        return
    newest = max(records, key=lambda r: r["event_time"])
    deadline = time.monotonic() + 10
    row = None
    while row is None and time.monotonic() < deadline:
        row = asyncio.run(online_features(settings, [newest["entity_id"]]))[0]
        if row is None or row.event_id != newest["event_id"]:
            row = None
            time.sleep(0.2)
    if row is not None:
        shown = {
            k: row.values[k]
            for k in list(row.values)[:1] + [n for n in row.values if "24h" in n][:4]
        }
        click.echo(f"online store (Redis) {row.entity_id} @ {row.event_time}: {shown}")
    store = ParquetOfflineStore(
        settings.offline_location, storage_options=settings.offline_storage_options()
    )
    deadline = time.monotonic() + 15
    rows = store.read().num_rows
    while rows < len(records) and time.monotonic() < deadline:
        time.sleep(1)
        rows = store.read().num_rows
    click.echo(
        f"offline store: {rows} Parquet rows at {settings.offline_location} "
        "(date=/hour= partitions)"
    )


def _share(expected: Counter[str]) -> str:
    total = sum(expected.values())
    bad = total - expected[VALID]
    return f"{100 * bad / max(total, 1):.1f}%"


def _summarise(
    expected: Counter[str], outputs: scenario.Outputs, elapsed: float, settings: Settings
) -> int:
    reasons = outputs.rejected_by_reason()
    click.echo("")
    click.echo(f"{'outcome':<28}{'expected':>10}{'observed':>10}")
    click.echo(f"{'valid':<28}{expected[VALID]:>10}{len(outputs.valid):>10}")
    for reason in sorted(set(reasons) | (set(expected) - {VALID})):
        click.echo(f"{'rejected ' + reason:<28}{expected[reason]:>10}{reasons[reason]:>10}")
    total = sum(expected.values())
    click.echo(
        f"{total} events through {settings.topics.raw} in {elapsed:.1f} s: "
        f"{outputs.total / elapsed:,.0f} events/s"
    )
    click.echo(
        f"dead letters with reasons: {settings.topics.rejected}; "
        f"feature records: {settings.topics.features}"
    )
    matches = len(outputs.valid) == expected[VALID] and all(
        reasons[r] == n for r, n in expected.items() if r != VALID
    )
    click.echo("every event accounted for" if matches else "MISMATCH between expected and observed")
    click.echo("the servers keep running; stop them with: make infra-down")
    return 0 if matches else 1
