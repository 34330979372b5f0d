"""Typed settings, read from environment variables at the edge.

Every knob has a default that works with ``headrace infra up`` on loopback, so a worker
needs no configuration on a developer machine and only ``HEADRACE_BROKER`` (and friends)
when pointed at an existing cluster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.event_loop import EVENT_LOOPS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = Path(__file__).resolve().parent / "domains" / "payments.toml"
# The offline writer's batches (the worker's agent and `headrace offline-writer` alike):
# at most this many records, written once the oldest has waited this long.
OFFLINE_BATCH_ROWS = 20_000
OFFLINE_WITHIN_S = 5.0


PREDICTION_CACHES = ("memory", "redis", "off")


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class TopicNames:
    raw: str = "events.raw"
    valid: str = "events.valid"
    rejected: str = "events.rejected"
    features: str = "features"
    predictions: str = "predictions"
    labels: str = "labels"
    model_events: str = "model.events"
    outcomes: str = "outcomes"
    review_queue: str = "review.queue"
    drift_reports: str = "drift.reports"
    alerts: str = "alerts"
    explanations: str = "explanations"

    def prefixed(self, prefix: str) -> TopicNames:
        if not prefix:
            return self
        return TopicNames(
            **{name: prefix + value for name, value in self.__dict__.items()},
        )


@dataclass(frozen=True)
class Settings:
    app_id: str = "headrace"
    broker: str = "kafka://127.0.0.1:9092"
    store: str = "rocksdb://"
    data_dir: Path = REPO_ROOT / ".headrace" / "worker"
    web_port: int = 6066
    web_bind: str = "127.0.0.1"  # the web server's address; 0.0.0.0 in a container
    partitions: int = 4
    spec_path: Path = DEFAULT_SPEC
    topics: TopicNames = field(default_factory=TopicNames)
    redis_url: str = "redis://127.0.0.1:6390/0"  # empty: serve features from the worker
    s3_endpoint_url: str = "http://127.0.0.1:5055"
    offline_url: str = ""  # empty: <data_dir>/<app_id>/offline; or s3://bucket/prefix
    online_ttl_s: int = 86_400
    model_dir: str = ""  # a model directory (headrace model train); empty: no scoring
    backend: str = ""  # a backend name; empty: the best one this machine runs
    score_max_batch: int = 256  # the most feature records scored in one batch
    score_within_ms: int = 20  # the longest the scoring agent waits to fill a batch
    score_budget_ms: int = 500  # features record to prediction; later: fast path, flagged
    # How long the producer holds a record to fill a batch: 5 ms keeps the latency; 20 ms
    # drained about 12% more events per second here, and adds up to 20 ms per Kafka hop at low
    # load (BENCHMARKS.md).
    producer_linger_ms: int = 5
    # The worker's event loop: uvloop, or asyncio's own (``streams.event_loop``).
    event_loop: str = "uvloop"
    # The first generation's garbage collection threshold, with start-up's objects frozen
    # (``streams.garbage``); 0: CPython's collector as it is (700). BENCHMARKS.md: at
    # 50,000 the worker drained 5.5% more events per second for 8% less CPU an event.
    gc_threshold: int = 50_000
    # Score in the ingest agent, in the batches it reads (one Kafka hop), or, with False,
    # in an agent reading the features topic back (two): BENCHMARKS.md compares them.
    score_in_ingest: bool = True
    # Write the offline store from an agent of the worker, or, with False, leave it to a
    # `headrace offline-writer` process beside it (its own consumer group and CPU).
    offline_in_worker: bool = True
    prediction_cache: str = "memory"  # memory (per worker), redis (shared) or off
    model_name: str = "payments-fraud"  # the registered model the worker serves
    serve_registry: bool = False  # serve model_name as model.events says (with no model_dir)
    feedback: bool = True  # with scoring: label join, outcomes, review queue
    drift: bool = True  # with scoring: PSI/KL and River detectors against the references
    drift_threshold: float = 0.1  # PSI above this raises an alert
    drift_window: int = 5_000  # the latest decisions a drift report covers
    drift_error_min_rise: float = 0.05  # the least rise of the error rate that alerts
    explain_share: float = 0.01  # share of decisions explained (Shapley values); 0: none
    # Explain in a child process (``models.explainer``), not in a thread of the worker.
    explain_process: bool = True
    # Serve GET /debug/profile?seconds=N (``streams.sampler``: the worker's stacks sampled
    # by CPU time for N seconds, folded). Off unless asked: anyone reaching the web port
    # could make the worker sample itself.
    debug_profile: bool = False
    retrain_on_drift: bool = False  # retrain when the champion drifts (registry mode)
    retrain_every_s: int = 0  # retrain on this period too; 0: never
    retrain_cooldown_s: int = 600  # the least time between two retrainings
    retrain_alerts: tuple[str, ...] = ()  # alert features that retrain (model.error, ...); all
    retrain_settle_s: int = 0  # >0: wait this long after the alert, train on labels after it
    rollout_controller: bool = True  # with serve_registry: shift, promote, roll back canaries
    rollout_min_samples: int = 200  # labelled outcomes per arm before a decision on errors
    rollout_max_samples: int = 2_000  # per arm and step: an undecided canary is rolled back
    rollout_margin_pct: float = 2.0  # non-inferiority margin on the error rate, in points
    rollout_p99_slo_ms: float = 50.0  # a canary's p99 scoring latency above this: roll back
    # MLflow's registry: a sqlite file and a local artifact folder by default, or a server.
    mlflow_uri: str = f"sqlite:///{REPO_ROOT / '.headrace' / 'mlflow' / 'mlflow.db'}"
    mlflow_artifacts: str = str(REPO_ROOT / ".headrace" / "mlflow" / "artifacts")

    @property
    def online_key_prefix(self) -> str:
        return f"{self.app_id}:features:"

    @property
    def offline_location(self) -> str:
        return self.offline_url or str(self.data_dir / self.app_id / "offline")

    def offline_storage_options(self) -> dict[str, object]:
        """fsspec options for an ``s3://`` offline URL (credentials from the environment)."""
        if not self.offline_location.startswith("s3://"):
            return {}
        return {
            "key": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "client_kwargs": {"endpoint_url": self.s3_endpoint_url},
        }

    @property
    def bootstrap_servers(self) -> str:
        """The broker list in the plain ``host:port,...`` form that aiokafka takes."""
        return ",".join(url.split("://", 1)[-1] for url in self.broker.split(";"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        prefix = env.get("HEADRACE_TOPIC_PREFIX", "")
        # Without explicit URLs, follow the ports `headrace infra up` was given.
        kafka_port = _int(env, "HEADRACE_KAFKA_PORT", 9092, minimum=1)
        redis_port = _int(env, "HEADRACE_REDIS_PORT", 6390, minimum=1)
        s3_port = _int(env, "HEADRACE_S3_PORT", 5055, minimum=1)
        min_samples = _int(
            env, "HEADRACE_ROLLOUT_MIN_SAMPLES", defaults.rollout_min_samples, minimum=1
        )
        return cls(
            app_id=env.get("HEADRACE_APP_ID", defaults.app_id),
            broker=env.get("HEADRACE_BROKER", f"kafka://127.0.0.1:{kafka_port}"),
            store=env.get("HEADRACE_STORE", defaults.store),
            data_dir=Path(env.get("HEADRACE_DATA_DIR", str(defaults.data_dir))),
            web_port=_int(env, "HEADRACE_WEB_PORT", defaults.web_port, minimum=1),
            web_bind=env.get("HEADRACE_WEB_BIND") or defaults.web_bind,
            partitions=_int(env, "HEADRACE_PARTITIONS", defaults.partitions, minimum=1),
            spec_path=Path(env.get("HEADRACE_SPEC", str(defaults.spec_path))),
            topics=TopicNames().prefixed(prefix),
            redis_url=env.get("HEADRACE_REDIS_URL", f"redis://127.0.0.1:{redis_port}/0"),
            s3_endpoint_url=env.get("HEADRACE_S3_ENDPOINT_URL", f"http://127.0.0.1:{s3_port}"),
            offline_url=env.get("HEADRACE_OFFLINE_URL", ""),
            online_ttl_s=_int(env, "HEADRACE_ONLINE_TTL_S", defaults.online_ttl_s, minimum=1),
            model_dir=env.get("HEADRACE_MODEL_DIR", ""),
            backend=env.get("HEADRACE_BACKEND", ""),
            score_max_batch=_int(
                env, "HEADRACE_SCORE_MAX_BATCH", defaults.score_max_batch, minimum=1
            ),
            score_within_ms=_int(
                env, "HEADRACE_SCORE_WITHIN_MS", defaults.score_within_ms, minimum=1
            ),
            producer_linger_ms=_int(
                env, "HEADRACE_PRODUCER_LINGER_MS", defaults.producer_linger_ms, minimum=0
            ),
            event_loop=_choice(env, "HEADRACE_EVENT_LOOP", defaults.event_loop, EVENT_LOOPS),
            gc_threshold=_int(env, "HEADRACE_GC_THRESHOLD", defaults.gc_threshold, minimum=0),
            score_budget_ms=_int(
                env, "HEADRACE_SCORE_BUDGET_MS", defaults.score_budget_ms, minimum=1
            ),
            model_name=env.get("HEADRACE_MODEL_NAME", defaults.model_name),
            serve_registry=_choice(env, "HEADRACE_SERVE_REGISTRY", "0", ("0", "1")) == "1",
            score_in_ingest=_choice(env, "HEADRACE_SCORE_IN_INGEST", "1", ("0", "1")) == "1",
            offline_in_worker=_choice(env, "HEADRACE_OFFLINE_IN_WORKER", "1", ("0", "1")) == "1",
            feedback=_choice(env, "HEADRACE_FEEDBACK", "1", ("0", "1")) == "1",
            drift=_choice(env, "HEADRACE_DRIFT", "1", ("0", "1")) == "1",
            drift_threshold=_float(env, "HEADRACE_DRIFT_THRESHOLD", defaults.drift_threshold),
            drift_window=_int(env, "HEADRACE_DRIFT_WINDOW", defaults.drift_window, minimum=1),
            drift_error_min_rise=_float(
                env, "HEADRACE_DRIFT_ERROR_MIN_RISE", defaults.drift_error_min_rise
            ),
            explain_share=_share(env, "HEADRACE_EXPLAIN_SHARE", defaults.explain_share),
            explain_process=_choice(env, "HEADRACE_EXPLAIN_PROCESS", "1", ("0", "1")) == "1",
            debug_profile=_choice(env, "HEADRACE_DEBUG_PROFILE", "0", ("0", "1")) == "1",
            retrain_on_drift=_choice(env, "HEADRACE_RETRAIN_ON_DRIFT", "0", ("0", "1")) == "1",
            retrain_every_s=_int(env, "HEADRACE_RETRAIN_EVERY_S", 0, minimum=0),
            retrain_cooldown_s=_int(
                env, "HEADRACE_RETRAIN_COOLDOWN_S", defaults.retrain_cooldown_s, minimum=0
            ),
            retrain_alerts=tuple(
                name.strip()
                for name in env.get("HEADRACE_RETRAIN_ALERTS", "").split(",")
                if name.strip()
            ),
            retrain_settle_s=_int(env, "HEADRACE_RETRAIN_SETTLE_S", 0, minimum=0),
            rollout_controller=_choice(env, "HEADRACE_ROLLOUT_CONTROLLER", "1", ("0", "1")) == "1",
            rollout_min_samples=min_samples,
            rollout_max_samples=_int(
                env,
                "HEADRACE_ROLLOUT_MAX_SAMPLES",
                max(defaults.rollout_max_samples, min_samples),
                minimum=min_samples,
            ),
            rollout_margin_pct=_float(
                env, "HEADRACE_ROLLOUT_MARGIN_PCT", defaults.rollout_margin_pct
            ),
            rollout_p99_slo_ms=_float(
                env, "HEADRACE_ROLLOUT_P99_SLO_MS", defaults.rollout_p99_slo_ms
            ),
            mlflow_uri=env.get("HEADRACE_MLFLOW_URI", defaults.mlflow_uri),
            mlflow_artifacts=env.get("HEADRACE_MLFLOW_ARTIFACTS", defaults.mlflow_artifacts),
            prediction_cache=_choice(
                env, "HEADRACE_PREDICTION_CACHE", defaults.prediction_cache, PREDICTION_CACHES
            ),
        )


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a positive number, got {text!r}")
    return value


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise SettingsError(f"{name} must be between 0 and 1, got {text!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value
