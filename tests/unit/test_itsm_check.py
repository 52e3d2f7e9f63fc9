"""`itsmctl itsm check` and `itsmctl itsm provision` against the development ITSM (roles, ACLs,
dictionary as ServiceNow documents them) and the Jira emulator; exit 0 / 1 / 2, -o json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.devitsm.server import Account, create_devitsm
from connectors.devitsm.store import Store
from connectors.emulators.jira import AGENT_PERMISSIONS, create_jira
from ops.kafka.broker import free_port
from tests.cli import Itsmctl
from tests.servers import serve

ACCOUNTS = (
    Account("admin", "admin-pw", frozenset({"admin"})),
    Account("incidents-only", "io-pw", frozenset({"sn_incident_write"})),
    Account("too-much", "tm-pw", frozenset({"itil", "personalize_dictionary", "user_admin"})),
)


@pytest.fixture
def devitsm() -> Iterator[str]:
    store = Store(":memory:")
    with serve(create_devitsm(store, "pipeline", "pipeline-pw", accounts=ACCOUNTS)) as url:
        yield url
    store.close()


def env_for(
    url: str, tmp_path: Path, user: str = "pipeline", password: str = "pipeline-pw"
) -> dict[str, str]:
    secret = tmp_path / f"{user}.pw"
    secret.write_text(password)
    admin = tmp_path / "admin.pw"
    admin.write_text("admin-pw")
    return {
        "ITSM_SERVICENOW_URL": url,
        "ITSM_SERVICENOW_USER": user,
        "ITSM_SERVICENOW_PASSWORD_FILE": str(secret),
        "ITSM_SERVICENOW_ADMIN_PASSWORD_FILE": str(admin),
    }


def test_servicenow_missing_columns_then_provisioned_then_all_good(
    devitsm: str, tmp_path: Path, itsmctl: Itsmctl
) -> None:
    env = env_for(devitsm, tmp_path)
    # The integration account cannot read the dictionary, and no change exists to look at.
    first = itsmctl("itsm", "check", "servicenow", **env)
    assert first.returncode == 0, first.stdout
    assert "WARN  columns change_request" in first.stdout and "u_commit_ids, u_build_number" in first.stdout
    # A change row shows which asked-for fields the table has: the custom ones are missing.
    import httpx

    httpx.post(
        f"{devitsm}/api/now/table/change_request",
        json={"short_description": "c"},
        auth=("pipeline", "pipeline-pw"),
    )
    missing = itsmctl("itsm", "check", "servicenow", **env)
    assert missing.returncode == 1, missing.stdout
    assert "FAIL  column change_request.u_build_number" in missing.stdout
    assert "fix: run `itsmctl itsm provision servicenow`" in missing.stdout
    assert "3 problem(s)" in missing.stdout

    dry = itsmctl("itsm", "provision", "servicenow", "--dry-run", **env)
    assert dry.returncode == 1 and dry.stdout.count("missing  change_request.u_") == 3
    made = itsmctl("itsm", "provision", "servicenow", **env)
    assert made.returncode == 0 and made.stdout.count("created  change_request.u_") == 3, made.stderr
    again = itsmctl("itsm", "provision", "servicenow", **env)
    assert again.returncode == 0 and again.stdout.count("present  change_request.u_") == 3  # idempotent

    good = itsmctl("itsm", "check", "servicenow", "-o", "json", **env)
    assert good.returncode == 0, good.stdout
    report = json.loads(good.stdout)
    assert report["result"] == "ok", report
    checks = {f["check"]: f["level"] for f in report["findings"]}
    assert checks["credentials"] == checks["rights"] == checks["column change_request.u_commit_ids"] == "ok"
    assert checks["read cmdb_ci"] == checks["read change_request"] == "ok"


def test_servicenow_wrong_password_is_a_problem_named_with_its_fix(
    devitsm: str, tmp_path: Path, itsmctl: Itsmctl
) -> None:
    ran = itsmctl("itsm", "check", "servicenow", **env_for(devitsm, tmp_path, password="wrong"))
    assert ran.returncode == 1
    assert "FAIL  credentials" in ran.stdout and "refused the credentials (401)" in ran.stdout
    assert "ITSM_SERVICENOW_PASSWORD_FILE" in ran.stdout and "wrong" not in ran.stdout


def test_servicenow_an_account_without_write_on_change_request(
    devitsm: str, tmp_path: Path, itsmctl: Itsmctl
) -> None:
    ran = itsmctl(
        "itsm", "check", "servicenow", "-o", "json", **env_for(devitsm, tmp_path, "incidents-only", "io-pw")
    )
    assert ran.returncode == 1
    problems = [f for f in json.loads(ran.stdout)["findings"] if f["level"] == "problem"]
    texts = [f"{f['check']}: {f['detail']}" for f in problems]
    assert "rights: may not create and update change requests: no itil or sn_change_write" in texts
    assert any(t.startswith("read change_request: cannot read change requests") for t in texts)
    assert all("incidents" not in t for t in texts if t.startswith("rights"))


def test_servicenow_rights_beyond_the_sinks_are_warnings(
    devitsm: str, tmp_path: Path, itsmctl: Itsmctl
) -> None:
    ran = itsmctl("itsm", "check", "servicenow", **env_for(devitsm, tmp_path, "too-much", "tm-pw"))
    assert "WARN  least privilege" in ran.stdout
    assert "holds personalize_dictionary" in ran.stdout and "holds user_admin" in ran.stdout


def test_an_itsm_that_does_not_answer_exits_2_with_one_line(tmp_path: Path, itsmctl: Itsmctl) -> None:
    ran = itsmctl("itsm", "check", "servicenow", **env_for(f"http://127.0.0.1:{free_port()}", tmp_path))
    assert ran.returncode == 2 and ran.stdout == ""
    assert (
        ran.stderr.startswith("itsmctl itsm check: cannot connect to") and len(ran.stderr.splitlines()) == 1
    )


def jira_env(url: str, tmp_path: Path, token: str = "tok") -> dict[str, str]:
    secret = tmp_path / "jira.token"
    secret.write_text(token)
    return {
        "ITSM_JIRA_URL": url,
        "ITSM_JIRA_EMAIL": "bot@example.com",
        "ITSM_JIRA_API_TOKEN_FILE": str(secret),
    }


def test_jira_all_good_then_a_wrong_token(tmp_path: Path, itsmctl: Itsmctl) -> None:
    with serve(create_jira("bot@example.com", "tok")) as url:
        good = itsmctl("itsm", "check", "jira", **jira_env(url, tmp_path))
        assert good.returncode == 0, good.stdout
        for line in (
            "ok    credentials",
            "ok    service desk",
            "ok    request type 10",
            "ok    permissions",
            "ok    search",
        ):
            assert line in good.stdout
        assert "WARN  transitions" in good.stdout  # no request yet to read them on
        bad = itsmctl("itsm", "check", "jira", **jira_env(url, tmp_path, "nope"))
        assert bad.returncode == 1 and "FAIL  credentials" in bad.stdout


def test_jira_missing_permissions_and_admin_rights(tmp_path: Path, itsmctl: Itsmctl) -> None:
    held = (AGENT_PERMISSIONS - {"TRANSITION_ISSUES"}) | {"ADMINISTER_PROJECTS"}
    with serve(create_jira("bot@example.com", "tok", permissions=held)) as url:
        ran = itsmctl("itsm", "check", "jira", **jira_env(url, tmp_path))
    assert ran.returncode == 1
    assert "FAIL  permissions" in ran.stdout and "TRANSITION_ISSUES" in ran.stdout
    assert "WARN  least privilege" in ran.stdout and "ADMINISTER_PROJECTS" in ran.stdout


def test_jira_a_wrong_request_type_and_deployment(tmp_path: Path, itsmctl: Itsmctl) -> None:
    with serve(create_jira("bot@example.com", "tok")) as url:
        ran = itsmctl(
            "itsm", "check", "jira", **jira_env(url, tmp_path), ITSM_JIRA_CHANGE_REQUEST_TYPE_ID="99"
        )
        assert ran.returncode == 1 and "FAIL  request type 99" in ran.stdout
        assert "ITSM_JIRA_CHANGE_REQUEST_TYPE_ID" in ran.stdout
        dc = itsmctl("itsm", "check", "jira", **jira_env(url, tmp_path), ITSM_JIRA_DEPLOYMENT="datacenter")
        assert dc.returncode == 1 and "ITSM_JIRA_DEPLOYMENT" in dc.stdout


def test_plain_http_is_only_for_this_machine() -> None:
    from connectors.preflight import Level, transport

    assert transport("https://acme.service-now.com").level is Level.OK
    assert transport("http://127.0.0.1:8090").level is Level.OK
    remote = transport("http://acme.service-now.com")
    assert remote.level is Level.PROBLEM and "in clear" in remote.detail and "https" in remote.fix


def test_tls_that_does_not_verify_is_a_problem_and_the_ca_bundle_fixes_it(
    tmp_path: Path, itsmctl: Itsmctl
) -> None:
    from tests.registry_emulator import make_ca

    ca = make_ca(tmp_path)
    store = Store(":memory:")
    with serve(create_devitsm(store, "pipeline", "pipeline-pw"), ca.server_context()) as url:
        assert url.startswith("https://")
        env = env_for(url, tmp_path)
        untrusted = itsmctl("itsm", "check", "servicenow", **env)
        assert untrusted.returncode == 1 and untrusted.stdout.startswith("FAIL  tls")
        assert "does not verify" in untrusted.stdout and "ITSM_SERVICENOW_VERIFY_TLS" in untrusted.stdout
        trusted = itsmctl("itsm", "check", "servicenow", **env, ITSM_SERVICENOW_VERIFY_TLS=str(ca.ca_file))
        assert trusted.returncode == 0, trusted.stdout
        assert "ok    tls                                https, certificate verified" in trusted.stdout
    store.close()
