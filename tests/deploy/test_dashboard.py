"""The Grafana dashboard against the provisioned datasource, the app's real /metrics, and promtool's parser."""

from __future__ import annotations

import re

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import (
    dashboard,
    datasource_uid,
    metric_names,
    panel_exprs,
    panels,
    run,
    sample_names,
    substitute,
)

REQUIRED_METRICS = {
    "gptzoo_completion_requests_total", "gptzoo_e2e_request_latency_seconds_bucket",
    "gptzoo_time_to_first_token_seconds_bucket", "gptzoo_inter_token_latency_seconds_bucket",
    "gptzoo_request_queue_time_seconds_bucket", "gptzoo_generation_tokens_total", "gptzoo_requests_waiting",
    "gptzoo_requests_running", "gptzoo_model_validation_loss", "gptzoo_batch_size_bucket",
    "gptzoo_requests_refused_total", "gptzoo_requests_cancelled_total", "gptzoo_engine_step_seconds_bucket",
    "gptzoo_prefill_tokens_per_step_bucket", "gptzoo_cache_slots", "gptzoo_cache_slots_in_use",
    "gptzoo_route_decisions_total", "gptzoo_budget_requests_total", "gptzoo_time_per_output_token_seconds_bucket",
    "gptzoo_predicted_time_per_output_token_seconds_bucket",
    "gptzoo_model_loads_total", "gptzoo_model_load_seconds_sum", "gptzoo_model_load_seconds_count",
    "gptzoo_spec_draft_tokens_total", "gptzoo_spec_accepted_tokens_total",
    # OpenTelemetry's GenAI conventions (gptzoo.server.genai)
    "gen_ai_server_request_duration_seconds_bucket", "gen_ai_server_request_duration_seconds_count",
    "gen_ai_server_time_to_first_token_seconds_bucket", "gen_ai_server_time_per_output_token_seconds_bucket",
    "gen_ai_client_token_usage_sum",
}
GENAI_ROW = "GenAI semantic conventions (OpenTelemetry gen_ai.*: the fleet, by variant)"


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (model, le) (rate(gptzoo_x_bucket{model=~"$model", a!="b c"}'
            '[$__rate_interval]))) / on (model) group_left sum(gptzoo_y) or vector(1e3)')
    assert metric_names(expr) == {"gptzoo_x_bucket", "gptzoo_y"}


def test_every_panel_and_variable_uses_the_provisioned_datasource():
    uid, dash = datasource_uid(), dashboard()
    assert uid == "gptzoo-prometheus"
    queried = [p for p in panels(dash) if p["type"] != "row"]
    assert len(queried) >= 10
    for p in queried:
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"model", "layers"}
    for v in variables.values():
        assert v["datasource"]["uid"] == uid and v["allValue"] == ".*"
    assert variables["model"]["query"]["query"] == "label_values(gptzoo_model_info, model)"
    assert "${DS_" not in str(dash) and "__inputs" not in dash  # shared-export placeholders break provisioning


def test_panels_filter_by_model_and_layers_and_use_rate_interval():
    for where, expr in panel_exprs(dashboard()):
        if "gen_ai_" in expr:  # the GenAI series name the variant gen_ai_response_model and carry no depth
            selectors = re.findall(r"gen_ai_\w+\{([^}]*)\}", expr)
            assert selectors and all('gen_ai_response_model=~"$model"' in m for m in selectors), where
        elif "gptzoo_http_" not in expr:  # Litestar's HTTP metrics carry no model labels
            assert 'model=~"$model"' in expr and 'layers=~"$layers"' in expr, where
        if "rate(" in expr:
            assert "[$__rate_interval]" in expr or "[$__range]" in expr, where


def test_exprs_use_only_metrics_the_app_exports(scrape):
    exported = sample_names(scrape)
    used = set()
    for where, expr in panel_exprs(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not in the app's /metrics"
        used |= names
    for v in dashboard()["templating"]["list"]:  # label_values(<selector>, <label>): the label must be there
        selector, label = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"]["query"]).groups()
        [metric] = metric_names(selector)
        assert any(s.name == metric and label in s.labels for f in text_string_to_metric_families(scrape)
                   for s in f.samples), v["name"]
    assert used >= REQUIRED_METRICS, sorted(REQUIRED_METRICS - used)


def test_promtool_parses_every_expr(promtool, tmp_path):
    rules = {"groups": [{"name": "gptzoo-dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": substitute(expr)} for i, (_, expr) in
        enumerate(panel_exprs(dashboard()))]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = run(promtool, "check", "rules", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in r.stdout


def test_promtool_rejects_a_broken_expr(promtool, tmp_path):
    """The check above can fail: promtool exits 1 on a syntax error."""
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "r", "expr": "sum by (model (rate(gptzoo_generation_tokens_total[30s]))"}]}]}))
    assert run(promtool, "check", "rules", path).returncode == 1


def test_promtool_check_metrics_passes_on_a_real_scrape(promtool, scrape):
    r = run(promtool, "check", "metrics", stdin=scrape)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", sorted(REQUIRED_METRICS))
def test_scrape_has_the_metrics_the_dashboard_needs(scrape, name):
    assert name in sample_names(scrape)


def genai_row() -> list[dict]:
    """The panels below the GenAI row, up to the next row."""
    out, inside = [], False
    for p in dashboard()["panels"]:
        if p["type"] == "row":
            inside = p["title"] == GENAI_ROW
        elif inside:
            out.append(p)
    return out


def test_the_genai_row_aggregates_by_variant_across_instances():
    """Every GenAI panel sums over instances (one replica or many give the fleet's figure per variant); only the
    per-instance panel keeps `instance`; quantiles aggregate the buckets before the quantile, never after."""
    row = genai_row()
    assert len(row) >= 5
    for p in row:
        for t in p["targets"]:
            expr = t["expr"]
            assert "gptzoo_" not in expr and "gen_ai_" in expr, p["title"]
            groups = re.findall(r"sum by \(([^)]*)\)", expr)
            assert groups and all("gen_ai_response_model" in g for g in groups), p["title"]
            keeps_instance = any("instance" in g for g in groups)
            assert keeps_instance == ("per instance" in p["title"]), p["title"]
            if "histogram_quantile" in expr:
                assert re.fullmatch(r"histogram_quantile\(0\.\d+, sum by \(gen_ai_response_model, le\) "
                                    r"\(rate\(\w+_bucket\{[^}]*\}\[\$__rate_interval\]\)\)\)", expr), expr
    names = {n for p in row for t in p["targets"] for n in metric_names(t["expr"])}
    assert {"gen_ai_server_request_duration_seconds_bucket", "gen_ai_server_time_to_first_token_seconds_bucket",
            "gen_ai_server_time_per_output_token_seconds_bucket", "gen_ai_client_token_usage_sum"} <= names
