"""Every command that prints data has ``--json`` with a documented shape (the commands that
need a broker are in ``integration/test_cli_json.py``), and rich tables keep their
columns whole when the output is piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import orjson
import pytest

from leadstream.cli.records import record_json
from leadstream.models.snapshot import SnapshotStore

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("LEADSTREAM_")
         and k != "COLUMNS"}


def run(*args: str, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, stdout a pipe."""
    return subprocess.run([sys.executable, "-m", "leadstream", *args], capture_output=True,
                          input=stdin, timeout=120, env={**CLEAN, **env})


def run_json(*args: str, code: int = 0, **kw):
    r = run(*args, **kw)
    assert r.returncode == code, r.stderr.decode()
    return json.loads(r.stdout)


def test_topics_list_settings_and_schemas():
    t = run_json("topics", "list", "--json")
    assert t["broker"] is None and len(t["topics"]) >= 5
    assert all(set(row) == {"topic", "partitions", "key", "cleanup_policy", "on_broker",
                            "description"} for row in t["topics"])
    s = run_json("settings", "--json")
    assert s["web_port"] == 6066 and s == run_json("settings")
    sc = run_json("schemas", "--json")
    assert sc == {"schemas": sc["schemas"], "written": False, "stale": [], "up_to_date": True}
    assert sc["schemas"] > 30


def test_features_catalog_and_simulate(tmp_path):
    cat = run_json("features", "--catalog", "--json")
    assert len(cat) > 80 and {"name", "family", "kind", "window", "definition"} <= set(cat[0])
    out, listings = tmp_path / "ev.jsonl", tmp_path / "cat.jsonl"
    sim = run_json("simulate", "--leads", "5", "--properties", "20", "--days", "1",
                   "--out", str(out), "--catalog-out", str(listings), "--json")
    assert sim == {"events": len(out.read_bytes().splitlines()), "out": str(out),
                   "catalog_out": str(listings),
                   "listing_records": len(listings.read_bytes().splitlines())}


def test_produce_reports_its_lines(tmp_path):
    path = tmp_path / "ev.jsonl"
    path.write_bytes(b'{"event_id": "e1"}\n\n{oops\n')
    p = run_json("produce", str(path), "--strict", "--json", code=1)
    assert p["sent"] == 0 and p["records"] == 2 and p["invalid"] == 2
    assert p["topic"] == "interactions"
    assert [(e["line"], e["reason"]) for e in p["errors"]] == [(1, "schema"), (3, "not_json")]
    assert all(e["message"] for e in p["errors"])


def test_models_list_and_rollback(tmp_path):
    store = SnapshotStore(tmp_path)
    store.save({"w": 1}, ["P1"], {"reason": "first", "events_learned": 10})
    store.save({"w": 2}, ["P1"], {"reason": "second", "events_learned": 20})
    m = run_json("models", "list", "--dir", str(tmp_path), "--json")
    assert m["current"] == 2 and [v["version"] for v in m["versions"]] == [1, 2]
    assert {"version", "created", "parent", "bytes", "reason"} <= set(m["versions"][0])
    r = run_json("models", "rollback", "1", "--dir", str(tmp_path), "--json")
    assert r == {"current": 1, "rolled_back_from": 2}


METRICS = [b"""# TYPE leadstream_events_in_total counter
leadstream_events_in_total{topic="interactions"} %d
# TYPE leadstream_events_processed_total counter
leadstream_events_processed_total %d
# TYPE leadstream_model_hr_at_10 gauge
leadstream_model_hr_at_10{model="hybrid"} 0.42
leadstream_model_hr_at_10{model="popularity"} 0.2
"""]


@pytest.fixture
def fake_worker():
    """A /metrics endpoint on 127.0.0.1 whose counters grow by 100 per scrape."""
    scrapes = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            n = scrapes[0] * 100
            scrapes[0] += 1
            body = METRICS[0] % (n, n)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_top_prints_one_json_object_per_interval(fake_worker):
    r = run("top", "--url", fake_worker, "--json", "--interval", "0.3", "--duration", "1.5")
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert 2 <= len(lines) <= 6
    for line in lines:
        assert {"at", "url", "events_in_per_s", "processed_per_s", "lag", "latency_ms",
                "leads", "models"} <= set(line)
        assert line["url"] == fake_worker and line["events_in_per_s"] > 0
        assert line["models"]["hybrid"]["hr@10"] == 0.42


def _msg(value: bytes | None, headers=()):
    return SimpleNamespace(value=value, headers=list(headers))


def test_tail_json_is_one_json_value_per_record():
    rec = {"lead_id": "L1", "items": []}
    assert json.loads(record_json(_msg(orjson.dumps(rec)))) == rec
    framed = b"\x00\x00\x00\x00\x07" + orjson.dumps(rec)  # Confluent's wire format
    assert json.loads(record_json(_msg(framed))) == rec
    assert json.loads(record_json(_msg(None))) is None
    assert json.loads(record_json(_msg(b"\xffnot json"))) == {"undecodable": "\ufffdnot json"}
    dead = _msg(b"{oops", [("leadstream.dlq.reason", b"not_json"),
                           ("leadstream.dlq.error", b"Expecting value"),
                           ("leadstream.dlq.topic", b"interactions"),
                           ("leadstream.dlq.partition", b"3"),
                           ("leadstream.dlq.offset", b"41"),
                           ("leadstream.dlq.at", b"2026-12-01T10:00:00+00:00")])
    assert json.loads(record_json(dead)) == {
        "dead_letter": {"reason": "not_json", "error": "Expecting value",
                        "topic": "interactions", "partition": 3, "offset": 41,
                        "at": "2026-12-01T10:00:00+00:00"},
        "value": "{oops"}


def test_piped_tables_keep_every_column_and_cell_on_one_line(tmp_path):
    from leadstream.contract.settings import Settings
    from leadstream.features.catalog import FEATURES
    from leadstream.streams.topics import load_topics

    r = run("features", "--catalog")
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    header = next(line for line in lines if "definition" in line)
    assert all(h in header.split() for h in ("name", "family", "kind", "window",
                                              "definition"))
    for f in FEATURES:  # every definition whole, on the line of its feature
        row = [line for line in lines if f" {f.name} " in line]
        assert row and f.definition in row[0], f.name

    r = run("topics", "list")
    lines = r.stdout.decode().splitlines()
    header = next(line for line in lines if "description" in line)
    for h in ("topic", "partitions", "key", "policy", "on the broker", "description"):
        assert h in header
    for t in load_topics(Settings(topic_prefix="", topics_file=None)).values():
        row = [line for line in lines if f" {t.full_name} " in line]
        assert row and " ".join(t.description.split()) in row[0], t.full_name
