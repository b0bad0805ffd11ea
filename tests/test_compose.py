"""docker-compose.yml, checked without a Docker engine: the compose-spec schema, every file
it references, ports, and settings that agree between Kafka, workers, Prometheus and
Grafana."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from leadstream.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = [name for name, svc in SERVICES.items() if svc.get("command", [None])[0] == "worker"]


def _env(svc: dict) -> dict:
    env = svc.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_file_matches_the_compose_specification():
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                          "vendor.compose-spec", str(REPO / "docker-compose.yml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_referenced_file_exists():
    for name, svc in SERVICES.items():
        if "build" in svc:
            ctx = REPO / (svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"])
            assert (ctx / "Dockerfile").is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (REPO / src).exists(), f"{name}: {src}"
            else:
                assert src in COMPOSE["volumes"], f"{name}: undeclared volume {src}"
        for dep in svc.get("depends_on", []):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies missing {src}"


def test_ports_are_unique_and_local():
    host_ports = []
    for name, svc in SERVICES.items():
        for p in svc.get("ports", []):
            ip, host, container = p.split(":")
            assert ip == "127.0.0.1", f"{name} publishes {p} beyond localhost"
            host_ports.append(host)
    assert len(host_ports) == len(set(host_ports))


def test_settings_agree_between_services():
    fields = {f"LEADSTREAM_{f.upper()}" for f in Settings.model_fields}
    assert len(WORKERS) >= 2
    kafka_port = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(":")[-1]
    targets = []
    for name, svc in SERVICES.items():
        env = _env(svc)
        for key in env:
            if key.startswith("LEADSTREAM_"):
                assert key in fields, f"{name}: {key} is not a setting"
        if "LEADSTREAM_KAFKA_BOOTSTRAP" in env:
            host, port = env["LEADSTREAM_KAFKA_BOOTSTRAP"].split(":")
            assert host in SERVICES and port == kafka_port, name
    for name in WORKERS:
        env = _env(SERVICES[name])
        # other workers route lead requests to this address: it must be the service name
        assert env["LEADSTREAM_WEB_HOST"] == name and env["LEADSTREAM_WEB_BIND"] == "0.0.0.0"
        port = env["LEADSTREAM_WEB_PORT"]
        assert any(p.endswith(f":{port}") for p in SERVICES[name]["ports"])
        targets.append(f"{name}:{port}")
    prom = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "leadstream")
    assert sorted(job["static_configs"][0]["targets"]) == sorted(targets)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["prometheus"]["volumes"]
              if v.startswith(".")}
    for rule_file in prom["rule_files"]:
        assert rule_file in mounts, f"rule file {rule_file} is not mounted"
    ds = yaml.safe_load((REPO / "ops/grafana/provisioning/datasources/prometheus.yml"
                         ).read_text())["datasources"][0]
    prom_port = SERVICES["prometheus"]["ports"][0].split(":")[-1]
    assert ds["url"] == f"http://prometheus:{prom_port}"
    provider = yaml.safe_load((REPO / "ops/grafana/provisioning/dashboards/leadstream.yml"
                               ).read_text())["providers"][0]
    gmounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    assert provider["options"]["path"] in gmounts
    dash = json.loads((REPO / "ops/grafana/dashboards/leadstream.json").read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert all(re.search(r"leadstream_|up\{", e) for e in exprs)
