"""Create the secrets of the docker-compose stack in deploy/secrets/ (never committed).

    python3 deploy/make_secrets.py            # create what is missing, keep what exists
    python3 deploy/make_secrets.py --rotate   # new passwords for everything

It writes a random password per RabbitMQ user (deploy/secrets/<user>.password), renders
deploy/rabbitmq/definitions.json — whose users have no password at all, so nobody can log
in with them until this runs — into deploy/secrets/rabbitmq-definitions.json with the
password hashes, and writes the URLs the conveyor service reads through CONVEYOR_*_FILE.
The hash is what `rabbitmqctl hash_password <password>` prints (SHA-256 with a 4-byte salt),
computed here so no broker is needed.

MongoDB gets a root password (administration only) and an application user's password
(deploy/mongodb/create-app-user.js creates the user); KurrentDB gets admin and ops
passwords (deploy/secrets/kurrentdb.env) and a private CA with a node certificate for
the names kurrentdb and localhost (deploy/secrets/kurrentdb/, made with openssl), so it
runs with TLS and authentication.

Standard library only (and the openssl command for the certificates), so it runs with any
python3.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEPLOY = Path(__file__).resolve().parent
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"


def rabbit_password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def render_definitions(definitions: dict[str, Any], passwords: dict[str, str]) -> dict[str, Any]:
    """The definitions with each user's password hash filled in; every user needs one."""
    rendered = copy.deepcopy(definitions)
    for user in rendered["users"]:
        user["password_hash"] = rabbit_password_hash(passwords[user["name"]])
        user["hashing_algorithm"] = HASHING_ALGORITHM
    return rendered


def _write(path: Path, text: str) -> None:
    # 0644 in a 0700 directory: other host users cannot reach it, while the containers'
    # own users (rabbitmq, conveyor) can read the bind-mounted file.
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def _password(path: Path, rotate: bool) -> str:
    if rotate or not path.exists():
        _write(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_kurrentdb_certificates(out: Path, rotate: bool) -> None:
    """A private CA (its key stays outside the mounted directory) and a node certificate
    for kurrentdb/localhost with the server and client uses KurrentDB asks for."""
    certs = out / "kurrentdb"
    node_cert = certs / "node.crt"
    if node_cert.exists() and not rotate:
        return
    (certs / "ca").mkdir(parents=True, exist_ok=True)
    certs.chmod(0o755)  # the container's kurrentdb user reads the bind-mounted directory
    (certs / "ca").chmod(0o755)
    ca_key, ca_cert = out / "kurrentdb-ca.key", certs / "ca" / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
             "-subj", "/CN=conveyor local KurrentDB CA",
             "-keyout", str(ca_key), "-out", str(ca_cert))  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        request, extensions = Path(scratch) / "node.csr", Path(scratch) / "node.ext"
        extensions.write_text(
            "subjectAltName=DNS:kurrentdb,DNS:localhost,IP:127.0.0.1\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
        )
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kurrentdb",
                 "-keyout", str(certs / "node.key"), "-out", str(request))  # fmt: skip
        _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                 "-set_serial", str(secrets.randbits(63)), "-days", "825",
                 "-extfile", str(extensions),
                 "-out", str(node_cert))  # fmt: skip
    for path in (ca_cert, node_cert, certs / "node.key"):
        path.chmod(0o644)
    ca_key.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotate", action="store_true", help="new passwords for everything")
    parser.add_argument("--out", type=Path, default=DEPLOY / "secrets")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)

    definitions = json.loads(DEFINITIONS.read_text())
    passwords = {}
    for user in (u["name"] for u in definitions["users"]):
        path = out / f"{user}.password"
        if args.rotate or not path.exists():
            _write(path, secrets.token_urlsafe(24) + "\n")
        passwords[user] = path.read_text().strip()
    _password(out / "mongodb.password", args.rotate)  # root: administration only
    mongodb_app = _password(out / "mongodb-app.password", args.rotate)
    kurrentdb_admin = _password(out / "kurrentdb-admin.password", args.rotate)
    kurrentdb_ops = _password(out / "kurrentdb-ops.password", args.rotate)
    _write(
        out / "kurrentdb.env",
        f"KURRENTDB_DEFAULT_ADMIN_PASSWORD={kurrentdb_admin}\n"
        f"KURRENTDB_DEFAULT_OPS_PASSWORD={kurrentdb_ops}\n",
    )
    try:
        make_kurrentdb_certificates(out, args.rotate)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"could not make KurrentDB's certificates with openssl: {exc}", file=sys.stderr)
        return 1

    _write(
        out / "rabbitmq-definitions.json",
        json.dumps(render_definitions(definitions, passwords), indent=2) + "\n",
    )
    worker = quote(passwords["conveyor-worker"], safe="")
    _write(out / "conveyor-amqp-url", f"amqp://conveyor-worker:{worker}@rabbitmq:5672/\n")
    _write(
        out / "conveyor-read-store",
        f"mongodb://conveyor:{quote(mongodb_app, safe='')}@mongodb:27017/conveyor"
        "?authSource=conveyor\n",
    )
    _write(
        out / "conveyor-event-store",
        f"kurrentdb://admin:{quote(kurrentdb_admin, safe='')}@kurrentdb:2113"
        "?tlsCaFile=/run/secrets/kurrentdb_ca\n",
    )
    _write(out / "conveyor-event-store.insecure", "kurrentdb://kurrentdb:2113?tls=false\n")
    print(f"secrets in {out} (restart rabbitmq to load new passwords)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
