"""docker-compose's Prometheus and Grafana: the files parse, point at each other and at the
worker, and every metric the Grafana dashboard queries is one the worker exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from streams.metrics import REGISTRY, exposed_names
from streams.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "deploy"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
PROMQL_FUNCTIONS_AND_WORDS = {"by", "le", "rate", "sum", "histogram_quantile", "increase"}


def load_yaml(path: str) -> Any:
    return yaml.safe_load((REPO_ROOT / path).read_text())


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        found[container] = host
    return found


def test_compose_runs_prometheus_and_grafana_on_the_worker_metrics() -> None:
    compose = load_yaml("docker-compose.yml")["services"]
    worker = compose["worker"]
    port = int(worker["environment"]["HEADRACE_WEB_PORT"])
    assert port == Settings().web_port
    assert worker["environment"]["HEADRACE_WEB_BIND"] == "0.0.0.0"  # noqa: S104 - in a container
    assert f"{port}:{port}" in worker["ports"]

    prometheus = compose["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    config_path = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert (REPO_ROOT / config_path).resolve() == DEPLOY / "prometheus" / "prometheus.yml"
    config = load_yaml("deploy/prometheus/prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"worker:{port}"]

    grafana = compose["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    grafana_mounts = mounts(grafana)
    assert (REPO_ROOT / grafana_mounts["/etc/grafana/provisioning"]).resolve() == PROVISIONING
    dashboards_dir = grafana_mounts["/var/lib/grafana/dashboards"]
    assert (REPO_ROOT / dashboards_dir / "headrace.json").is_file()


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    sources = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    (source,) = sources
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = load_yaml("deploy/grafana/provisioning/dashboards/headrace.yml")["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "headrace.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def test_every_metric_the_grafana_dashboard_queries_is_exposed() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "headrace.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 15
    used = {name for e in expressions for name in re.findall(r"\bheadrace_[a-z0-9_]+", e)}
    exposed = exposed_names(REGISTRY)
    assert used, "no headrace metric in the dashboard"
    assert used <= exposed, sorted(used - exposed)
    # And the main families are all on the dashboard.
    for family in (
        "headrace_ingest_events_total",
        "headrace_end_to_end_seconds_bucket",
        "headrace_rejected_total",
        "headrace_drift",
        "headrace_model_traffic_share",
        "headrace_consumer_lag",
        "headrace_review_queue_size",
        "headrace_outcome_errors_total",
    ):
        assert family in used
