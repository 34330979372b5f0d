"""The worker's metrics and live dashboard, while a stream of payments is being scored.

A worker with its web server scores payments (and joins labels) from the real broker;
while the stream runs, headless Chromium loads ``/dashboard/`` and the page must show live
figures: a non-zero throughput, latency quantiles, the model version. A screenshot of the
page is kept under ``test-artifacts/``. ``/metrics`` must show the main families with
non-zero samples. ``/debug/profile`` (on here) answers the worker's stacks, folded, with
the ingest agent among them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from headrace import scenario
from headrace.kafka_io import produce
from headrace.worker_process import WorkerProcess
from models.dataset import demo_training_set
from models.scoring import model_version
from models.train_model import train_model
from models.training import TrainingConfig
from streams.dashboard import dashboard_url
from streams.sampler import self_shares
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import ARTIFACTS, IsolatedRun

pytestmark = pytest.mark.integration

EVENTS = 6_000
RATE = 200  # events/s: the stream lasts about 30 s
SCREENSHOT = ARTIFACTS / "dashboard.png"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("dashboard-model")
    data = demo_training_set(load_spec(spec_path), 3_000, seed=7)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=2))
    return directory


class ElementTexts(HTMLParser):
    """The text of every element with an id, from the DOM Chromium dumps."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "img", "input", "meta", "link", "line", "polyline"}:
            return
        element_id = dict(attrs).get("id")
        self._open.append(element_id)
        if element_id:
            self.texts.setdefault(element_id, "")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"br", "img", "input", "meta", "link", "line", "polyline"}:
            return
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self._open:
            if element_id:
                self.texts[element_id] += data


def chromium(*args: str, profile: Path) -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed: deploy/install-chromium.sh"
    done = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=6000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2_000:]
    return done.stdout


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own worker
        data: dict[str, Any] = orjson.loads(response.read())
        return data


def scrape(url: str) -> dict[str, list[Any]]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own worker
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def total(families: dict[str, list[Any]], family: str, sample: str | None = None) -> float:
    name = sample or f"{family}_total"
    return float(sum(s.value for s in families[family] if s.name == name))


def labels_for(messages: list[Any]) -> list[tuple[bytes | None, bytes]]:
    """A label for every valid payment: fraud for one in ten, at random but repeatable."""
    return [
        (
            m.event_id.encode(),
            orjson.dumps(
                {
                    "request_id": m.event_id,
                    "label": int(sum(m.event_id.encode()) % 10 == 0),
                    "label_time": int(time.time() * 1000),
                }
            ),
        )
        for m in messages
        if m.expected == VALID and m.event_id
    ]


def wait_for_live_figures(data_url: str, worker: WorkerProcess) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert worker.alive, worker.log_tail()
        data = get_json(data_url)
        if data["throughput"]["ingest"] > 0 and data["throughput"]["scored"] > 0:
            return data
        time.sleep(1.0)
    pytest.fail(f"no live throughput on the dashboard within 120 s: {data}")


def check_page(url: str, version: str, profile: Path) -> None:
    """Load the page in headless Chromium: live figures, then a screenshot."""
    page = ElementTexts()
    page.feed(chromium("--dump-dom", url, profile=profile / "dom"))
    texts = page.texts
    assert texts["status"].startswith("live"), texts["status"]
    ingest_rate = float(texts["rate-ingest"])
    scored_rate = float(texts["rate-scored"])
    assert ingest_rate > 0
    assert scored_rate > 0
    e2e_p50 = float(texts["latency-end_to_end-p50"])
    e2e_p99 = float(texts["latency-end_to_end-p99"])
    ingest_p50 = float(texts["latency-ingest-p50"])
    assert 0 < e2e_p50 <= e2e_p99
    assert ingest_p50 > 0
    assert texts["model-version"] == version
    assert version in texts["model-timeline"]
    assert "100.0%" in texts["traffic"]
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    chromium(
        f"--screenshot={SCREENSHOT}",
        "--window-size=1280,1000",
        "--hide-scrollbars",
        url,
        profile=profile / "screenshot",
    )
    assert SCREENSHOT.stat().st_size > 10_000
    print(
        f"dashboard: ingest {ingest_rate}/s scored {scored_rate}/s "
        f"end-to-end p50 {e2e_p50} ms p99 {e2e_p99} ms ingest p50 {ingest_p50} ms"
    )


