"""The Grafana dashboard and the Prometheus alert rules under docs/ parse, are complete, and use
only metric names that a running system's two /metrics endpoints (receiver, status page) serve."""
from __future__ import annotations

import json
import re
from pathlib import Path

import requests

from tests.helpers import free_port, wait_until
from tests.test_statuspage import healthy
from tests.test_webhooks import running_system

DOCS = Path(__file__).resolve().parent.parent / "docs"
METRIC = re.compile(r"\bfrontdesk_[a-z0-9_]+")


def dashboard() -> dict:
    return json.loads((DOCS / "grafana-dashboard.json").read_text())


def alert_rules() -> list[dict]:
    """The rules file is YAML in its JSON form: comment lines, then one JSON document."""
    text = "\n".join(line for line in (DOCS / "prometheus-alerts.yml").read_text().splitlines()
                     if not line.startswith("#"))
    (group,) = json.loads(text)["groups"]
    return group["rules"]


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]] + [r["expr"] for r in alert_rules()]


def test_the_dashboard_is_a_grafana_dashboard_with_a_panel_for_each_concern():
    board = dashboard()
    assert board["uid"] == "frontdesk" and board["schemaVersion"] >= 36
    assert board["templating"]["list"][0]["type"] == "datasource"
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for concern in ("queue", "oldest", "arrivals", "latency", "busy", "restarts", "429", "dead letters", "limit"):
        assert concern in titles, concern
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}


def test_the_alert_rules_cover_queue_age_dead_letters_degraded_pools_and_429s():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in ("FrontdeskQueueAging", "FrontdeskDeadLetters", "FrontdeskHandlerPoolDegraded", "FrontdeskLine429",
                 "FrontdeskNoDispatcher"):
        assert name in rules
    for rule in rules.values():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_every_metric_name_they_use_is_served(tmp_path):
    admin = f"127.0.0.1:{free_port()}"
    with running_system(tmp_path, admin_listen=admin) as (webhook_url, _, _):
        wait_until(lambda: healthy(admin), timeout=30, message="status page healthy")
        texts = [requests.get(webhook_url.replace("/callback", "/metrics"), timeout=5).text,
                 requests.get(f"http://{admin}/metrics", timeout=5).text]
    served = set()
    for line in "\n".join(texts).splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            served.add(name)
            if kind == "histogram":
                served |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    used = {name for expr in expressions() for name in METRIC.findall(expr)}
    assert len(used) >= 15
    assert used <= served, f"not served: {sorted(used - served)}"
