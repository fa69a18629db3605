"""Deployment files are valid: docker-compose and Kubernetes parse, every command they run is a valid
invocation of the same CLI the tests use (checked with --check-config), and the image installs every
package with pinned dependencies. (Docker itself does not run here.)"""

from __future__ import annotations

import re
import string
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
IMAGE_SERVICES = {name: svc for name, svc in COMPOSE["services"].items() if svc.get("image", "").startswith("ccxt-collector")}


def check_config(args: list[str], path_map: dict[str, str], env: dict[str, str] | None = None) -> None:
    """Run ``ccxt-collector ARGS --check-config`` with container paths mapped to local ones."""
    local = []
    for arg in args:
        for container, host in path_map.items():
            if arg == container or arg.startswith(container + "/"):
                arg = host + arg[len(container):]
        local.append(arg)
    result = subprocess.run([sys.executable, "-m", "cli", *local, "--check-config"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, f"ccxt-collector {' '.join(local)}: {result.stderr}"
    assert result.stdout.startswith("ok:"), result.stdout


def test_compose_services_and_volumes():
    services = COMPOSE["services"]
    assert {"redis", "deribit-btc", "deribit-eth", "archiver", "cache", "monitor", "prometheus"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "healthcheck" in services["redis"]
    assert services["archiver"]["deploy"]["replicas"] == 2
    assert {"redis-data", "archive"} <= set(COMPOSE["volumes"])
    for name, svc in IMAGE_SERVICES.items():
        if svc["command"][0] == "produce":  # every producer journals to its own volume while Redis is down
            spool = svc["command"][svc["command"].index("--spool-dir") + 1]
            assert any(v.endswith(f":{spool}") and v.split(":")[0] in COMPOSE["volumes"] for v in svc["volumes"]), name
    for name, svc in IMAGE_SERVICES.items():
        assert svc["environment"]["REDIS_URL"].startswith("redis://redis:"), name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name


@pytest.mark.parametrize("name", sorted(IMAGE_SERVICES))
def test_compose_commands_are_valid_cli_invocations(name, tmp_path):
    check_config(IMAGE_SERVICES[name]["command"], {"/config": str(ROOT / "deploy" / "shards"), "/archive": str(tmp_path),
                                                   "/spool": str(tmp_path / "spool")})


def test_prometheus_scrapes_every_collector_service():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t.split(":")[0] for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    targets |= {n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert targets == set(IMAGE_SERVICES)
    for svc in IMAGE_SERVICES.values():
        assert svc["command"][svc["command"].index("--metrics-port") + 1] == "9100"


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        text = path.read_text()
        if "${SHARD}" in text:
            text = string.Template(text).substitute(SHARD="deribit-btc")
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def test_kubernetes_manifests(tmp_path):
    docs = k8s_documents()
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    shard_dir = tmp_path / "config"
    shard_dir.mkdir()
    for file_name, body in config_map["data"].items():
        (shard_dir / file_name).write_text(body)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"produce-deribit-btc", "archiver", "cache", "monitor"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "redis"
            check_config(container["args"], {"/config": str(shard_dir), "/archive": str(tmp_path / "archive"),
                                             "/spool": str(tmp_path / "spool")})


def test_dockerfile_installs_every_package_with_pinned_dependencies():
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"COPY {package.rstrip('*')} " in dockerfile, f"the image misses the {package} package"
    assert "USER collector" in dockerfile and 'ENTRYPOINT ["ccxt-collector"]' in dockerfile
    pins = {re.split(r"==", line)[0].lower().replace("_", "-")
            for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines() if "==" in line}
    for requirement in project["project"]["dependencies"]:
        name = re.split(r"[<>=\[ ]", requirement)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in deploy/constraints.txt"
