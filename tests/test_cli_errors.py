"""The command line fails politely: a user's mistake ends in one line and an exit code."""

from __future__ import annotations

import os
import subprocess
import sys

from leadstream.cli import _version


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leadstream", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_a_missing_file_is_one_line_and_exit_2():
    r = _run("produce", "/nonexistent/events.jsonl")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "leadstream produce: error: No such file or directory: /nonexistent/events.jsonl"]


def test_an_unreachable_broker_is_one_line_and_exit_3():
    r = _run("tail", "interactions", "--max", "1", "--timeout", "2",
             LEADSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("leadstream tail: error:")]
    assert len(ours) == 1 and "LEADSTREAM_KAFKA_BOOTSTRAP" in ours[0]


def test_an_invalid_setting_names_it():
    r = _run("settings", LEADSTREAM_WEB_PORT="not-a-port")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid setting web_port" in r.stderr


def test_a_hybrid_weight_of_no_component_is_refused_before_anything_starts():
    """``LEADSTREAM_HYBRID_W_<NAME>`` sets the weight of a registered component; a
    misspelt one would otherwise stop the worker with a traceback once it has started."""
    for command in (["worker"], ["settings"]):
        r = _run(*command, LEADSTREAM_HYBRID_W_CONTNET="3")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"leadstream {command[0]}: error: invalid setting hybrid_w_contnet: no model "
            "component has that weight (known: hybrid_w_popularity, hybrid_w_content, "
            "hybrid_w_itemitem, hybrid_w_mf, hybrid_w_ease)"]
    r = _run("settings", "--json", LEADSTREAM_HYBRID_W_CONTENT="3")
    assert r.returncode == 0, r.stderr


def test_debug_shows_the_traceback_and_version_prints():
    r = _run("produce", "/nonexistent/events.jsonl", LEADSTREAM_DEBUG="1")
    assert r.returncode == 1 and "Traceback" in r.stderr and "FileNotFoundError" in r.stderr
    v = _run("--version")
    assert v.returncode == 0 and v.stdout.strip() == f"leadstream {_version()}"
