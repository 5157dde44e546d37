"""The compose files hold together: no Docker engine here, so what can be checked without
one is checked — every worker runs a real component with settings conveyor knows, through
secrets that exist, and nothing carries a credential in the file itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from conveyor.settings import Settings
from workers.host import COMPONENTS

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def _merged() -> dict[str, Any]:
    """docker-compose.yml with docker-compose.scale.yml on top, service by service."""
    base, scale = _load("docker-compose.yml"), _load("docker-compose.scale.yml")
    services = {**base["services"]}
    for name, service in scale["services"].items():
        services[name] = {**services.get(name, {}), **service}
    return {**base, "services": services}


def _settings_variables() -> set[str]:
    names = {f"CONVEYOR_{field.upper()}" for field in Settings.model_fields}
    return names | {f"{name}_FILE" for name in names}


def test_the_scale_file_runs_each_worker_kind_in_processes_of_its_own() -> None:
    services = _merged()["services"]
    assert services["conveyor"]["profiles"] == ["all-in-one"], "the all-in-one worker is off"
    replicas = {}
    for name in ("commands", "gateway", "projections", "query"):
        service = services[name]
        command = service["command"]
        assert command[:2] == ["run", "--only"]
        assert set(command[2].split(",")) <= set(COMPONENTS)
        replicas[command[2]] = service["deploy"]["replicas"]
        assert service["image"] == "conveyor:local"
        assert set(service["depends_on"]) == {"rabbitmq", "kurrentdb", "mongodb"}
    assert replicas == {"commands": 3, "gateway": 2, "projections": 2, "http": 2}


def test_every_conveyor_variable_is_a_setting_and_secrets_come_from_files() -> None:
    config = _merged()
    known = _settings_variables()
    declared_secrets = set(config["secrets"])
    for name, service in config["services"].items():
        if not name.startswith(("conveyor", "commands", "gateway", "projections", "query")):
            continue
        environment = service["environment"]
        unknown = {key for key in environment if key.startswith("CONVEYOR_")} - known
        assert not unknown, f"{name}: {unknown} are not conveyor settings"
        for key, value in environment.items():
            assert "@" not in str(value), f"{name}: {key} carries credentials in the file"
        assert set(service["secrets"]) <= declared_secrets
        assert "CONVEYOR_AMQP_URL_FILE" in environment
