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
    for name in ("commands", "gateway", "projections", "process-manager", "query"):
        service = services[name]
        command = service["command"]
        assert command[:2] == ["run", "--only"]
        assert set(command[2].split(",")) <= set(COMPONENTS)
        replicas[command[2]] = service["deploy"]["replicas"]
        assert service["image"] == "conveyor:local"
        assert set(service["depends_on"]) == {"rabbitmq", "kurrentdb", "mongodb"}
    assert replicas == {
        "commands": 3,
        "gateway": 2,
        "projections": 2,
        "process-manager": 2,  # competing on one queue: optimistic concurrency per workflow
        "http": 2,
    }


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


def _published_ports(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_every_published_port_is_bound_to_loopback() -> None:
    for config in (_load("docker-compose.yml"), _merged()):
        for name, service in config["services"].items():
            for port in _published_ports(service):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_kurrentdb_runs_secure_unless_the_dev_override_is_added() -> None:
    base = _load("docker-compose.yml")
    kurrentdb = base["services"]["kurrentdb"]
    assert "KURRENTDB_INSECURE" not in kurrentdb["environment"]
    assert kurrentdb["environment"]["KURRENTDB_CERTIFICATE_FILE"]
    assert "https://" in " ".join(kurrentdb["healthcheck"]["test"])
    for config in (base, _merged()):
        for name, service in config["services"].items():
            environment = service.get("environment", {})
            assert "tls=false" not in str(environment.get("CONVEYOR_EVENT_STORE", "")), name
    override = _load("docker-compose.insecure-kurrentdb.yml")
    assert override["services"]["kurrentdb"]["environment"] == {"KURRENTDB_INSECURE": "true"}
    assert "DEVELOPMENT ONLY" in (ROOT / "docker-compose.insecure-kurrentdb.yml").read_text()


def test_conveyor_connects_to_mongodb_as_an_application_user_not_as_root(
    tmp_path: Path,
) -> None:
    import importlib.util
    from urllib.parse import parse_qs, urlsplit

    mongodb = _load("docker-compose.yml")["services"]["mongodb"]
    root = mongodb["environment"]["MONGO_INITDB_ROOT_USERNAME"]
    assert any("create-app-user.js:/docker-entrypoint-initdb.d/" in v for v in mongodb["volumes"])
    script = (ROOT / "deploy" / "mongodb" / "create-app-user.js").read_text()
    assert '[{ role: "readWrite", db: "conveyor" }]' in script

    spec = importlib.util.spec_from_file_location("make_secrets", ROOT / "deploy/make_secrets.py")
    assert spec is not None
    assert spec.loader is not None
    make_secrets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_secrets)
    assert make_secrets.main(["--out", str(tmp_path)]) == 0
    url = urlsplit((tmp_path / "conveyor-read-store").read_text().strip())
    assert url.username == "conveyor" != root
    assert parse_qs(url.query)["authSource"] == ["conveyor"]
    assert url.password == (tmp_path / "mongodb-app.password").read_text().strip()
    assert url.password != (tmp_path / "mongodb.password").read_text().strip()
    event_store = urlsplit((tmp_path / "conveyor-event-store").read_text().strip())
    assert "tlsCaFile=/run/secrets/kurrentdb_ca" in event_store.query
    assert event_store.password == (tmp_path / "kurrentdb-admin.password").read_text().strip()
    assert (tmp_path / "kurrentdb" / "node.crt").is_file()
