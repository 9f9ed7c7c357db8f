"""The Prometheus alert rules and the Grafana dashboard under ``deploy/``: the rules are valid
and fire as their tests say (Debian's ``promtool``), and every metric the rules and the
dashboard name is one ``/metrics`` serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from taskwarden import metrics
from taskwarden.store import Store

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULES_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "taskwarden.json"
PROMTOOL = os.environ.get("TASKWARDEN_TEST_PROMTOOL", "/usr/bin/promtool")
NAME = re.compile(r"\btaskwarden_[a-z0-9_]+\b")
ALERTS = {"TaskwardenDispatchLag", "TaskwardenNoWorker", "TaskwardenProviderErrors",
          "TaskwardenDeadLettersGrowing", "TaskwardenArchiveFailures",
          "TaskwardenOldestRunningWatch"}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(
            f"{PROMTOOL} is missing: `make promtool` installs Debian's prometheus package "
            "(apt-get, as root), which provides it"
        )
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def test_the_alert_rules_are_valid() -> None:
    """``promtool check rules`` accepts every rule, and each alert the README names is there."""
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
    assert {r["alert"] for g in _rules()["groups"] for r in g["rules"]} == ALERTS


def test_the_alerts_fire_on_the_sample_series() -> None:
    """``promtool test rules``: each alert fires where its sample series say, and only there."""
    done = promtool("test", "rules", RULES_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {case["alertname"] for t in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for case in t["alert_rule_test"]}  # fmt: skip
    assert tested == ALERTS


def test_the_rules_and_dashboard_name_only_served_metrics(store: Store) -> None:
    """Every ``taskwarden_*`` name in a rule's or a panel's expression is a sample name
    ``/metrics`` serves (a histogram's ``_bucket``, ``_sum`` and ``_count`` included)."""
    body, _ = metrics.exposition(store.metric_cells(), store.live_figures(time.time()))
    served = _served(body.decode())
    exprs = [r["expr"] for g in _rules()["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") for p in panels)
    exprs += [t["expr"] for p in panels for t in p["targets"]]
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert not used - served, f"not served by /metrics: {sorted(used - served)}"
    # what an operator alerts on is on the dashboard
    for name in ("taskwarden_watches", "taskwarden_queue_messages", "taskwarden_workers",
                 "taskwarden_oldest_running_seconds", "taskwarden_watches_failing",
                 "taskwarden_dead_letters_total", "taskwarden_webhook_backlog",
                 "taskwarden_poll_duration_seconds_bucket"):  # fmt: skip
        assert name in used


def test_the_dashboard_is_one_grafana_can_import() -> None:
    """Panels have unique ids and a place on the grid, and every query uses the dashboard's
    Prometheus data source variable, which it defines (so import asks for one)."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "taskwarden" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all({"h", "w", "x", "y"} <= set(p["gridPos"]) for p in dashboard["panels"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def _served(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _rules() -> Any:
    return yaml.safe_load(RULES.read_text())
