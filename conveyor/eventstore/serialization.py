"""JSON, time and URL conventions shared by the adapters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def to_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC: stored times are always compared in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """A fixed-width UTC ISO form, so stored times sort and compare as text."""
    return to_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return to_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def redact_url(uri: str) -> str:
    """The URI with its password masked, safe for logs and error messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
