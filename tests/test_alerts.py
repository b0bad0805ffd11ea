"""The alert rules, unit-tested by a real promtool (Debian's `prometheus` package): every
alert fires on its input series and stays quiet on the others (ops/prometheus/alerts_test.yml),
a rule whose expression is broken fails that test, and every rule links its runbook section."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import promtools

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "prometheus" / "alerts_test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
prometheus_bin = promtools.prometheus_bin  # the fixture


def _rules(doc: dict | None = None) -> list[dict]:
    doc = doc or yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_unit_tests_of_the_rules_pass(prometheus_bin):
    _, promtool = prometheus_bin
    out = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases: dict[str, set[str]] = {}
    for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            kind = "fires" if case.get("exp_alerts") else "quiet"
            cases.setdefault(case["alertname"], set()).add(kind)
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names))
    for name in names:
        assert cases.get(name) == {"fires", "quiet"}, f"{name}: {sorted(cases.get(name, []))}"
    assert set(cases) == set(names), "tests for alerts that do not exist"


_FINAL_OP = re.compile(r"(==|!=|>=|<=|>|<)(\s*[-+0-9.eE]+\s*)$")
_INVERSE = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


@pytest.mark.parametrize("mutation", ["never", "always", "inverted"])
def test_a_broken_expression_fails_the_rule_tests(prometheus_bin, tmp_path, mutation):
    """Each rule in turn made to never fire, always fire, or compare the other way: the
    unit tests must notice every one (one promtool run over one copy per rule)."""
    _, promtool = prometheus_bin
    targets = {}
    for i, rule in enumerate(_rules()):
        doc = yaml.safe_load(RULES.read_text())
        expr = rule["expr"].strip()
        if mutation == "never":
            expr = "vector(1) < 0"
        elif mutation == "always":
            expr = "vector(1) > 0"
        else:
            m = _FINAL_OP.search(expr)
            assert m, f"{rule['alert']}: expected '<query> <op> <number>'"
            expr = expr[:m.start()] + _INVERSE[m[1]] + m[2]
        _rules(doc)[i]["expr"] = expr
        d = tmp_path / rule["alert"]
        d.mkdir()
        (d / "alerts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        shutil.copy(RULE_TESTS, d / "alerts_test.yml")
        targets[rule["alert"]] = d / "alerts_test.yml"
    # one stream, so that each file's verdict follows its name
    report = subprocess.run([promtool, "test", "rules", *map(str, targets.values())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=300).stdout
    assert "parse error" not in report, report
    # promtool prints "Unit Testing:  FILE" then SUCCESS or FAILED for each file
    verdicts = dict(re.findall(r"Unit Testing:\s+(\S+)\s+(SUCCESS|FAILED)", report))
    assert len(verdicts) == len(targets), report
    unnoticed = [name for name, f in targets.items() if verdicts[str(f)] == "SUCCESS"]
    assert not unnoticed, f"{mutation} expressions the rule tests did not notice: {unnoticed}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the markdown headings."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_rule_links_a_runbook_section_that_says_what_to_do():
    text = RUNBOOK.read_text()
    anchors = _anchors(text)
    sections = re.split(r"^## ", text, flags=re.M)
    for rule in _rules():
        ann = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(ann), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        path, _, anchor = ann["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, (rule["alert"], anchor)
        body = next(s for s in sections if s.split("\n", 1)[0].strip() == rule["alert"])
        for part in ("**Means**", "**Confirm**", "**Do**"):
            assert part in body, f"runbook section {rule['alert']} lacks {part}"
        metrics = set(re.findall(r"leadstream_\w+", rule["expr"]))
        assert all(m.removesuffix("_bucket") in body for m in metrics), rule["alert"]
    readme = (REPO / "README.md").read_text()
    assert "docs/runbook.md" in readme
