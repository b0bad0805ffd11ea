"""docker-compose.yml, checked without a Docker engine: the compose-spec schema, every file
it references, ports, and settings that agree between Kafka, workers, Prometheus and
Grafana."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from leadstream.contract.settings import Settings
from leadstream.ops.broker import free_port

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
            build = svc["build"]
            ctx = REPO / (build if isinstance(build, str) else build["context"])
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
        # ... which a worker binds only with an API token: compose refuses to start
        # without one (a required variable), never a default written here
        assert re.fullmatch(r"\$\{LEADSTREAM_API_TOKEN:\?.+\}", env["LEADSTREAM_API_TOKEN"])
        assert Settings(**{"web_bind": "0.0.0.0", "api_token": "x"}).web_bind_address() == (
            "0.0.0.0")
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


def _healthy_when(svc: dict) -> list[str]:
    test = svc["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return test[1:]


def test_workers_are_healthy_only_when_ready(tmp_path):
    """Run each worker's compose healthcheck command, with that worker's environment,
    against a stand-in for its web port: 0 only when /health/ready answers 200."""
    status = {"code": 503}
    paths = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            paths.append(self.path)
            code = status["code"] if self.path == "/health/ready" else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"ready": %s}' % (b"true" if code == 200 else b"false"))

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in WORKERS:
            svc = SERVICES[name]
            assert svc["healthcheck"]["start_period"], name  # restore time before retries
            cmd = _healthy_when(svc)
            assert cmd[:3] == ["python", "-m", "leadstream.ops.healthcheck"], cmd
            env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSTREAM_")}
            env.update(_env(svc), LEADSTREAM_WEB_PORT=str(port), PYTHONPATH=str(REPO))

            def run(cmd=cmd, env=env):
                return subprocess.run([sys.executable, *cmd[1:]], env=env, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=60)

            status["code"] = 503
            out = run()
            assert out.returncode == 1 and "503" in out.stderr, (name, out.stderr)
            status["code"] = 200
            assert run().returncode == 0, name
        assert set(paths) == {"/health/ready"}
    finally:
        server.shutdown()
        server.server_close()
    # nothing listening: unhealthy, not a hang
    env = {**os.environ, "LEADSTREAM_WEB_PORT": str(port), "LEADSTREAM_WEB_BIND": "0.0.0.0"}
    out = subprocess.run([sys.executable, "-m", "leadstream.ops.healthcheck", "--timeout", "2"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr


def test_start_order_follows_readiness():
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, how in deps.items():
            cond = how["condition"]
            assert cond in ("service_started", "service_healthy",
                            "service_completed_successfully"), (name, dep)
            if cond == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits on {dep}'s health"
    for name in WORKERS:
        assert SERVICES[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully")
    # Prometheus must come up even when a worker is unhealthy, to report it
    prom = SERVICES["prometheus"]["depends_on"]
    assert set(prom) == set(WORKERS)
    assert all(d["condition"] == "service_started" for d in prom.values())
    assert SERVICES["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "/-/ready" in " ".join(_healthy_when(SERVICES["prometheus"]))
    sim = SERVICES["simulator"]["depends_on"]
    assert {w: sim.get(w, {}).get("condition") for w in WORKERS} == {
        w: "service_healthy" for w in WORKERS}


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_image_runs_as_an_unprivileged_user_that_owns_its_data():
    steps = _dockerfile()
    users = [(i, arg) for i, (word, arg) in enumerate(steps) if word == "USER"]
    assert users, "the image runs as root"
    last, user = users[-1]
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    assert all(word != "RUN" for word, _ in steps[last:]), "RUN after USER runs as that user"
    assert steps[-1][0] in ("CMD", "ENTRYPOINT") and last < len(steps) - 1
    commands = [c.split() for word, arg in steps if word == "RUN"
                for c in re.split(r"&&|;", arg)]
    useradd = next((c for c in commands if c and c[0] == "useradd"), None)
    assert useradd and ("--uid" in useradd or "-u" in useradd), "no user with a fixed uid"
    uid = useradd[useradd.index("--uid" if "--uid" in useradd else "-u") + 1]
    account = useradd[-1]
    assert name in (uid, account) and uid != "0", (user, useradd)
    home = dict(arg.split("=", 1) for word, args in steps if word == "ENV"
                for arg in args.split())["LEADSTREAM_HOME"]
    owners = [c[-2].split(":")[0] for c in commands
              if c and c[0] == "chown" and c[-1].rstrip("/") == home]
    assert owners and owners[-1] in (uid, account), f"{home} (LEADSTREAM_HOME) not chowned"
    volumes = [arg for word, arg in steps if word == "VOLUME"]
    assert home in " ".join(volumes)
    # a named volume takes the ownership the image gives the path: chown before VOLUME
    chown_at = max(i for i, (w, a) in enumerate(steps) if w == "RUN" and "chown" in a)
    assert chown_at < next(i for i, (w, a) in enumerate(steps) if w == "VOLUME")
    for name_ in WORKERS:
        for vol in SERVICES[name_]["volumes"]:
            assert vol.split(":")[1] == home, f"{name_} mounts its data elsewhere than {home}"


def test_hadolint_passes():
    exe = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                       f"{os.environ.get('PATH', '')}")
    if exe is None:
        msg = "hadolint is not installed (pip install 'leadstream[test]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    out = subprocess.run([exe, "--failure-threshold", "info", str(REPO / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
