"""TLS verification for every HTTP client of the connectors."""

from __future__ import annotations

import ssl


def tls(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's verify: True (the system CAs), or a context trusting the CA bundle at that path
    (httpx deprecated a path string). Verification is never off: the settings refuse false."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify
