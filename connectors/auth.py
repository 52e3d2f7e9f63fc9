"""Bearer tokens with scopes for the pipeline's own HTTP APIs (gateway, silence API, verdicts,
change gate): who is calling, and may they do this?

A tokens file (TOML, `ITSM_TOKENS_FILE`) names each principal, the SHA-256 of its tokens and its
scopes. Only hashes are stored; a token is shown once, when made (`itsmctl tokens issue`):

    [tokens.prometheus-prod]
    sha256 = ["<64 hex>"]               # several during a rotation: old and new both work
    scopes = ["alerts:write:alertmanager"]

    [tokens.release-bot]
    sha256 = ["<64 hex>"]
    scopes = ["gate:check:payments/*", "gate:check:*/staging"]

A scope is `<resource>:<action>` (everything of that kind) or `<resource>:<action>:<qualifier>`,
the qualifier a shell-style pattern over what the call names (a webhook source; a gate call's
`service/environment`). The file is reread when it changes; an invalid new version keeps the last
good one and says so (`error`), rather than locking every caller out.

A refusal answers 401 (no token, or one nobody was given) or 403 (a known principal without the
scope) with no detail an attacker could use; the log names the principal (never the token) and
`itsm_pipeline_auth_failures_total{component,reason}` counts it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from streams.core import telemetry
from streams.core.settings import Settings
from streams.core.watched import Watched

log = telemetry.get_logger("auth")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEX = re.compile(r"^[0-9a-f]{64}$")
QUALIFIER = re.compile(r"^[A-Za-z0-9*?._/-]{1,200}$")

# Every scope there is, and what it lets a principal do.
SCOPES: Mapping[str, str] = {
    "alerts:write": "publish alerts through a webhook route (qualifier: the source, e.g. alertmanager)",
    "verdicts:write": "record a verdict on a sampled correlation decision",
    "silences:read": "list and read silences (Alertmanager's silence API)",
    "silences:write": "create, update and expire silences",
    "gate:check": "ask the change gate and request changes (qualifier: service/environment)",
    "gate:bypass": "bypass the change gate in an emergency (qualifier: service/environment)",
    "status:read": "read the status service's JSON",
}


class TokensError(ValueError):
    """The tokens file is missing or invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class Scope:
    base: str  # e.g. "gate:check"
    qualifier: str | None = None  # a pattern over the resource; None: every resource

    @classmethod
    def parse(cls, text: str) -> Scope:
        parts = text.split(":", 2)
        base = ":".join(parts[:2])
        if base not in SCOPES:
            raise TokensError(f"unknown scope {text!r}; scopes are {', '.join(SCOPES)}")
        qualifier = parts[2] if len(parts) == 3 else None
        if qualifier is not None and not QUALIFIER.match(qualifier):
            raise TokensError(f"scope {text!r}: the qualifier may hold letters, digits, . _ / - * ? only")
        return cls(base, qualifier)

    def covers(self, base: str, resource: str | None) -> bool:
        if base != self.base:
            return False
        if self.qualifier is None:
            return True
        return resource is not None and fnmatchcase(resource, self.qualifier)

    def __str__(self) -> str:
        return self.base if self.qualifier is None else f"{self.base}:{self.qualifier}"


@dataclass(frozen=True)
class Principal:
    name: str
    token_sha256: tuple[str, ...] = ()
    scopes: tuple[Scope, ...] = ()

    def allows(self, base: str, resource: str | None = None) -> bool:
        return any(s.covers(base, resource) for s in self.scopes)


def token_hash(token: str) -> str:
    # Any text a header may carry hashes (and then simply matches nobody): never an exception.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_of(headers: Mapping[str, str]) -> str | None:
    header = headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


def _entry(path: Path, name: str, entry: Any, legacy: bool) -> Principal:
    if not NAME.match(name) or not isinstance(entry, dict):
        raise TokensError(f"{path}: {name!r} is not a plain name with a table of its own")
    raw = entry.get("token_sha256" if legacy else "sha256", [])
    digests = tuple(str(d) for d in (raw if isinstance(raw, list) else [raw]))
    if not digests or not all(HEX.match(d) for d in digests):
        key = "token_sha256" if legacy else "sha256"
        raise TokensError(f"{path}: {name!r} needs {key}: 64 hex digits, or a list of them")
    if legacy:
        # The change gate's callers file: every caller may check; `bypass = true` may bypass.
        texts = ["gate:check"] + (["gate:bypass"] if entry.get("bypass") is True else [])
    else:
        texts = entry.get("scopes", [])
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise TokensError(f"{path}: {name!r} needs scopes, a list of strings")
    try:
        scopes = tuple(Scope.parse(t) for t in texts)
    except TokensError as exc:
        raise TokensError(f"{path}: {name!r}: {exc}") from None
    return Principal(name, digests, scopes)


