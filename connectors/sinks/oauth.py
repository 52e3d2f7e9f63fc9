"""OAuth 2.0 client credentials for httpx: fetch a token, refresh it before it expires, retry a 401 once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx
from pydantic import SecretStr

from connectors.tls import tls
from streams.core import telemetry
from streams.core.secrets import refresh


class TokenError(Exception):
    """The token endpoint refused the client credentials (permanent) or could not be reached."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class ClientCredentials(httpx.Auth):
    """Bearer tokens from a token endpoint (RFC 6749 section 4.4), shared by every request.

    Refreshed when less than `refresh_margin` of the lifetime is left, so requests do not fail
    on expiry; a 401 with a token we believed valid (revoked, rotated) refreshes once.
    """

    requires_response_body = False

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str | None = None,
        timeout: float = 10.0,
        verify: bool | str = True,
        refresh_margin: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.refresh_margin = refresh_margin
        self.clock = clock
        self._http = httpx.Client(timeout=timeout, verify=tls(verify), transport=transport)
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0
        self.log = telemetry.get_logger("oauth", token_url=token_url)

    def _fetch(self) -> None:
        data = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.get_secret_value(),
        }
        if self.scope:
            data["scope"] = self.scope
        try:
            resp = self._http.post(self.token_url, data=data, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise TokenError(f"token endpoint unreachable: {type(exc).__name__}", None) from exc
        if resp.status_code in (400, 401) and refresh(self.client_secret):
            # The secret's file changed since it was read (a rotation): ask again with the new one.
            data["client_secret"] = self.client_secret.get_secret_value()
            try:
                resp = self._http.post(self.token_url, data=data, headers={"Accept": "application/json"})
            except httpx.TransportError as exc:
                raise TokenError(f"token endpoint unreachable: {type(exc).__name__}", None) from exc
        if resp.status_code != 200:
            # The body may echo parameters; it is not logged, only its status.
            raise TokenError(f"token endpoint answered {resp.status_code}", resp.status_code)
        body = resp.json()
        lifetime = float(body.get("expires_in", 1800))
        self._token = str(body["access_token"])
        self._refresh_at = self.clock() + lifetime * (1 - self.refresh_margin)
        self.fetches += 1
        self.log.info("token_fetched", expires_in=lifetime, scope=body.get("scope"))

    def token(self, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or self.clock() >= self._refresh_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(force=True)}"
            yield request

    def close(self) -> None:
        self._http.close()
