"""Scoped bearer tokens (connectors/auth.py): scope matching, the tokens file, the guard's answers
and counts, and `itsmctl tokens` offline (the audited path runs on the broker in
tests/integration/test_tokens_cli.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connectors import auth
from connectors.auth import Guard, Principal, Refusal, Scope, Tokens, TokensError, TokensFile
from tests.cli import Itsmctl


@pytest.mark.parametrize(
    ("granted", "base", "resource", "allowed"),
    [
        ("alerts:write", "alerts:write", "grafana", True),  # unqualified: every source
        ("alerts:write:grafana", "alerts:write", "grafana", True),
        ("alerts:write:grafana", "alerts:write", "alertmanager", False),
        ("alerts:write:grafana", "verdicts:write", None, False),  # another action
        ("gate:check:payments/*", "gate:check", "payments/production", True),
        ("gate:check:payments/*", "gate:check", "payments-v2/production", False),
        ("gate:check:*/staging", "gate:check", "checkout/staging", True),
        ("gate:check:*/staging", "gate:check", "checkout/production", False),
        ("gate:check:payments/*", "gate:check", None, False),  # a qualified scope needs a resource
        ("gate:check", "gate:bypass", "payments/production", False),  # check never implies bypass
        ("silences:read", "silences:write", None, False),  # read never implies write
        ("gate:check:Payments/*", "gate:check", "payments/x", False),  # case counts
    ],
)
def test_a_scope_covers_its_action_and_what_its_pattern_matches(
    granted: str, base: str, resource: str | None, allowed: bool
) -> None:
    assert Scope.parse(granted).covers(base, resource) is allowed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alerts:delete", "unknown scope"),
        ("admin", "unknown scope"),
        ("gate:check:payments production", "qualifier may hold"),
        ("gate:check:", "qualifier may hold"),
    ],
)
def test_a_bad_scope_is_refused_naming_it(text: str, says: str) -> None:
    with pytest.raises(TokensError, match=says):
        Scope.parse(text)


HASH = "a" * 64


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[tokens.x\n", "not valid TOML"),
        ("", "no [tokens.<name>] entries"),
        (f'[tokens.x]\nsha256 = ["{HASH}"]\nscopes = ["alerts:nope"]\n', "'x': unknown scope"),
        ('[tokens.x]\nsha256 = ["abc"]\nscopes = []\n', "needs sha256: 64 hex"),
        (f'[tokens.x]\nsha256 = "{HASH}"\nscopes = "alerts:write"\n', "needs scopes, a list"),
        (f'[tokens."bad name"]\nsha256 = "{HASH}"\nscopes = []\n', "not a plain name"),
        (
            f'[tokens.x]\nsha256 = "{HASH}"\nscopes = []\n[callers.x]\ntoken_sha256 = "{HASH}"\n',
            "appears twice",
        ),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_problem(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokensError) as raised:
        Tokens.load(path)
    assert says in str(raised.value) and str(path) in str(raised.value)


def test_the_gates_older_callers_entries_still_read(tmp_path: Path) -> None:
    path = tmp_path / "callers.toml"
    token = "legacy-token"
    path.write_text(
        f'[callers.ci]\ntoken_sha256 = "{auth.token_hash(token)}"\n'
        f'[callers.oncall]\ntoken_sha256 = ["{HASH}"]\nbypass = true\n'
    )
    tokens = Tokens.load(path)
    ci = tokens.identify(token)
    assert ci is not None and ci.name == "ci" and ci.allows("gate:check", "x/y")
    assert not ci.allows("gate:bypass", "x/y")
    oncall = tokens.named("oncall")
    assert oncall is not None and oncall.allows("gate:bypass", "x/y")


def test_issue_rotate_revoke_keep_only_hashes_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first, _ = auth.issue(path, "prometheus", ["alerts:write:alertmanager"])
    auth.issue(path, "desk", ["verdicts:write"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first not in path.read_text() and auth.token_hash(first) in path.read_text()
    second, rotated = auth.rotate(path, "prometheus")
    tokens = Tokens.load(path)
    assert tokens.identify(first) == tokens.identify(second) == rotated
    auth.revoke(path, "prometheus", old_only=True)
    tokens = Tokens.load(path)
    assert tokens.identify(first) is None and tokens.identify(second) is not None
    auth.revoke(path, "prometheus")
    assert Tokens.load(path).identify(second) is None
    with pytest.raises(TokensError, match="last principal"):
        auth.revoke(path, "desk")
    with pytest.raises(TokensError, match="already"):
        auth.issue(path, "desk", ["verdicts:write"])
    with pytest.raises(TokensError, match="at least one --scope"):
        auth.issue(path, "idle", [])
    with pytest.raises(TokensError, match="has no 'ghost'"):
        auth.rotate(path, "ghost")


def failures(component: str, reason: str) -> float:
    labels = {"component": component, "reason": reason}
    return REGISTRY.get_sample_value("itsm_pipeline_auth_failures_total", labels) or 0.0


def test_the_guard_answers_401_or_403_counts_and_logs_the_principal_never_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.toml"
    token, _ = auth.issue(path, "grafana", ["alerts:write:grafana"])
    guard = Guard("unit", TokensFile(path))
    before = {r: failures("unit", r) for r in ("missing_token", "unknown_token", "missing_scope")}
    ok = guard.check({"Authorization": f"bearer {token}"}, "alerts:write", "grafana")
    assert isinstance(ok, Principal) and ok.name == "grafana"  # the scheme is case-insensitive
    assert guard.check({}, "alerts:write", "grafana") == Refusal(401, "missing_token")
    assert guard.check({"Authorization": "Bearer nope"}, "alerts:write", "grafana") == Refusal(
        401, "unknown_token"
    )
    assert guard.check({"Authorization": f"Basic {token}"}, "alerts:write", "grafana").status == 401  # type: ignore[union-attr]
    wrong = guard.check({"Authorization": f"Bearer {token}"}, "alerts:write", "datadog")
    assert wrong == Refusal(403, "missing_scope") and wrong.message == "forbidden"
    assert failures("unit", "missing_token") == before["missing_token"] + 2
    assert failures("unit", "unknown_token") == before["unknown_token"] + 1
    assert failures("unit", "missing_scope") == before["missing_scope"] + 1
    logged = capsys.readouterr().out
    assert "principal=grafana" in logged and token not in logged and "nope" not in logged


def test_without_tokens_the_guard_is_open_only_for_its_open_scopes() -> None:
    guard = Guard("unit-open", open_scopes=("alerts:write",))
    assert guard.insecure
    assert isinstance(guard.check({}, "alerts:write", "grafana"), Principal)
    assert guard.check({}, "verdicts:write") == Refusal(401, "missing_token")
    shared = Guard("unit-shared", shared="s3cret", shared_scopes=("alerts:write", "verdicts:write"))
    assert not shared.insecure
    assert isinstance(shared.check({"Authorization": "Bearer s3cret"}, "verdicts:write"), Principal)
    assert shared.check({}, "alerts:write", "grafana") == Refusal(401, "missing_token")
    assert shared.check({"Authorization": "Bearer s3cret"}, "silences:write") == Refusal(403, "missing_scope")


def test_a_running_guard_rereads_the_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    old, _ = auth.issue(path, "a", ["status:read"])
    guard = Guard("unit-reload", TokensFile(path))
    new, _ = auth.issue(path, "b", ["status:read"])
    assert isinstance(guard.check({"Authorization": f"Bearer {new}"}, "status:read"), Principal)
    path.write_text("[tokens\n")
    assert isinstance(guard.check({"Authorization": f"Bearer {old}"}, "status:read"), Principal)
    assert guard.error is not None and "not valid TOML" in guard.error


def test_itsmctl_tokens_offline_issue_list_and_scopes(tmp_path: Path, itsmctl: Itsmctl) -> None:
    path = tmp_path / "tokens.toml"
    r = itsmctl(
        "tokens", "issue", "prom", "--scope", "alerts:write:alertmanager", "--file", str(path), "--offline"
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert len(token) > 30 and token not in path.read_text()
    assert "not audited (--offline)" in r.stderr
    listed = itsmctl("tokens", "list", "--file", str(path), "-o", "json")
    assert json.loads(listed.stdout)["principals"] == [
        {"name": "prom", "tokens": 1, "scopes": ["alerts:write:alertmanager"]}
    ]
    assert token not in listed.stdout
    bad = itsmctl("tokens", "issue", "x", "--scope", "root", "--file", str(path), "--offline")
    assert bad.returncode == 2 and "unknown scope 'root'" in bad.stderr and "Traceback" not in bad.stderr
    missing = itsmctl("tokens", "list", "--file", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unset = itsmctl("tokens", "list")
    assert unset.returncode == 2 and "ITSM_TOKENS_FILE" in unset.stderr
    scopes = itsmctl("tokens", "scopes")
    assert all(s in scopes.stdout for s in auth.SCOPES)
