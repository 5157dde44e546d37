"""TLS for the AMQP connection: an `ssl.SSLContext` from the amqp_*_file settings.

KurrentDB and MongoDB take their TLS options in their own URLs (`tls=…`, `tlsCAFile=…`),
so only RabbitMQ needs this.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from faststream.security import BaseSecurity

from conveyor.settings import Settings


def amqp_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for an amqps:// URL (None for amqp://).

    Verification is always on (certificate chain and host name): a CA file replaces the
    system's CAs, it never turns checking off. TLS files with a plain amqp:// URL are a
    configuration error rather than ignored, so nobody believes they have TLS when they do
    not.
    """
    files = {
        "CONVEYOR_AMQP_CA_FILE": settings.amqp_ca_file,
        "CONVEYOR_AMQP_CERT_FILE": settings.amqp_cert_file,
        "CONVEYOR_AMQP_KEY_FILE": settings.amqp_key_file,
    }
    try:
        scheme = urlsplit(settings.amqp_url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme != "amqps":
        given = [name for name, path in files.items() if path is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} set, but CONVEYOR_AMQP_URL is not amqps://: "
                "use an amqps:// URL (port 5671) for TLS"
            )
        return None
    if settings.amqp_key_file is not None and settings.amqp_cert_file is None:
        raise ValueError("CONVEYOR_AMQP_KEY_FILE is set without CONVEYOR_AMQP_CERT_FILE")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.amqp_ca_file) if settings.amqp_ca_file else None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"CONVEYOR_AMQP_CA_FILE: cannot load CA certificates from "
            f"{settings.amqp_ca_file}: {_reason(exc)}"
        ) from None
    if settings.amqp_cert_file is not None:
        try:
            context.load_cert_chain(
                str(settings.amqp_cert_file),
                str(settings.amqp_key_file) if settings.amqp_key_file else None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"CONVEYOR_AMQP_CERT_FILE/CONVEYOR_AMQP_KEY_FILE: cannot load the client "
                f"certificate {settings.amqp_cert_file}"
                + (f" with key {settings.amqp_key_file}" if settings.amqp_key_file else "")
                + f": {_reason(exc)}"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def amqp_security(settings: Settings) -> BaseSecurity | None:
    """What RabbitBroker takes as `security=`: TLS with our context, or nothing for amqp://."""
    context = amqp_ssl_context(settings)
    return BaseSecurity(ssl_context=context) if context is not None else None
