"""The monitoring files (deploy/prometheus/alerts.yml, its promtool tests, deploy/grafana/) work
and name only metrics the service exports.

promtool checks and unit-tests the rules and parses the dashboard's queries (skipped where it is
not installed, except in CI, where `.ci/run` installs it). Every PromQL expression of the rules and
the dashboard is read for the series and label names it selects, and each is compared with what
/metrics of an app in this process shows after one token, one failed authentication, one JWKS
fetch (recorded for adoption) and one introspection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from support import PROJECT_ROOT, basic

from jwks_service.runtime import Runtime

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "jwks-service.json"
# Series Prometheus makes itself for every target: not the service's to export.
SCRAPE_SERIES = {"up"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# PromQL words that look like identifiers but are no series: aggregation modifiers, set and
# matching operators, `offset`, and the infinities. Functions and aggregations are recognised by
# the `(` after them.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
KEYWORDS |= {"offset", "inf", "nan"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules() -> None:
    out = run_promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(rule_list())} rules found" in out


def test_promtool_unit_tests_pass() -> None:
    run_promtool("test", "rules", str(RULE_TESTS))


def rule_list() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_is_actionable_and_tested() -> None:
    alerts = rule_list()
    assert len(alerts) >= 10
    for rule in alerts:
        assert {"alert", "expr", "for", "labels", "annotations"} <= rule.keys(), rule.get("alert")
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and "README" in rule["annotations"]["description"], rule["alert"]
    # promtool passes a test file that leaves an alert out: each must be expected to fire somewhere
    # and expected quiet somewhere.
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alerts}
    assert fires == names == quiet


def dashboard_exprs() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return walk(json.loads(DASHBOARD.read_text()))


def test_dashboard_shape() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert 'job=~"$job"' in target["expr"], panel["title"]  # the variables filter every query


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_SELECTOR = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)\s*(\{[^{}]*\})")
_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def selectors(expr: str) -> tuple[set[str], dict[str, set[str]]]:
    """The series names an expression selects, and the labels its matchers name per series."""
    no_strings = _STRING.sub('""', expr)
    labels: dict[str, set[str]] = {}
    for name, matchers in _SELECTOR.findall(no_strings):
        labels.setdefault(name, set()).update(_LABEL.findall(matchers))
    # `{job=..}` alone or `__name__` matchers would select series this reading cannot name.
    assert "__name__" not in no_strings and not re.search(r"(^|[^\w:\s])\s*\{", _RANGE.sub("", no_strings)), expr
    bare = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", no_strings)))
    bare = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+|(?:ms|[smhdwy])+)?\b", " ", bare)  # numbers, durations
    names = {name for name in _IDENT.findall(bare) if name.lower() not in KEYWORDS}
    return names, labels


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each dashboard query, Grafana's variables given values, as a recording rule."""
    values = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool("check", "rules", str(path))


def test_selector_reading() -> None:
    """The reader above, on the forms the rules use, so a change to it cannot silently find nothing."""
    names, labels = selectors(
        'sum by (le, keyset) (rate(a_bucket{job=~"$job", outcome!="x{y}"}[5m])) / on (keyset) '
        "group_left (kid) max without (state) (b) > 0.5 * 86400 or absent(up{job='j'} == 1) unless c offset 5m"
    )
    assert names == {"a_bucket", "b", "up", "c"}
    assert labels == {"a_bucket": {"job", "outcome"}, "up": {"job"}}


def family(series: str) -> str:
    """The metric family of a series: prometheus-client suffixes counters and histograms."""
    return re.sub(r"_(total|bucket|sum|count|created)$", "", series)


def exported(http: TestClient, runtime: Runtime) -> dict[str, set[str]]:
    """Series names on /metrics, with their labels, after each endpoint has answered once."""
    client, secret = runtime.clients.create("monitor", ["read"], ["api"])
    auth = basic(client.client_id, secret)
    token = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth)
    assert token.status_code == 200
    failed = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client.client_id, "x"))
    assert failed.status_code == 401
    assert http.get("/.well-known/jwks.json").status_code == 200
    introspection = http.post("/oauth/introspect", data={"token": token.json()["access_token"]}, headers=auth)
    assert introspection.json()["active"] is True
    runtime.keys.rotate("default", force=True, reason="monitoring test")  # a transition
    anyio.run(runtime.fetches.flush, runtime.store, runtime.clock.now())  # the JWKS fetch, recorded
    runtime.adoption.reload()  # as the flush loop reads it back (adoption metrics)
    scrape = http.get("/metrics")
    assert scrape.status_code == 200
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape.text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_rules_and_dashboard_name_only_exported_metrics(http: TestClient, runtime: Runtime) -> None:
    series = exported(http, runtime)
    exprs = {f"alerts.yml {rule['alert']}": rule["expr"] for rule in rule_list()}
    exprs |= {f"dashboard expr {i}": expr for i, expr in enumerate(dashboard_exprs())}
    assert len(exprs) > 30
    used: set[str] = set()
    for where, expr in exprs.items():
        names, labels = selectors(expr)
        assert names, f"{where}: no series found in {expr!r}"
        unknown = names - series.keys() - SCRAPE_SERIES
        assert not unknown, f"{where} names {sorted(unknown)}, which /metrics does not export"
        for name, matched in labels.items():
            known = series.get(name, set()) | TARGET_LABELS
            assert matched <= known, f"{where}: {name} has no label {sorted(matched - known)}"
        used |= names
    # Every family the service exports is on the dashboard (a new metric gets a panel).
    families = {family(name) for name in series}
    on_board = {family(name) for expr in dashboard_exprs() for name in selectors(expr)[0]}
    assert families <= on_board, sorted(families - on_board)


def test_readme_points_to_the_files() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("### Monitoring") :]
    for path in (RULES, RULE_TESTS, DASHBOARD):
        assert str(path.relative_to(PROJECT_ROOT)) in section
    assert "command -v promtool" in (PROJECT_ROOT / ".ci" / "run").read_text(), "CI installs promtool"
