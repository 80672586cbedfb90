"""deploy/k8s: every overlay renders (a small kustomize: resources, namespace, images, labels, strategic-merge
patches), every object validates offline against the Kubernetes schemas (kubernetes-validate bundles them), and
what the manifests name exists in the code: probe paths, the port, `gptzoo serve` flags, metric names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = DEPLOY / "k8s"
OVERLAYS = ["base", "overlays/example", "overlays/gpu"]
K8S_VERSION = "1.30.0"  # the oldest release the manifests target (autoscaling/v2, policy/v1)
CRD_GROUPS = ("monitoring.coreos.com/",)  # the Prometheus Operator's kinds: not in the core schemas


def merge(base, patch):
    """Strategic merge as kustomize does it for these manifests: maps merge, lists of named maps merge by name,
    other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {k: merge(base[k], v) if k in base else v for k, v in patch.items()} | \
               {k: v for k, v in base.items() if k not in patch}
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x
                                                                  for x in base + patch):
        named = {x["name"]: x for x in base}
        out = [merge(named[p["name"]], p) if p["name"] in named else p for p in patch]
        return out + [x for x in base if x["name"] not in {p["name"] for p in patch}]
    return patch


def render(folder: Path) -> list[dict]:
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objs: list[dict] = []
    for res in kust.get("resources", []):
        path = (folder / res).resolve()
        objs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for p in kust.get("patches", []):
        patch = yaml.safe_load((folder / p["path"]).read_text())
        [i] = [i for i, o in enumerate(objs) if (o["kind"], o["metadata"]["name"]) ==
               (patch["kind"], patch["metadata"]["name"])]
        objs[i] = merge(objs[i], patch)
    for o in objs:
        if "namespace" in kust and o["kind"] != "Namespace":
            o["metadata"]["namespace"] = kust["namespace"]
        for lab in kust.get("labels", []):
            o["metadata"].setdefault("labels", {}).update(lab["pairs"])
        for c in containers(o):
            for img in kust.get("images", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"
    return objs


def containers(obj: dict) -> list[dict]:
    return obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def one(objs: list[dict], kind: str) -> dict:
    [o] = [o for o in objs if o["kind"] == kind]
    return o


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    objs = render(K8S / overlay)
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                        "PodMonitor", "ConfigMap"}
    for o in objs:
        if o["apiVersion"].startswith(CRD_GROUPS):
            continue
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)  # raises on any unknown or mistyped field
    # a broken manifest is caught: the check can fail
    bad = one(objs, "Deployment") | {"spec": one(objs, "Deployment")["spec"] | {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_pod_monitor_scrapes_the_container_port_and_metrics_path():
    objs = render(K8S / "base")
    deploy, mon, svc = one(objs, "Deployment"), one(objs, "PodMonitor"), one(objs, "Service")
    [endpoint] = mon["spec"]["podMetricsEndpoints"]
    port_names = {p["name"] for p in containers(deploy)[0]["ports"]}
    assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    for selector in (mon["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                     one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                     deploy["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in port_names


def test_probes_ports_and_flags_exist_in_the_server():
    import inspect

    from gptzoo.cli.serve import serve_cmd
    from gptzoo.server.routes.health import ROUTES

    paths = {p for r in ROUTES for p in r.paths}
    params = inspect.signature(serve_cmd).parameters
    for overlay in OVERLAYS:
        [c] = containers(one(render(K8S / overlay), "Deployment"))
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and "/readyz" in paths
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and "/healthz" in paths
        assert c["startupProbe"]["httpGet"]["path"] in paths
        flags = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
        assert all(f.replace("-", "_") in params for f in flags), flags
        assert [p["containerPort"] for p in c["ports"]] == [int(flags["port"])]
        assert all(m["readOnly"] for m in c["volumeMounts"] if m["mountPath"] == "/store")


def test_the_drain_fits_in_the_grace_period():
    """preStop sleeps while the endpoint goes away, then SIGTERM gives streams --shutdown-timeout seconds: both
    must end before the kubelet's SIGKILL."""
    for overlay in OVERLAYS:
        deploy = one(render(K8S / overlay), "Deployment")
        [c] = containers(deploy)
        sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        flags = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
        assert sleep + float(flags["shutdown-timeout"]) < deploy["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"]


def test_the_autoscaler_and_adapter_rule_name_real_metrics():
    from gptzoo.server import metrics

    objs = render(K8S / "base")
    names = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    rules = yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"])["rules"]
    served = set()
    for rule in rules:
        used = set(re.findall(r"gptzoo_\w+", rule["seriesQuery"] + rule["metricsQuery"]))
        assert used and used <= names, used - names
        served.add(re.sub(rule["name"]["matches"], rule["name"]["as"], re.findall(r"gptzoo_\w+",
                                                                                     rule["seriesQuery"])[0]))
    [target] = one(objs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert target["pods"]["metric"]["name"] in served
    assert one(objs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == one(objs, "Deployment")[
        "metadata"]["name"]


def test_the_gpu_overlay_asks_for_a_gpu_and_runs_the_gpu_image():
    [c] = containers(one(render(K8S / "overlays/gpu"), "Deployment"))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["image"].endswith(":gpu")
    assert "--device=cuda" in c["args"]
    [cpu] = containers(one(render(K8S / "overlays/example"), "Deployment"))
    assert cpu["image"].endswith(":cpu") and "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
