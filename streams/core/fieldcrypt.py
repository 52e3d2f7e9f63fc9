"""Field-level encryption of the Avro fields a schema marks sensitive.

A field is sensitive when its schema says so with the custom attribute `"sensitive": true` (a
string, an optional string, or a map or array of strings: user names, e-mail addresses, free text
that may hold personal data). The serde encrypts such values before a record reaches a topic and
decrypts them when it reads one, so the bytes on the broker, its changelogs and its dead-letter
topics never hold them in clear; a process without the key sees only ciphertext.

An encrypted value stays an Avro string (schemas and their fingerprints do not change; the Parsing
Canonical Form drops custom attributes):

    enc:v1:<key id>:<base64url(12-byte nonce || AES-256-GCM ciphertext and tag)>

The associated data is the record's full name and the field's name, so a value cannot be moved
into another field or record unnoticed. Keys come from a TOML file (`ITSM_FIELD_KEYS_FILE`,
`itsmctl fieldkeys rotate` writes it), reread when it changes:

    active = "2026-12-01"
    [keys]
    "2026-12-01" = "<base64 of 32 random bytes>"
    "2026-11-01" = "<an older key, kept to read what it encrypted>"

New values are encrypted with the active key; every key in the file decrypts. A rotation adds a
key and makes it active; the old key stays until nothing written with it is retained.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.core.redact import never_log
from streams.core.watched import Watched

PREFIX = "enc:v1:"
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NONCE_BYTES = 12
KEY_BYTES = 32


class FieldCryptError(ValueError):
    """A key file that cannot be used, or a value that cannot be encrypted or decrypted."""


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class KeyRing:
    """AES-256-GCM keys by id; `active` encrypts, every key decrypts."""

    keys: Mapping[str, AESGCM]
    active: str | None

    @classmethod
    def parse(cls, text: str, origin: str) -> KeyRing:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FieldCryptError(f"{origin}: not TOML: {exc}") from None
        raw = doc.get("keys")
        if not isinstance(raw, dict) or not raw:
            raise FieldCryptError(f"{origin}: no [keys] table (itsmctl fieldkeys rotate writes one)")
        keys: dict[str, AESGCM] = {}
        for kid, material in raw.items():
            if not KEY_ID.match(kid):
                raise FieldCryptError(f"{origin}: key id {kid!r} is not [A-Za-z0-9._-]{{1,64}}")
            try:
                key = base64.b64decode(str(material), validate=True)
            except (binascii.Error, ValueError):
                raise FieldCryptError(f"{origin}: key {kid} is not base64") from None
            if len(key) != KEY_BYTES:
                raise FieldCryptError(f"{origin}: key {kid} has {len(key)} bytes, AES-256 needs {KEY_BYTES}")
            keys[kid] = AESGCM(key)
            never_log(str(material))
        active = doc.get("active")
        if active not in keys:
            raise FieldCryptError(f"{origin}: active = {active!r} names no key in [keys]")
        return cls(keys, str(active))

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FieldCryptError(f"field keys file {path}: {exc.strerror or exc}") from None
        return cls.parse(text, f"field keys file {path}")

    def encrypt(self, plaintext: str, aad: bytes) -> str:
        if self.active is None:
            raise FieldCryptError("no active field key")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys[self.active].encrypt(nonce, plaintext.encode("utf-8"), aad)
        return f"{PREFIX}{self.active}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, value: str, aad: bytes) -> str:
        kid, _, body = value[len(PREFIX) :].partition(":")
        key = self.keys.get(kid)
        if key is None:
            known = ", ".join(sorted(self.keys)) or "none"
            raise FieldCryptError(
                f"encrypted with key {kid!r}, which the field keys file lacks (has: {known})"
            )
        try:
            blob = base64.urlsafe_b64decode(body.encode("ascii"))
            return key.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeError, InvalidTag):
            raise FieldCryptError(
                f"does not decrypt with key {kid!r} (altered, or moved from another field)"
            ) from None


EMPTY = KeyRing({}, None)


# A plan says where a record's sensitive values are: per field, a transform of its value.
Transform = Callable[[Any, "Apply"], Any]
Apply = Callable[[str, bytes], str]


def _leaf(kind: Any, where: str) -> Callable[[Any, Apply, bytes], Any]:
    """How to reach the strings of a sensitive field of this type."""

    def one(value: Any, f: Apply, aad: bytes) -> Any:
        return f(value, aad) if isinstance(value, str) else value

    if kind == "string" or (isinstance(kind, dict) and kind.get("type") == "string"):
        return one
    if isinstance(kind, list) and all(k == "null" or k == "string" for k in kind) and "string" in kind:
        return one
    if isinstance(kind, dict) and kind.get("type") == "map" and kind.get("values") == "string":
        return lambda v, f, aad: {k: f(x, aad) for k, x in v.items()} if isinstance(v, dict) else v
    if isinstance(kind, dict) and kind.get("type") == "array" and kind.get("items") == "string":
        return lambda v, f, aad: [f(x, aad) for x in v] if isinstance(v, list) else v
    raise FieldCryptError(
        f"{where}: only a string, an optional string, or a map or array of strings can be sensitive"
    )


def _records_in(kind: Any) -> list[dict[str, Any]]:
    if isinstance(kind, dict) and kind.get("type") in ("record", "error"):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, dict) and k.get("type") in ("record", "error")]
    return []


@dataclass(frozen=True)
class Plan:
    """The sensitive fields of one record schema (nested records included)."""

    record: str
    leaves: tuple[tuple[str, bytes, Callable[[Any, Apply, bytes], Any]], ...]
    nested: tuple[tuple[str, Plan], ...]
    arrays: tuple[tuple[str, Plan], ...]

    @property
    def empty(self) -> bool:
        return not self.leaves and not self.nested and not self.arrays

    def fields(self) -> list[str]:
        out = [f"{self.record}.{name}" for name, _, _ in self.leaves]
        for _, sub in (*self.nested, *self.arrays):
            out.extend(sub.fields())
        return out

    def strings(self, value: dict[str, Any]) -> Iterator[tuple[bytes, str]]:
        """Each sensitive string of value with its associated data, without copying anything."""
        for name, aad, _ in self.leaves:
            found = value.get(name)
            if isinstance(found, str):
                yield aad, found
            elif isinstance(found, dict):
                yield from ((aad, v) for v in found.values() if isinstance(v, str))
            elif isinstance(found, list):
                yield from ((aad, v) for v in found if isinstance(v, str))
        for name, sub in self.nested:
            inner = value.get(name)
            if isinstance(inner, dict):
                yield from sub.strings(inner)
        for name, sub in self.arrays:
            for item in value.get(name) or ():
                if isinstance(item, dict):
                    yield from sub.strings(item)

    def apply(self, value: dict[str, Any], f: Apply) -> dict[str, Any]:
        """A copy of value with f applied to each sensitive string (value itself is not changed)."""
        out = dict(value)
        for name, aad, leaf in self.leaves:
            if name in out and out[name] is not None:
                out[name] = leaf(out[name], f, aad)
        for name, sub in self.nested:
            inner = out.get(name)
            if isinstance(inner, dict):
                out[name] = sub.apply(inner, f)
        for name, sub in self.arrays:
            items = out.get(name)
            if isinstance(items, list):
                out[name] = [sub.apply(x, f) if isinstance(x, dict) else x for x in items]
        return out


def plan_for(schema: dict[str, Any], namespace: str | None = None) -> Plan:
    """The plan of an expanded record schema; FieldCryptError when a sensitive mark is misplaced."""
    name = str(schema["name"])
    ns = schema.get("namespace", namespace)
    full = name if "." in name or not ns else f"{ns}.{name}"
    ns = full.rsplit(".", 1)[0] if "." in full else ns
    leaves, nested, arrays = [], [], []
    for fld in schema.get("fields", []):
        kind = fld["type"]
        if fld.get("sensitive") is True:
            where = f"{full}.{fld['name']}"
            leaves.append((fld["name"], where.encode(), _leaf(kind, where)))
            continue
        for rec in _records_in(kind):
            sub = plan_for(rec, ns)
            if not sub.empty:
                nested.append((fld["name"], sub))
        if isinstance(kind, dict) and kind.get("type") == "array":
            for rec in _records_in(kind.get("items")):
                sub = plan_for(rec, ns)
                if not sub.empty:
                    arrays.append((fld["name"], sub))
    return Plan(full, tuple(leaves), tuple(nested), tuple(arrays))


class FieldCrypt:
    """Encrypts and decrypts the sensitive fields of records by schema name.

    Without a key file nothing is encrypted, and a ciphertext that arrives fails to decode
    (`strict`, the default: a sink must never hand ciphertext to an ITSM) or is passed on as it
    is (`strict=False`, for tools that only show or copy records).
    """

    def __init__(self, keys: Watched[KeyRing] | None = None, *, strict: bool = True) -> None:
        self.keys = keys
        self.strict = strict
        self.plans: dict[str, Plan] = {}

    def plan(self, name: str, expanded: dict[str, Any]) -> Plan:
        found = self.plans.get(name)
        if found is None:
            found = self.plans[name] = plan_for(expanded)
        return found

    @property
    def ring(self) -> KeyRing:
        return self.keys.get() if self.keys is not None else EMPTY

    def seal(self, plan: Plan, value: dict[str, Any]) -> dict[str, Any]:
        ring = self.ring
        if plan.empty or ring.active is None:
            return value

        def enc(text: str, aad: bytes) -> str:
            return text if is_encrypted(text) else ring.encrypt(text, aad)

        return plan.apply(value, enc)

    def open(self, plan: Plan, value: dict[str, Any]) -> dict[str, Any]:
        if plan.empty:
            return value
        ring = self.ring
        if ring.active is None:
            # No keys: nothing to decrypt, so no copy; a strict reader only looks for ciphertext.
            if self.strict:
                for aad, text in plan.strings(value):
                    if is_encrypted(text):
                        raise FieldCryptError(
                            f"{aad.decode()} is encrypted and no field keys are configured "
                            "(ITSM_FIELD_KEYS_FILE)"
                        )
            return value

        def dec(text: str, aad: bytes) -> str:
            if not is_encrypted(text):
                return text
            try:
                return ring.decrypt(text, aad)
            except FieldCryptError as exc:
                raise FieldCryptError(f"{aad.decode()} {exc}") from None

        return plan.apply(value, dec)


def watch(path: Path) -> Watched[KeyRing]:
    """The key file, reread when it changes (checked once a second)."""
    return Watched(
        path,
        KeyRing.load,
        errors=(FieldCryptError,),
        interval=1.0,
        what="field_keys",
        describe=lambda ring: {"active": ring.active, "keys": len(ring.keys)},
    )


def new_key_id(existing: Mapping[str, object], now: datetime | None = None) -> str:
    base = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    kid, n = base, 1
    while kid in existing:
        n += 1
        kid = f"{base}-{n}"
    return kid


def entries(path: Path) -> tuple[str | None, dict[str, str]]:
    """The active id and the base64 keys of a file that loads; nothing when there is no file."""
    if not path.exists():
        return None, {}
    ring = KeyRing.load(path)  # refuse to rewrite a file that does not load
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return ring.active, {str(k): str(v) for k, v in doc["keys"].items()}


def _write(path: Path, active: str, keys: Mapping[str, str]) -> None:
    lines = [
        "# Field encryption keys (itsmctl fieldkeys). Secret: readable by the pipeline's account only.",
        "# The active key encrypts; every key decrypts. Remove a key only when no retained record uses it.",
        f'active = "{active}"',
        "",
        "[keys]",
        *(f'"{k}" = "{v}"' for k, v in keys.items()),
        "",
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines))
    os.replace(tmp, path)


def rotate(path: Path) -> tuple[str, list[str]]:
    """Add a new random key to the file (made 0600 if new) and make it active; old keys stay.
    Returns the new key's id and every id now in the file."""
    _, keys = entries(path)
    kid = new_key_id(keys)
    keys[kid] = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
    _write(path, kid, keys)
    return kid, list(keys)


def retire(path: Path, kid: str) -> list[str]:
    """Remove an old key; the ids left. The active key cannot be retired (rotate first)."""
    if not path.exists():
        raise FieldCryptError(f"field keys file {path} does not exist")
    active, keys = entries(path)
    if kid not in keys:
        raise FieldCryptError(f"no key {kid!r} in {path} (has: {', '.join(keys)})")
    if kid == active:
        raise FieldCryptError(f"{kid} is the active key; rotate to a new one first")
    del keys[kid]
    _write(path, str(active), keys)
    return list(keys)
