"""ServiceNow OAuth 2.0 client credentials against the development ITSM's /oauth_token.do."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from connectors.devitsm.server import OAuthClient, create_devitsm
from connectors.devitsm.store import Store
from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.oauth import ClientCredentials, TokenError
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.config import ServiceNowConfig
from connectors.sinks.servicenow.sink import ServiceNowSink
from streams.core import telemetry
from streams.core.dlq import ErrorClass
from tests.servers import serve
from tests.unit.test_servicenow_sink import command

SECRET = "cs-very-secret-value"


@pytest.fixture
def itsm() -> Iterator[tuple[str, OAuthClient]]:
    store = Store(":memory:")
    client = OAuthClient("pipeline-app", SECRET, ttl=60)
    with serve(create_devitsm(store, "pipeline", "basic-pw", oauth=client)) as url:
        yield url, client
    store.close()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def sink(url: str, secret: str = SECRET) -> ServiceNowSink:
    config = ServiceNowConfig(
        url, "", SecretStr(""), True, 5.0, "oauth", "pipeline-app", SecretStr(secret), f"{url}/oauth_token.do"
    )
    return ServiceNowSink(ServiceNowClient(config, RetryPolicy(budget_seconds=2, initial_seconds=0.01)))


def test_the_sink_works_with_a_client_credentials_token(itsm: tuple[str, OAuthClient]) -> None:
    url, client = itsm
    s = sink(url)
    s.handle(command(__import__("streams.core.models", fromlist=["IncidentAction"]).IncidentAction.OPEN))
    assert len(client.tokens) == 1


def test_a_token_is_reused_then_refreshed_before_it_expires(itsm: tuple[str, OAuthClient]) -> None:
    url, _ = itsm
    clock = Clock()
    auth = ClientCredentials(f"{url}/oauth_token.do", "pipeline-app", SecretStr(SECRET), clock=clock)
    with httpx.Client(base_url=url, auth=auth) as http:
        for _ in range(5):
            assert http.get("/api/now/table/incident").status_code == 200
        assert auth.fetches == 1
        clock.t = 60 * 0.8 + 0.1  # past the refresh point (20 % of the lifetime left)
        assert http.get("/api/now/table/incident").status_code == 200
        assert auth.fetches == 2


def test_a_rejected_token_is_refreshed_once(itsm: tuple[str, OAuthClient]) -> None:
    url, client = itsm
    auth = ClientCredentials(f"{url}/oauth_token.do", "pipeline-app", SecretStr(SECRET))
    with httpx.Client(base_url=url, auth=auth) as http:
        assert http.get("/api/now/table/incident").status_code == 200
        client.tokens.clear()  # rotated or revoked at the instance
        assert http.get("/api/now/table/incident").status_code == 200
    assert auth.fetches == 2


def test_wrong_client_credentials_are_a_permanent_auth_failure_without_the_secret_in_it(
    itsm: tuple[str, OAuthClient],
) -> None:
    url, _ = itsm
    out = io.StringIO()
    telemetry.configure_logging("info", stream=out)
    with pytest.raises(TokenError) as info:
        ClientCredentials(f"{url}/oauth_token.do", "pipeline-app", SecretStr("wrong-secret")).token()
    assert info.value.status == 401 and "wrong-secret" not in str(info.value)
    auth = ClientCredentials(f"{url}/oauth_token.do", "pipeline-app", SecretStr(SECRET))
    auth.token()
    assert SECRET not in out.getvalue() and "token_fetched" in out.getvalue()


def test_an_expired_or_unknown_bearer_token_gets_401(itsm: tuple[str, OAuthClient]) -> None:
    url, _ = itsm
    r = httpx.get(f"{url}/api/now/table/incident", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "User Not Authenticated"
    bad = httpx.post(f"{url}/oauth_token.do", data={"grant_type": "password"})
    assert bad.status_code == 400 and bad.json() == {"error": "unsupported_grant_type"}
    assert (
        json.loads(
            httpx.post(
                f"{url}/oauth_token.do",
                data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
            ).text
        )["error"]
        == "server_error"
    )


def test_the_sink_turns_a_refused_token_into_an_auth_dead_letter(itsm: tuple[str, OAuthClient]) -> None:
    from streams.core.models import IncidentAction

    url, _ = itsm
    with pytest.raises(SinkError) as info:
        sink(url, secret="wrong").handle(command(IncidentAction.OPEN))
    assert info.value.error_class is ErrorClass.AUTH and not info.value.retryable
