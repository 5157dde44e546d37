"""Create the secrets of the docker-compose stack in deploy/secrets/ (never committed).

    python3 deploy/make_secrets.py            # create what is missing, keep what exists
    python3 deploy/make_secrets.py --rotate   # new passwords for everything

It writes a random password per RabbitMQ user (deploy/secrets/<user>.password), renders
deploy/rabbitmq/definitions.json — whose users have no password at all, so nobody can log
in with them until this runs — into deploy/secrets/rabbitmq-definitions.json with the
password hashes, and writes the URLs the conveyor service reads through CONVEYOR_*_FILE.
The hash is what `rabbitmqctl hash_password <password>` prints (SHA-256 with a 4-byte salt),
computed here so no broker is needed.

Standard library only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import secrets
import sys
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
    mongodb_path = out / "mongodb.password"
    if args.rotate or not mongodb_path.exists():
        _write(mongodb_path, secrets.token_urlsafe(24) + "\n")
    mongodb_password = mongodb_path.read_text().strip()

    _write(
        out / "rabbitmq-definitions.json",
        json.dumps(render_definitions(definitions, passwords), indent=2) + "\n",
    )
    worker = quote(passwords["conveyor-worker"], safe="")
    _write(out / "conveyor-amqp-url", f"amqp://conveyor-worker:{worker}@rabbitmq:5672/\n")
    _write(
        out / "conveyor-read-store",
        f"mongodb://conveyor:{quote(mongodb_password, safe='')}@mongodb:27017/conveyor"
        "?authSource=admin\n",
    )
    print(f"secrets in {out} (restart rabbitmq to load new passwords)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
