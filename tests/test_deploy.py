"""k8s/ and its monitoring, checked as CI can without a cluster: each kustomization renders, the
objects validate against a pinned Kubernetes version, checkov finds nothing (its skips are
justified inline), the alert rules pass promtool's unit tests, and every metric the rules,
the dashboard, the autoscaler and the adapter name is one the server exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from test_api import wait_ready

from rewardserve.service import Settings, create_app

ROOT = Path(__file__).parents[1]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.34.0"
KUSTOMIZATIONS = ["overlays/cpu", "overlays/gpu", "overlays/router", "training", "secrets"]
TOOLS = Path(sys.executable).parent


def tool(name: str, where: str) -> str:
    found = shutil.which(name, path=str(TOOLS)) or shutil.which(name)
    assert found, f"{name} is needed: {where} (make install)"
    return found


@pytest.fixture(scope="module")
def k8s(tmp_path_factory) -> Path:
    """A copy of k8s/ with the git-ignored keys file made from its example, as a user would."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy)
    shutil.copy(copy / "secrets" / "api-keys.txt.example", copy / "secrets" / "api-keys.txt")
    return copy


def render(k8s: Path, kustomization: str) -> str:
    kubectl = tool("kubectl", "kubectl kustomize renders k8s/")
    done = subprocess.run([kubectl, "kustomize", str(k8s / kustomization)], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request, k8s, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    text = render(k8s, request.param)
    path = tmp_path_factory.mktemp("rendered") / f"{request.param.replace('/', '-')}.yaml"
    path.write_text(text)
    return request.param, path, [d for d in yaml.safe_load_all(text) if d]


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    """The object of `kind` named `name`, or `name-<hash>` as kustomize's generators name it."""

    def named(o: dict) -> bool:
        return name is None or re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"]) is not None

    return next(o for o in objects if o["kind"] == kind and named(o))


def test_objects_validate_against_the_pinned_kubernetes_version(rendered):
    _, path, objects = rendered
    validate = tool("kubernetes-validate", "the kubernetes-validate package")
    done = subprocess.run([validate, "--strict", "-k", KUBERNETES_VERSION, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    core = [o for o in objects if not o["apiVersion"].startswith("monitoring.coreos.com")]
    assert done.stdout.count(" passed for resource ") == len(core)


def test_checkov_finds_nothing(rendered):
    _, path, _ = rendered
    checkov = ROOT / ".venv-checkov" / "bin" / "checkov"
    assert checkov.exists(), "checkov lives in its own environment, .venv-checkov (make install)"
    done = subprocess.run(
        [checkov, "--file", str(path), "--framework", "kubernetes", "--compact", "--quiet", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    assert summary["failed"] == 0 and summary["passed"] > 0, done.stdout[-3000:]


def server_container(objects: list[dict]) -> dict:
    return find(objects, "Deployment", "rewardserve")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_a_replica_is_probed_drained_and_locked_down(k8s, overlay):
    objects = [d for d in yaml.safe_load_all(render(k8s, overlay)) if d]
    pod = find(objects, "Deployment", "rewardserve")["spec"]["template"]["spec"]
    container = server_container(objects)
    settings = find(objects, "ConfigMap", "rewardserve-settings")["data"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/ready" and startup["periodSeconds"] * startup["failureThreshold"] >= 120
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + int(settings["REWARDSERVE_DRAIN_TIMEOUT"]) + 10
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    keys = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert settings["REWARDSERVE_API_KEYS_FILE"] == f"{keys['mountPath']}/api-keys"
    (secret,) = [d for d in yaml.safe_load_all(render(k8s, "secrets")) if d and d["kind"] == "Secret"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert secret["metadata"]["name"] == volume["secret"]["secretName"] and list(secret["data"]) == ["api-keys"]
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (1 if overlay.endswith("gpu") else None)


def test_the_service_the_servicemonitor_and_the_pdb_select_the_replicas(k8s):
    objects = [d for d in yaml.safe_load_all(render(k8s, "overlays/cpu")) if d]
    pod_labels = find(objects, "Deployment", "rewardserve")["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "rewardserve")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert find(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = find(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert {p["name"] for p in server_container(objects)["ports"]} >= {
        p["targetPort"] for p in service["spec"]["ports"]
    }
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rewardserve"
    dashboard = find(objects, "ConfigMap", "rewardserve-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["rewardserve.json"])["uid"] == "rewardserve"


def test_the_router_finds_the_replicas_and_takes_a_draining_one_out_of_rotation_at_once(k8s):
    from vllm_router.launch_router import parse_router_args

    objects = [d for d in yaml.safe_load_all(render(k8s, "overlays/router")) if d]
    router = find(objects, "Deployment", "vllm-router")
    pod = router["spec"]["template"]
    args = parse_router_args(pod["spec"]["containers"][0]["args"])  # as the router's own parser reads them
    replicas = find(objects, "Deployment", "rewardserve")
    server = server_container(objects)
    replica_labels = replicas["spec"]["template"]["metadata"]["labels"]
    assert args.service_discovery and args.selector.items() <= replica_labels.items()
    assert not args.selector.items() <= pod["metadata"]["labels"].items()  # the router does not route to itself
    assert args.service_discovery_namespace == replicas["metadata"]["namespace"] == router["metadata"]["namespace"]
    assert args.service_discovery_port == next(p["containerPort"] for p in server["ports"] if p["name"] == "http")
    # a replica leaves rotation when /ready fails (at once on SIGTERM), within seconds
    assert args.health_check_endpoint == server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert args.health_failure_threshold == 1 and args.health_check_interval_secs <= 5
    assert args.policy == "power_of_two"  # reads each replica's /get_load
    role = find(objects, "Role", "vllm-router")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = find(objects, "RoleBinding", "vllm-router")
    assert binding["subjects"][0]["name"] == pod["spec"]["serviceAccountName"]
    service = find(objects, "Service", "rewardserve-router")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


# ---------------------------------------------------------------------------- monitoring


def alert_rules() -> dict:
    return {"groups": yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())["spec"]["groups"]}


def dashboard() -> dict:
    return json.loads((K8S / "monitoring" / "grafana-dashboard.json").read_text())


def dashboard_queries() -> list[str]:
    # Grafana's variables, as Grafana would fill them in
    fill = {"$namespace": "rewardserve", "$__rate_interval": "1m"}
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in fill.items():
                query = query.replace(variable, value)
            queries.append(query)
    return queries


def test_the_alert_rules_pass_promtools_unit_tests(tmp_path):
    promtool = tool("promtool", "Debian's prometheus package")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(alert_rules()))
    shutil.copy(K8S / "monitoring" / "tests" / "alerts.yaml", tmp_path / "alerts.yaml")
    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in alert_rules()["groups"] for r in g["rules"]}
    tested_alerts = set(re.findall(r"alertname: (\w+)", (K8S / "monitoring" / "tests" / "alerts.yaml").read_text()))
    assert alerts == tested_alerts


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses each query as a recording rule's expression
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel_query_{i}", "expr": q}
                                                         for i, q in enumerate(dashboard_queries())]}]}  # fmt: skip
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    promtool = tool("promtool", "Debian's prometheus package")
    checked = subprocess.run([promtool, "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_covers_what_operators_watch():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("requests", "status code", "latency", "queue", "batch size", "padding", "reward", "length"):
        assert topic in titles, topic
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"]


@pytest.fixture(scope="module")
def exported(tiny_bundle) -> set[str]:
    """Every series name the server exports, from a live app's /metrics."""
    with TestClient(create_app(Settings(bundle=tiny_bundle))) as client:
        wait_ready(client)
        client.post("/score", json={"items": [{"prompt": "p", "response": "r"}]})
        text = client.get("/metrics").text
    # The series present, plus counters and gauges that have no labelled child yet (their TYPE
    # line names them). Histograms count by their samples: `rewardserve_reward` has no _sum.
    sampled = set(re.findall(r"^(\w+)[{ ]", text, re.MULTILINE))
    typed = {name for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, re.MULTILINE) if kind != "histogram"}
    return sampled | typed


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\b(rewardserve_\w+)", promql))


def test_rules_dashboard_autoscaler_and_adapter_name_only_exported_metrics(exported):
    used = set().union(*map(metric_names, dashboard_queries()))
    used |= {n for g in alert_rules()["groups"] for r in g["rules"] for n in metric_names(r["expr"])}
    hpa = yaml.safe_load((K8S / "base" / "hpa.yaml").read_text())
    pods_metric = next(m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == pods_metric and pods_metric in rule["seriesQuery"]
    used |= {pods_metric}
    assert used - exported == set()
    assert {"rewardserve_reward_bucket", "rewardserve_reward_length_correlation", "rewardserve_queue_depth"} <= used
