"""Boundaries and declarations the rest of the project relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from leadstream.contract.settings import Settings
from leadstream.streams.topics import load_topics

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"faust", "aiokafka", "prometheus_client", "kafka", "streams", "ops"}


def test_features_and_models_import_no_kafka_or_metrics():
    for pkg in ("features", "models"):
        for path in (REPO / pkg).rglob("*.py"):
            for n in _imports(path):
                assert n.split(".")[0] not in FORBIDDEN, f"{path} imports {n}"


# Each layer of the package and the layers it may import (besides itself), bottom first
# (docs/architecture.md). A module belongs to the longest prefix listed; modules of
# ``leadstream/`` not listed are the top (commands, benchmarks), which anything may import
# only from the top.
LAYERS: dict[str, set[str]] = {
    "leadstream.contract": set(),
    "leadstream.ops": {"leadstream.contract"},
    "leadstream.features": {"leadstream.contract"},
    "leadstream.models": {"leadstream.contract", "leadstream.features"},
    # the edges beside the core: the producer client, the simulator, the CRM mapping,
    # the terminal output, a worker's /metrics read
    "leadstream.client": {"leadstream.contract"},
    "leadstream.simulate": {"leadstream.contract"},
    "leadstream.gohighlevel": {"leadstream.contract"},
    "leadstream.console": set(),
    "leadstream.scrape": set(),
    "leadstream.streams.step": {"leadstream.contract", "leadstream.ops", "leadstream.features",
                                "leadstream.models"},
    "leadstream.streams": {"leadstream.contract", "leadstream.ops", "leadstream.features",
                           "leadstream.models", "leadstream.streams.step",
                           "leadstream.gohighlevel"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    return "top"


def _module_graph() -> dict[str, set[str]]:
    """Every module of the package (``leadstream.…``, the top-level folders included) and
    the package's modules it imports anywhere in its file (imports inside functions too)."""
    files = {}
    for pkg in ("leadstream", *sorted(TOP_LEVEL)):
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            parts = parts if parts[0] == "leadstream" else ["leadstream", *parts]
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            files[".".join(parts)] = path

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in files.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".")[:None if path.name == "__init__.py" else -1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            out |= {m for n in names if n.startswith("leadstream")
                    and (m := known(n)) not in (None, mod, "leadstream")}
        graph[mod] = out
    return graph


def test_no_import_runs_up_a_layer():
    """``contract`` imports nothing of leadstream; ``features`` and ``models`` only the
    contract (and models the features); the step nothing of ``streams/``; nothing below
    the top imports a command or a benchmark."""
    graph = _module_graph()
    assert "leadstream.contract.events" in graph and "leadstream.streams.step" in graph
    for mod, deps in graph.items():
        layer = _layer(mod)
        if layer == "top":
            continue
        for dep in deps:
            target = _layer(dep)
            assert target == layer or target in LAYERS[layer], f"{mod} imports {dep}"



def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative), each sorted.

    >>> _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    [['a', 'b', 'c']]
    >>> _cycles({"a": {"b"}, "b": set()})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, deps = work[-1]
            for dep in deps:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(sorted(graph.get(dep, ())))))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_no_circle_of_imports():
    """No module of the package imports, through others, a module that imports it."""
    cycles = _cycles(_module_graph())
    assert not cycles, "circles of imports: " + "; ".join(" <-> ".join(c) for c in cycles)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# the modules of leadstream/cli/ that are not commands: what the commands share
CLI_SHARED = {"leadstream.cli.common"}


def test_only_the_entry_point_imports_a_command():
    """``leadstream.cli`` (the top parser) and ``leadstream.__main__`` import the command
    modules; a command module imports no other (what they share is ``cli.common``), and
    nothing outside ``leadstream/cli/`` imports any of it."""
    graph = _module_graph()
    assert "leadstream.cli.top" in graph and "leadstream.cli.common" in graph
    for mod, deps in graph.items():
        for dep in deps:
            if not _within(dep, "leadstream.cli") or mod in ("leadstream.cli",
                                                             "leadstream.__main__"):
                continue
            assert _within(mod, "leadstream.cli") and dep in CLI_SHARED, \
                f"{mod} imports {dep}"


def test_only_the_commands_import_the_benchmarks():
    """``leadstream.bench`` (the benchmarks and the worker harness the integration tests
    use too) is imported by itself and by the commands only."""
    graph = _module_graph()
    assert "leadstream.bench.harness" in graph
    for mod, deps in graph.items():
        if _within(mod, "leadstream.bench") or _within(mod, "leadstream.cli"):
            continue
        for dep in deps:
            assert not _within(dep, "leadstream.bench"), f"{mod} imports {dep}"


