"""TLS verification for every HTTP client of the connectors."""

from __future__ import annotations

import ssl


def tls(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's verify: True (the system CAs), or a context trusting the CA bundle at that path
    (httpx deprecated a path string). Verification is never off: the settings refuse false."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def server_context(cert_file: str, key_file: str, client_ca_file: str | None = None) -> ssl.SSLContext:
    """TLS for one of our HTTP servers: TLS 1.2 or newer, the certificate chain and key from PEM
    files, and with client_ca_file, a client certificate that CA signed required (mutual TLS).
    OSError or ssl.SSLError when a file is missing or does not hold what it should."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def reload_when_changed(
    context: ssl.SSLContext, cert_file: str, key_file: str, interval: float = 5.0
) -> None:
    """A daemon thread that loads a renewed certificate and key into context (new handshakes use
    them; no restart). A pair that does not load keeps the old one and is logged."""
    import os
    import threading
    import time

    from streams.core import telemetry

    log = telemetry.get_logger("tls")

    def stamp() -> tuple[float, float]:
        return os.stat(cert_file).st_mtime, os.stat(key_file).st_mtime

    def run() -> None:
        seen = stamp()
        while True:
            time.sleep(interval)
            try:
                now = stamp()
            except OSError:
                continue  # being replaced: look again next time
            if now == seen:
                continue
            seen = now  # an invalid pair is reported once, not every interval
            try:
                # Tried on a scratch context first: a half-loaded pair must not reach the live one.
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
                context.load_cert_chain(cert_file, key_file)
                log.info("tls_certificate_reloaded", cert_file=cert_file)
            except (OSError, ssl.SSLError) as exc:
                log.error("tls_certificate_invalid", cert_file=cert_file, error=str(exc))

    threading.Thread(target=run, name="tls-reload", daemon=True).start()
