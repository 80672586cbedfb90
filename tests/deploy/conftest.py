"""The deploy/ files under test, the PromQL of the dashboard's panels, and a real /metrics scrape of the app."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gptzoo.server.app import create_app
from gptzoo.server.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gptzoo.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# Grafana's variables, as the dashboard's "All" selection and a typical interval resolve them.
GRAFANA_VARS = {"$__rate_interval": "30s", "$__range": "5m", "$model": ".*", "$layers": ".*"}

# PromQL words that look like metric names once strings, matchers, ranges and grouping labels are gone.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def datasource_uid() -> str:
    [ds] = load_yaml(DATASOURCES)["datasources"]
    return ds["uid"]


def panels(dash: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def panel_exprs(dash: dict) -> list[tuple[str, str]]:
    """(panel title + refId, expr) for every query target of the dashboard."""
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither function calls nor keywords,
    once strings, label matchers, range/subquery brackets and by/without/on/ignoring label lists are removed."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    words = re.findall(r"(?<![\w:.])[a-zA-Z_:][\w:]*\b(?!\s*\()", s)
    return {w for w in words if w.lower() not in _KEYWORDS}


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path (skips the test without it; ask for it before slow fixtures so a skip costs nothing)."""
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (Debian: apt-get install -y --no-install-recommends prometheus)")
    return path


@pytest.fixture(scope="session")
def prometheus() -> str:
    path = shutil.which("prometheus")
    if not path:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install -y --no-install-recommends "
                    "prometheus)")
    return path


def run(*cmd, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def scrape(drafted_store) -> str:
    """/metrics of the real app over the tiny exported 2-layer variant, drafted by the 1-layer one (not served
    itself), after one completion, one stream and one refusal, so every histogram, counter and gauge of the server
    has samples."""
    settings = Settings.build(store=str(drafted_store), max_tokens=64, threads=1, models=["2l"], drafts=["2l=1l"],
                              allowed_hosts=["testserver.local"])  # TestClient's Host
    with TestClient(app=create_app(settings)) as client:
        for stream in (False, True):
            r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 8,
                                                     "stream": stream})
            assert r.status_code == 200, r.text
        assert client.post("/v1/completions", json={"model": "nope", "prompt": "x"}).status_code == 404
        r = client.get("/metrics")
        assert r.status_code == 200
        return r.text


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