@dataclass
class Tokens:
    """The principals of a tokens file; `identify` compares hashes in constant time."""

    principals: list[Principal] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, path: Path) -> Tokens:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TokensError(f"{path}: not valid TOML: {exc}") from None
        principals = [_entry(path, n, e, False) for n, e in (data.get("tokens") or {}).items()]
        principals += [_entry(path, n, e, True) for n, e in (data.get("callers") or {}).items()]
        names = [p.name for p in principals]
        if len(set(names)) != len(names):
            raise TokensError(f"{path}: a name appears twice")
        if not principals:
            raise TokensError(f"{path}: no [tokens.<name>] entries; nobody could call")
        return cls(principals)

    @classmethod
    def load(cls, path: Path) -> Tokens:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokensError(
                f"tokens file {path} does not exist (make one with `itsmctl tokens issue NAME --scope ...`)"
            ) from None
        except OSError as exc:
            raise TokensError(f"tokens file {path} cannot be read: {exc.strerror}") from None
        return cls.parse(text, path)

    def identify(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = token_hash(token)
        found = None
        for principal in self.principals:
            for known in principal.token_sha256:
                if hmac.compare_digest(known, digest):
                    found = principal
        return found

    def named(self, name: str) -> Principal | None:
        return next((p for p in self.principals if p.name == name), None)


class TokensFile(Watched[Tokens]):
    """A tokens file, reread when it changes on disk (a rotation needs no restart); an invalid
    new version keeps the last good one and sets `error`."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            Tokens.load,
            errors=(TokensError,),
            what="tokens",
            describe=lambda tokens: {"principals": len(tokens.principals)},
        )


@dataclass(frozen=True)
class Refusal:
    status: int  # 401: who are you? 403: not this.
    reason: str  # for the log and the metric, never for the caller

    @property
    def message(self) -> str:
        return "unauthorized" if self.status == 401 else "forbidden"


def refused(answer: Refusal, plain: bool = False) -> web.Response:
    """The HTTP answer to a refusal: 401 (with `WWW-Authenticate: Bearer`) or 403, and a body that
    says only that: `{"error": "unauthorized"}`, or a bare JSON string (plain: Alertmanager's API)."""
    headers = {"WWW-Authenticate": "Bearer"} if answer.status == 401 else None
    body: object = answer.message if plain else {"error": answer.message}
    return web.json_response(body, status=answer.status, headers=headers)


class Guard:
    """Who is calling, and may they? One per component (the metric's `component` label).

    tokens: the tokens file (scoped principals). Without one, `shared` is a single token given
    every scope in `shared_scopes` (the older ITSM_GATEWAY_TOKEN), and without that the component
    runs open: an anonymous caller gets `open_scopes` (for local development; `insecure` says so).
    """

    def __init__(
        self,
        component: str,
        tokens: TokensFile | None = None,
        shared: SecretStr | str | None = None,
        shared_scopes: tuple[str, ...] = (),
        open_scopes: tuple[str, ...] = (),
    ) -> None:
        self.component = component
        self.tokens = tokens
        # The shared token is read at each request (a FileSecret follows its file: no restart).
        self._shared = SecretStr(shared) if isinstance(shared, str) else shared
        self._shared_scopes = tuple(Scope.parse(s) for s in shared_scopes)
        self.shared: Principal | None = None
        if self._shared is not None and tokens is None:
            self.shared = self._shared_principal()
        self.anonymous = Principal("anonymous", (), tuple(Scope.parse(s) for s in open_scopes))

    def _shared_principal(self) -> Principal:
        assert self._shared is not None
        digest = token_hash(self._shared.get_secret_value())
        if self.shared is None or self.shared.token_sha256 != (digest,):
            self.shared = Principal("shared-token", (digest,), self._shared_scopes)
        return self.shared

    @property
    def insecure(self) -> bool:
        return self.tokens is None and self.shared is None

    @property
    def error(self) -> str | None:
        return self.tokens.error if self.tokens is not None else None

    def identify(self, token: str | None) -> Principal | None:
        if self.tokens is not None:
            return self.tokens.get().identify(token)
        if self.shared is not None:
            return Tokens([self._shared_principal()]).identify(token)
        return self.anonymous

    def authenticate(self, headers: Mapping[str, str], **context: Any) -> Principal | Refusal:
        """Who is calling (401 when nobody we know)."""
        token = bearer_of(headers)
        principal = self.identify(token)
        if principal is None:
            reason = "missing_token" if token is None else "unknown_token"
            return self._refuse(401, reason, None, None, context)
        return principal

    def authorize(
        self, principal: Principal, base: str, resource: str | None = None, **context: Any
    ) -> Refusal | None:
        """May this principal do `base` on `resource`? (403 when not; 401 for the anonymous.)"""
        if principal.allows(base, resource):
            return None
        if principal is self.anonymous:
            return self._refuse(401, "missing_token", None, base, context, resource)
        return self._refuse(403, "missing_scope", principal.name, base, context, resource)

    def check(
        self, headers: Mapping[str, str], base: str, resource: str | None = None, **context: Any
    ) -> Principal | Refusal:
        """The principal allowed to do `base` on `resource`, or why not (logged and counted)."""
        principal = self.authenticate(headers, **context)
        if isinstance(principal, Refusal):
            return principal
        refused = self.authorize(principal, base, resource, **context)
        return principal if refused is None else refused

    def _refuse(
        self,
        status: int,
        reason: str,
        principal: str | None,
        base: str | None,
        context: Mapping[str, Any],
        resource: str | None = None,
    ) -> Refusal:
        telemetry.AUTH_FAILURES.labels(self.component, reason).inc()
        log.warning(
            "auth_refused",
            component=self.component,
            status=status,
            reason=reason,
            principal=principal,
            scope=base,
            resource=resource,
            **context,
        )
        return Refusal(status, reason)


GATEWAY_SCOPES = ("alerts:write", "verdicts:write", "silences:read", "silences:write")


def guard_for(
    component: str, settings: Settings, shared_scopes: tuple[str, ...] = (), open_scopes: tuple[str, ...] = ()
) -> Guard:
    """A component's guard from the settings: ITSM_TOKENS_FILE when set; otherwise the gateway's
    one shared token (ITSM_GATEWAY_TOKEN), otherwise open (`open_scopes` only). TokensError when
    the file is missing or invalid."""
    tokens = TokensFile(Path(settings.tokens_file)) if settings.tokens_file else None
    shared = settings.gateway_token if shared_scopes else None
    return Guard(component, tokens, shared, shared_scopes, open_scopes)


HEADER = (
    "# Bearer tokens of the pipeline's HTTP APIs: only their SHA-256 is stored.\n"
    "# Managed by `itsmctl tokens issue|rotate|revoke`; reread by the running services when it changes.\n"
)


def render(principals: list[Principal]) -> str:
    out = [HEADER]
    for p in principals:
        digests = ", ".join(f'"{d}"' for d in p.token_sha256)
        scopes = ", ".join(f'"{s}"' for s in p.scopes)
        out.append(f"\n[tokens.{p.name}]\nsha256 = [{digests}]\nscopes = [{scopes}]\n")
    return "".join(out)


def _existing(path: Path) -> list[Principal]:
    return Tokens.load(path).principals if path.exists() else []


def _write(path: Path, principals: list[Principal]) -> None:
    """Replace the file whole (0600), so a reader never sees half of it."""
    text = render(principals)
    Tokens.parse(text, path)  # what we write must read back
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def issue(path: Path, name: str, scopes: list[str]) -> tuple[str, Principal]:
    """A new principal with a new token (returned once; only its hash is stored)."""
    if not NAME.match(name):
        raise TokensError(f"name {name!r}: letters, digits, '.', '_' and '-' only")
    if not scopes:
        raise TokensError("give at least one --scope; a token that may do nothing is a mistake")
    parsed = tuple(Scope.parse(s) for s in scopes)
    principals = _existing(path)
    if any(p.name == name for p in principals):
        raise TokensError(f"{path} has {name!r} already (rotate its token, or revoke it first)")
    token = secrets.token_urlsafe(32)
    principal = Principal(name, (token_hash(token),), parsed)
    _write(path, [*principals, principal])
    return token, principal


def rotate(path: Path, name: str) -> tuple[str, Principal]:
    """A second token for a principal: old and new both work until `revoke --old`."""
    principals = _existing(path)
    found = next((p for p in principals if p.name == name), None)
    if found is None:
        raise TokensError(f"{path} has no {name!r}")
    token = secrets.token_urlsafe(32)
    rotated = Principal(name, (*found.token_sha256, token_hash(token)), found.scopes)
    _write(path, [rotated if p.name == name else p for p in principals])
    return token, rotated


def revoke(path: Path, name: str, old_only: bool = False) -> Principal:
    """Remove a principal, or (old_only) every token of it but the newest: the end of a rotation."""
    principals = _existing(path)
    found = next((p for p in principals if p.name == name), None)
    if found is None:
        raise TokensError(f"{path} has no {name!r}")
    if old_only:
        kept = Principal(name, found.token_sha256[-1:], found.scopes)
        _write(path, [kept if p.name == name else p for p in principals])
        return kept
    rest = [p for p in principals if p.name != name]
    if not rest:
        raise TokensError(
            f"{name!r} is the last principal of {path}; nobody could call (delete the file instead)"
        )
    _write(path, rest)
    return found
