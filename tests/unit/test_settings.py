"""Settings: CONVEYOR_X_FILE secret files, passwords masked in repr, AMQP TLS contexts."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from conveyor.bootstrap import build_broker, describe_event_store
from conveyor.settings import URL_SETTINGS, Settings
from conveyor.tls import amqp_security, amqp_ssl_context

PASSWORD = "pa55-W0rd%21x"  # percent-encoded "!" too
URLS = {
    "amqp_url": f"amqps://app:{PASSWORD}@rabbit.example:5671/prod",
    "event_store": f"kurrentdb://admin:{PASSWORD}@kurrent.example:2113?tlsCaFile=/ca.pem",
    "read_store": f"mongodb://reader:{PASSWORD}@mongo-1:27017,mongo-2:27017/conveyor?tls=true",
    "management_url": f"https://ops:{PASSWORD}@rabbit.example:15671/",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CONVEYOR_"):
            monkeypatch.delenv(name)


# --------------------------------------------------------------- CONVEYOR_X_FILE


def test_every_setting_can_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "amqp_url"
    secret.write_text("amqp://app:s3cret@rabbit:5672/\n")  # as `echo … > file` writes it
    (tmp_path / "prefetch").write_text("7")
    (tmp_path / "delays").write_text("0.5,2\r\n")
    monkeypatch.setenv("CONVEYOR_AMQP_URL_FILE", str(secret))
    monkeypatch.setenv("CONVEYOR_PREFETCH_FILE", str(tmp_path / "prefetch"))
    monkeypatch.setenv("conveyor_retry_delays_file", str(tmp_path / "delays"))  # any case
    settings = Settings()
    assert settings.amqp_url == "amqp://app:s3cret@rabbit:5672/"
    assert settings.prefetch == 7
    assert settings.retry_delays == (0.5, 2.0)


def test_a_setting_whose_name_ends_in_file_is_not_mistaken_for_a_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    monkeypatch.setenv("CONVEYOR_AMQP_CA_FILE", str(ca))
    assert Settings().amqp_ca_file == ca


def test_a_setting_given_both_ways_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "url"
    secret.write_text("amqp://app:s3cret@rabbit/")
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqp://other:0ther-pw@rabbit/")
    monkeypatch.setenv("CONVEYOR_AMQP_URL_FILE", str(secret))
    with pytest.raises(SettingsError) as raised:
        Settings()
    message = str(raised.value)
    assert "CONVEYOR_AMQP_URL and CONVEYOR_AMQP_URL_FILE" in message
    assert "s3cret" not in message
    assert "0ther-pw" not in message


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing", "No such file"),
        (lambda d: d, "Is a directory"),
        (lambda d: (d / "empty").write_text("\n") and d / "empty", "is empty"),
        (lambda d: (d / "bin").write_bytes(b"\xffs3cret\xfe") and d / "bin", "not UTF-8"),
    ],
)
def test_an_unreadable_secret_file_is_a_clear_error_without_its_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make: object, reason: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    monkeypatch.setenv("CONVEYOR_READ_STORE_FILE", str(path))
    with pytest.raises(SettingsError) as raised:
        Settings()
    message = str(raised.value)
    assert message.startswith("CONVEYOR_READ_STORE_FILE: ")
    assert str(path) in message
    assert reason in message
    assert "s3cret" not in message


def test_the_cli_reports_a_secret_file_problem_in_one_line(tmp_path: Path) -> None:
    conveyor = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "conveyor"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env["CONVEYOR_AMQP_URL_FILE"] = str(tmp_path / "nope")
    done = subprocess.run(
        [str(conveyor), "asyncapi"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"conveyor: error: invalid configuration: CONVEYOR_AMQP_URL_FILE: cannot read "
        f"{tmp_path / 'nope'}: No such file or directory"
    )


# --------------------------------------------------------------- no passwords in repr


def test_repr_and_str_mask_every_password_but_the_fields_keep_them() -> None:
    settings = Settings(**URLS)
    assert set(URLS) == set(URL_SETTINGS)
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert PASSWORD not in text
        assert "pa55" not in text
        assert "rabbit.example" in text  # the rest of the URL still helps
    assert "amqps://app:***@rabbit.example:5671/prod" in repr(settings)
    for name, url in URLS.items():
        assert getattr(settings, name) == url
        assert isinstance(getattr(settings, name), str)


def test_redact_masks_passwords_as_written_and_decoded() -> None:
    settings = Settings(**URLS)
    text = f"login failed for app with {PASSWORD} (decoded pa55-W0rd!x)"
    assert settings.redact(text) == "login failed for app with *** (decoded ***)"
    assert Settings(amqp_url="amqp://127.0.0.1/").redact("nothing") == "nothing"
    # the documented default is public: masking it would mask the user name guest too
    assert Settings().redact("amqp://guest:***@host") == "amqp://guest:***@host"


# --------------------------------------------------------------- TLS


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and key (our CA and client certificate), a second key
    that does not match it, and a PEM file that holds garbage."""
    directory = tmp_path_factory.mktemp("tls")
    files = {
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
        "other_key": directory / "other-key.pem",
        "garbage": directory / "garbage.pem",
    }
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-subj", "/CN=rabbit.example",
        "-keyout", str(files["key"]), "-out", str(files["cert"]),
    )  # fmt: skip
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-out", str(files["other_key"]),
    )  # fmt: skip
    files["garbage"].write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    return files


def test_plain_amqp_has_no_tls() -> None:
    settings = Settings(amqp_url="amqp://guest:guest@127.0.0.1:5672/")
    assert amqp_ssl_context(settings) is None
    assert amqp_security(settings) is None