def check_profile(web_url: str) -> None:
    """Two seconds of the worker's stacks while it serves: folded lines, the ingest agent
    among them; a bad length is refused."""
    with urllib.request.urlopen(f"{web_url}/debug/profile?seconds=2", timeout=30) as answer:  # noqa: S310
        folded = answer.read().decode()
    lines = folded.splitlines()
    assert lines, "an empty profile"
    for line in lines:
        stack, _, count = line.rpartition(" ")
        assert stack, line
        assert int(count) > 0, line
    assert "ingest (agents/ingest.py:" in folded
    shares = self_shares(folded, top=5)
    assert shares
    assert all(0 < share <= 1 for _, share in shares)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{web_url}/debug/profile?seconds=0", timeout=10)  # noqa: S310
    refused.value.close()
    assert refused.value.code == 400
    print(f"profile: {sum(int(line.rpartition(' ')[2]) for line in lines)} samples")


def check_metrics(metrics_url: str, valid: int) -> None:
    """After the stream: every family the worker counts has samples, most non-zero."""
    deadline = time.monotonic() + 180
    families = scrape(metrics_url)
    while time.monotonic() < deadline:
        families = scrape(metrics_url)
        if total(families, "headrace_scored") >= valid and families["headrace_drift"]:
            break
        time.sleep(2.0)
    assert total(families, "headrace_ingest_events") >= EVENTS
    assert total(families, "headrace_features") >= valid
    assert total(families, "headrace_rejected") > 0
    assert total(families, "headrace_scored") >= valid
    assert total(families, "headrace_predictions") >= valid
    assert total(families, "headrace_labels") > 0
    assert total(families, "headrace_outcomes") > 0
    assert total(families, "headrace_cache_misses") > 0
    for histogram in (
        "headrace_ingest_seconds",
        "headrace_score_chunk_seconds",
        "headrace_end_to_end_seconds",
        "headrace_score_chunk_size",
        "headrace_confidence",
    ):
        assert total(families, histogram, f"{histogram}_count") > 0, histogram
    assert families["headrace_drift"], "no drift report after the stream"
    shares = {s.labels["route"]: s.value for s in families["headrace_model_traffic_share"]}
    assert shares == {"champion": 1.0}
    assert families["headrace_consumer_lag"], "no assigned partition reported"
    assert families["headrace_review_queue_size"]
    # The worker runs on uvloop unless HEADRACE_EVENT_LOOP says otherwise.
    expected_loop = os.environ.get("HEADRACE_EVENT_LOOP") or "uvloop"
    assert [s.labels["event_loop"] for s in families["headrace_worker_info"]] == [expected_loop]
    counts = " ".join(
        f"{name}={total(families, name):.0f}"
        for name in ("headrace_ingest_events", "headrace_scored", "headrace_outcomes")
    )
    print(f"metrics: {counts} drift_samples={len(families['headrace_drift'])}")


def test_dashboard_and_metrics_show_the_live_stream(
    isolated: IsolatedRun, model_dir: Path, tmp_path: Path
) -> None:
    isolated.env["HEADRACE_MODEL_DIR"] = str(model_dir)
    isolated.env["HEADRACE_DEBUG_PROFILE"] = "1"
    settings = Settings.from_env({**os.environ, **isolated.env})
    asyncio.run(scenario.prepare_topics(settings))
    worker = WorkerProcess(
        env=isolated.env, log_path=isolated.log_dir / "worker.log", with_web=True
    )
    worker.start()
    isolated.workers.append(worker)
    asyncio.run(scenario.wait_until_serving(settings, worker))

    generated = list(PaymentGenerator(MixSpec(count=EVENTS, seed=17)))
    payments = [(m.key, m.value) for m in generated]

    async def stream() -> None:
        await asyncio.gather(
            produce(settings.bootstrap_servers, settings.topics.raw, payments, rate=RATE),
            produce(
                settings.bootstrap_servers,
                settings.topics.labels,
                labels_for(generated),
                rate=RATE,
            ),
        )

    producing = threading.Thread(target=lambda: asyncio.run(stream()))
    producing.start()
    try:
        url = dashboard_url(settings)
        data = wait_for_live_figures(url + "data.json", worker)
        assert data["model"]["champion"] == model_version(model_dir)
        check_profile(f"http://127.0.0.1:{settings.web_port}")
        assert producing.is_alive(), "the stream ended before the page was loaded"
        check_page(url, model_version(model_dir), tmp_path / "chromium")
    finally:
        producing.join()
    valid = sum(1 for m in generated if m.expected == VALID and m.event_id)
    check_metrics(f"http://127.0.0.1:{settings.web_port}/metrics", valid)
