"""docker-compose.yml offers the same stack as the scripts, wired to the project's settings.

No Docker engine runs here, so the file is parsed and checked against the
settings the worker would build from the environment it gives the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_services_are_the_documented_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "redis",
        "worker",
        "prometheus",
        "grafana",
        "mailpit",
    }
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:3.9")
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert str(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == "1"


def test_worker_environment_is_valid_settings_and_matches_the_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    for key, value in worker["environment"].items():
        assert key.startswith("CREDITWATCH_"), key
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    host, port = settings.kafka.bootstrap_servers.split(":")
    assert host == "kafka"
    assert (
        f"PLAINTEXT://kafka:{port}"
        in compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert settings.redis.url.startswith("redis://redis:6379")
    assert settings.smtp.host == "mailpit"
    assert any(
        p.endswith(f":{settings.smtp.port}") for p in compose["services"]["mailpit"]["ports"]
    )
    assert any(p.endswith(f":{settings.http_port}") for p in worker["ports"])
    assert settings.http_host == "0.0.0.0"  # reachable from Prometheus' container


def test_host_ports_match_the_local_scripts_defaults(compose: dict[str, Any]) -> None:
    defaults = Settings()
    kafka_port = defaults.kafka.bootstrap_servers.rsplit(":", 1)[1]
    assert f"127.0.0.1:{kafka_port}:{kafka_port}" in compose["services"]["kafka"]["ports"]
    redis_port = defaults.redis.url.rsplit(":", 1)[1].split("/")[0]
    assert f"127.0.0.1:{redis_port}:6379" in compose["services"]["redis"]["ports"]


def test_prometheus_scrapes_the_worker_and_grafana_is_provisioned(
    compose: dict[str, Any],
) -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert f"worker:{Settings().http_port}" in targets
    for volume in (
        compose["services"]["grafana"]["volumes"] + compose["services"]["prometheus"]["volumes"]
    ):
        source = volume.split(":")[0]
        assert (ROOT / source).exists(), source