def test_amqps_without_files_verifies_against_the_system_cas() -> None:
    context = amqp_ssl_context(Settings(amqp_url="amqps://u:p@rabbit.example/"))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_tls_settings_become_a_verifying_context_with_our_ca_and_client_certificate(
    certificates: dict[str, Path],
) -> None:
    settings = Settings(
        amqp_url="amqps://u:p@rabbit.example:5671/",
        amqp_ca_file=certificates["cert"],
        amqp_cert_file=certificates["cert"],
        amqp_key_file=certificates["key"],
    )
    context = amqp_ssl_context(settings)
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    [ca] = context.get_ca_certs()
    assert ca["subject"] == ((("commonName", "rabbit.example"),),)


def test_build_broker_passes_the_context_to_the_connection(
    certificates: dict[str, Path],
) -> None:
    settings = Settings(amqp_url="amqps://u:p@rabbit.example/", amqp_ca_file=certificates["cert"])
    broker = build_broker(settings)
    connection = broker._connection_kwargs
    assert isinstance(connection["ssl_context"], ssl.SSLContext)
    assert connection["url"].startswith("amqps://")
    assert connection["url"].endswith(":5671/")  # the TLS port when the URL names none
    plain = build_broker(Settings(amqp_url="amqp://guest:guest@127.0.0.1/"))
    assert plain._connection_kwargs["ssl_context"] is None


@pytest.mark.parametrize("name", ["amqp_ca_file", "amqp_cert_file", "amqp_key_file"])
def test_a_missing_tls_file_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqps://u:p@rabbit.example/")
    monkeypatch.setenv(f"CONVEYOR_{name.upper()}", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as raised:
        Settings()
    [error] = raised.value.errors(include_url=False)
    assert error["loc"] == (name,)
    assert f"{tmp_path / 'missing.pem'} does not exist or is not a file" in error["msg"]


def test_tls_files_with_a_plain_amqp_url_are_refused(certificates: dict[str, Path]) -> None:
    settings = Settings(amqp_url="amqp://u:p@rabbit.example/", amqp_ca_file=certificates["cert"])
    with pytest.raises(ValueError, match="CONVEYOR_AMQP_CA_FILE set, but CONVEYOR_AMQP_URL is not"):
        amqp_ssl_context(settings)
    with pytest.raises(ValueError, match="not amqps://"):
        build_broker(settings)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"amqp_ca_file": "garbage"}, "CONVEYOR_AMQP_CA_FILE: cannot load CA certificates"),
        ({"amqp_cert_file": "garbage"}, "cannot load the client certificate"),
        (
            {"amqp_cert_file": "cert", "amqp_key_file": "other_key"},
            "cannot load the client certificate",
        ),
        ({"amqp_key_file": "key"}, "CONVEYOR_AMQP_KEY_FILE is set without"),
    ],
)
def test_unusable_tls_files_are_clear_errors(
    certificates: dict[str, Path], files: dict[str, str], expected: str
) -> None:
    settings = Settings(
        amqp_url="amqps://u:p@rabbit.example/",
        **{name: certificates[which] for name, which in files.items()},  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError, match=expected) as raised:
        amqp_ssl_context(settings)
    assert "BEGIN" not in str(raised.value)


# --------------------------------------------------------------- KurrentDB URIs


README = Path(__file__).resolve().parents[2] / "README.md"
KURRENTDB_URI = re.compile(r"`((?:kurrentdb|esdb)(?:\+discover)?://[^`\s]+)`")


def test_every_kurrentdb_uri_the_readme_shows_builds_a_store() -> None:
    from conveyor.eventstore.kurrentdb import KurrentDBEventStore

    uris = KURRENTDB_URI.findall(README.read_text(encoding="utf-8"))
    # The single node, both cluster forms and the development node at least.
    assert any("+discover://" in uri for uri in uris)
    assert any(uri.split("@")[-1].count(",") >= 2 for uri in uris)
    for uri in uris:
        settings = Settings(event_store=uri)
        assert describe_event_store(settings).startswith("KurrentDB at"), uri
        # What open_event_store does before connecting: parses the URI, refusing a bad one.
        KurrentDBEventStore(settings.event_store)


# --------------------------------------------------------------- SQLite locations


def test_sqlite_locations_become_one_absolute_path_resolved_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.event_store == str(tmp_path / ".conveyor" / "events.db")
    assert settings.read_store == str(tmp_path / ".conveyor" / "readmodels.db")
    monkeypatch.chdir("/")  # a later change of directory moves nothing
    assert settings.event_store == str(tmp_path / ".conveyor" / "events.db")
    assert Settings(event_store="sqlite:///data/e.db").event_store == "/data/e.db"
    assert Settings(event_store="sqlite:////srv/e.db").event_store == "/srv/e.db"
    assert Settings(read_store="~/r.db").read_store == str(tmp_path / "home" / "r.db")
    assert Settings(event_store=URLS["event_store"]).event_store == URLS["event_store"]
    assert Settings(read_store=URLS["read_store"]).read_store == URLS["read_store"]


@pytest.mark.parametrize(
    "location", [":memory:", "sqlite://", "sqlite:///:memory:", "file::memory:", "", "sqlite:x"]
)
def test_sqlite_locations_that_name_no_shared_file_are_refused(location: str) -> None:
    for setting in ("event_store", "read_store"):
        with pytest.raises(ValidationError, match="file path") as refused:
            Settings(**{setting: location})
        assert refused.value.errors()[0]["loc"] == (setting,)
