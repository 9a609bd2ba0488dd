"""The production files agree with each other and with settings (Docker does not run on CI: read them).

docker-compose.yml: the services the deploy guide describes, pinned images, healthchecks, start order,
the GPU worker; every variable it sets for the app is one that settings read. Every variable settings read
is listed in .env.example and in the configuration table of docs/deploy.md.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO

APP_SERVICES = ("migrate", "web", "worker")


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def settings_variables() -> set[str]:
    """Names settings read through the simapp.env helpers."""
    source = (REPO / "simapp" / "settings.py").read_text()
    return set(re.findall(r"env_(?:str|bool|int|list)\(\s*\"([A-Z][A-Z0-9_]*)\"", source))


def env_example_variables() -> set[str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z][A-Z0-9_]*=", line)}


def test_compose_runs_the_documented_services_with_pinned_images_and_healthchecks() -> None:
    services = compose()["services"]

    assert set(services) == {"postgres", "redis", "qdrant", "migrate", "web", "worker"}
    for name in ("postgres", "redis", "qdrant"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?", image), f"{name}: image {image!r} is not pinned"
    for name in ("postgres", "redis", "qdrant", "web", "worker"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "qdrant": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    assert services["web"]["command"][0] == "gunicorn"


def test_compose_worker_takes_the_gpu_queue_on_an_nvidia_gpu() -> None:
    worker = compose()["services"]["worker"]

    command = worker["command"]
    assert command[:4] == ["celery", "-A", "simapp", "worker"]
    assert "gpu" in command[command.index("-Q") + 1].split(",")
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_qdrant_has_an_api_key_and_persistent_storage() -> None:
    document = compose()
    qdrant = document["services"]["qdrant"]

    assert qdrant["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY:?")
    storage = [volume for volume in qdrant["volumes"] if volume.endswith(":/qdrant/storage")]
    assert storage and storage[0].split(":")[0] in document["volumes"]
    for name in APP_SERVICES:
        environment = document["services"][name]["environment"]
        assert environment["QDRANT_URL"] == "http://qdrant:6333"
        assert environment["QDRANT_API_KEY"] == qdrant["environment"]["QDRANT__SERVICE__API_KEY"]


def test_every_variable_compose_sets_for_the_app_is_read_by_settings() -> None:
    services = compose()["services"]

    for name in APP_SERVICES:
        unread = set(services[name]["environment"]) - settings_variables()
        assert not unread, f"{name} sets {sorted(unread)}, which settings never read"


def test_every_variable_settings_read_is_in_env_example_and_the_deploy_guide() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", guide, flags=re.MULTILINE))
    compose_text = (REPO / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))

    assert settings_variables() - env_example_variables() == set()
    assert settings_variables() - documented == set()
    assert interpolated - env_example_variables() == set()
    assert env_example_variables() - documented == set()