def _imports(path: Path) -> list[str]:
    """The modules ``path`` imports, ``leadstream.models.x`` named ``models.x`` (the
    top-level folders are installed under the ``leadstream`` namespace)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return [_unprefixed(n) for n in out]


def _unprefixed(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "leadstream" and len(parts) > 1 and parts[1] in TOP_LEVEL:
        return ".".join(parts[1:])
    return name


TOP_LEVEL = {"features", "models", "streams", "ops"}


def test_no_top_level_package_is_imported_by_its_bare_name():
    """Every import of the repository's top-level folders goes through ``leadstream.``:
    a bare ``import models`` would work in a checkout and fail in an installed wheel."""
    for path in REPO.rglob("*.py"):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])
            for n in names:
                assert n.split(".")[0] not in TOP_LEVEL, f"{path}: import {n}"


def test_the_step_knows_no_stream_runtime():
    """``streams/step.py`` is the worker's work as a pure function of a batch: no Faust,
    no Kafka client (only aiokafka's partitioner, Kafka's key hashing as a pure function),
    no other module of ``streams/``; another stream runtime could drive it."""
    for n in _imports(REPO / "streams" / "step.py"):
        if n == "aiokafka.partitioner":
            continue
        assert n.split(".")[0] not in {"faust", "aiokafka", "kafka", "streams", "mode"}, n


def test_topics_yaml_declares_every_topic_with_its_contract():
    doc = yaml.safe_load((REPO / "topics.yaml").read_text())
    want = {"interactions", "properties", "recommendations", "lead-scores", "agent-insights",
            "interactions-dlq"}
    assert want <= set(doc["topics"])
    specs = load_topics(Settings(topic_prefix="p-"))
    assert specs["properties"].config["cleanup.policy"] == "compact"
    assert specs["interactions"].full_name == "p-interactions"
    for name in ("interactions", "recommendations", "lead-scores"):
        assert specs[name].key == "lead_id"
        assert specs[name].partitions == specs["interactions"].partitions  # co-partitioned
    assert specs["agent-insights"].key == "agent_id"
    for s in specs.values():
        assert "retention.ms" in s.config or s.config["cleanup.policy"] == "compact"
        if s.schema:
            assert (REPO / s.schema).exists(), s.schema


def test_settings_hide_secrets_and_read_the_environment(monkeypatch):
    monkeypatch.setenv("LEADSTREAM_KAFKA_BOOTSTRAP", "10.0.0.1:9093")
    monkeypatch.setenv("LEADSTREAM_SASL_PASSWORD", "hunter2")
    s = Settings()
    assert s.kafka_bootstrap == "10.0.0.1:9093"
    assert "hunter2" not in str(s.printable()) and "hunter2" not in repr(s)
    assert s.sasl_password.get_secret_value() == "hunter2"


def test_settings_file(tmp_path, monkeypatch):
    f = tmp_path / "leadstream.toml"
    f.write_text('topic_prefix = "prod-"\ntop_k = 5\n')
    monkeypatch.setenv("LEADSTREAM_CONFIG", str(f))
    monkeypatch.setenv("LEADSTREAM_TOP_K", "7")  # the environment wins over the file
    s = Settings()
    assert (s.topic_prefix, s.top_k) == ("prod-", 7)


def test_only_faust_internals_reaches_past_faust_s_api():
    """``streams/durable.py`` is pure (no Faust, no Kafka client), and no module of
    ``streams/`` but ``faust_internals.py`` touches another object's private attributes or
    the parts of Faust's consumer and app it reaches into (docs/reliability.md)."""
    for n in _imports(REPO / "streams" / "durable.py"):
        assert n.split(".")[0] not in {"faust", "aiokafka", "kafka", "mode"}, n
    internals = {"assignor", "recovery", "highwater", "resume_partitions", "flow_active",
                 "flow_control", "rebalancing"}
    for path in (REPO / "streams").glob("*.py"):
        if path.name == "faust_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            private = node.attr.startswith("_") and not node.attr.startswith("__") and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) \
                and not (isinstance(node.value, ast.Name) and node.value.id == "os"
                         and node.attr == "_exit")  # the documented exit without cleanup
            assert not private and node.attr not in internals, \
                f"{path.name}:{node.lineno} .{node.attr}"
