"""Avro serde: single-object encoding (default, no registry) and the Confluent wire format.

Framing is told apart by the first byte, so every consumer reads both:
  C3 01 <8-byte little-endian CRC-64-AVRO fingerprint> <Avro binary>   (Avro single-object)
  00 <4-byte big-endian schema id> <Avro binary>                        (Confluent)
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import SecretStr, ValidationError

from streams.core.fieldcrypt import FieldCrypt, FieldCryptError
from streams.core.models import RECORD_TYPES, Record

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

R = TypeVar("R", bound=Record)


class SerdeError(Exception):
    """A record could not be encoded or decoded; error_class is the DLQ class (schema, validation
    or encryption)."""

    def __init__(self, message: str, error_class: str = "schema") -> None:
        super().__init__(message)
        self.error_class = error_class


def default_schema_dir() -> Path:
    """schemas/avro beside the packages (a checkout or an editable install)."""
    return Path(__file__).resolve().parents[2] / "schemas" / "avro"


def canonical_fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, little-endian, as single-object encoding wants."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True)
class LoadedSchema:
    """A parsed schema with its full name, fingerprint and source file."""

    name: str
    parsed: Any
    fingerprint: bytes
    path: Path
    parsed_raw: Any = None
    # Top-level fields of type timestamp-millis (or a union with it): encode() hands fastavro
    # their epoch milliseconds, which it writes as they are (profiled: its own conversion of an
    # aware datetime was about 3.5 us a field, a third of encoding an Alert).
    millis: frozenset[str] = frozenset()


def _is_millis(node: Any) -> bool:
    if isinstance(node, list):
        return any(_is_millis(branch) for branch in node)
    return (
        isinstance(node, dict)
        and node.get("logicalType") == "timestamp-millis"
        and node.get("type") == "long"
    )


def millis_fields(raw: Mapping[str, Any]) -> frozenset[str]:
    """The names of a record schema's top-level timestamp-millis fields."""
    return frozenset(str(f["name"]) for f in raw.get("fields", ()) if _is_millis(f.get("type")))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _full_name(node: dict[str, Any], namespace: str | None) -> str:
    name = str(node["name"])
    if "." in name:
        return name
    ns = node.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def named_types(raw: Any, namespace: str | None = None, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum, fixed) defined in a schema, by full name."""
    out = {} if out is None else out
    if isinstance(raw, list):
        for item in raw:
            named_types(item, namespace, out)
    elif isinstance(raw, dict):
        if raw.get("type") in ("record", "error", "enum", "fixed") and "name" in raw:
            full = _full_name(raw, namespace)
            out[full] = raw
            namespace = full.rsplit(".", 1)[0] if "." in full else namespace
        for key in ("fields", "items", "values"):
            if key in raw:
                named_types(raw[key], namespace, out)
        if isinstance(raw.get("type"), dict | list):
            named_types(raw["type"], namespace, out)
    return out


def expand(
    raw: Any, named: dict[str, Any], namespace: str | None = None, seen: set[str] | None = None
) -> Any:
    """The schema with references to other files' named types inlined (each defined once)."""
    seen = set() if seen is None else seen
    if isinstance(raw, str):
        full = raw if "." in raw or namespace is None else f"{namespace}.{raw}"
        for candidate in (raw, full):
            if candidate in named and candidate not in seen:
                seen.add(candidate)
                return expand(named[candidate], named, candidate.rsplit(".", 1)[0], seen)
        return raw
    if isinstance(raw, list):
        return [expand(item, named, namespace, seen) for item in raw]
    if isinstance(raw, dict):
        out = dict(raw)
        if raw.get("type") in ("record", "error", "enum", "fixed") and "name" in raw:
            full = _full_name(raw, namespace)
            seen.add(full)
            namespace = full.rsplit(".", 1)[0] if "." in full else namespace
        if "fields" in raw:
            out["fields"] = [{**f, "type": expand(f["type"], named, namespace, seen)} for f in raw["fields"]]
        for key in ("items", "values"):
            if key in raw:
                out[key] = expand(raw[key], named, namespace, seen)
        if isinstance(raw.get("type"), dict | list | str) and raw.get("type") not in (
            "record",
            "error",
            "enum",
            "fixed",
            "array",
            "map",
        ):
            out["type"] = expand(raw["type"], named, namespace, seen)
        return out
    return raw


class SchemaStore:
    """The schemas of schemas/avro: the current one per record name and every released version.

    A current schema may reference a named type of another file (SuppressedAlert embeds Alert);
    it is expanded before fingerprinting, so a change of the embedded type changes the
    fingerprint too. Files in history/ are stored expanded (self-contained).
    """

    def __init__(self, schema_dir: Path | None = None) -> None:
        self.schema_dir = schema_dir or default_schema_dir()
        if not self.schema_dir.is_dir():
            raise SerdeError(f"schema directory {self.schema_dir} does not exist")
        self.current: dict[str, LoadedSchema] = {}
        self.by_fingerprint: dict[bytes, LoadedSchema] = {}
        raws = {p: json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.schema_dir.glob("*.avsc"))}
        named: dict[str, Any] = {}
        for raw in raws.values():
            named_types(raw, None, named)
        self.expanded: dict[str, Any] = {}
        for path, raw in raws.items():
            loaded = self._load(path, expand(raw, named))
            self.current[loaded.name] = loaded
            self.by_fingerprint[loaded.fingerprint] = loaded
        for path in sorted((self.schema_dir / "history").glob("*.avsc")):
            loaded = self._load(path, json.loads(path.read_text(encoding="utf-8")))
            self.by_fingerprint.setdefault(loaded.fingerprint, loaded)

    def _load(self, path: Path, raw: dict[str, Any]) -> LoadedSchema:
        parsed = parse_schema(raw, _force=True)
        name = _full_name(raw, None)
        if path.parent == self.schema_dir:
            self.expanded[name] = raw
        return LoadedSchema(name, parsed, canonical_fingerprint(raw), path, raw, millis_fields(raw))

    def for_record(self, model: type[Record]) -> LoadedSchema:
        try:
            return self.current[model.avro_name]
        except KeyError:
            raise SerdeError(f"no schema {model.avro_name} in {self.schema_dir}") from None


class SchemaRegistry:
    """Schema ids of the Confluent wire format, through confluent_kafka.schema_registry's client
    (basic auth, a CA bundle, retries with backoff, and a cache): register (or, with
    auto_register off, look up) a schema under a subject, and fetch a writer's schema by id."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: SecretStr | None = None,
        *,
        ca_file: str | None = None,
        timeout: float = 10.0,
        auto_register: bool = True,
        retries: int = 3,
    ) -> None:
        conf: dict[str, Any] = {
            "url": url,
            "timeout": timeout,
            "max.retries": retries,
            "retries.wait.ms": 200,
            "retries.max.wait.ms": 5000,
        }
        if ca_file:
            conf["ssl.ca.location"] = ca_file  # verification stays on: a CA bundle, never off
        self._conf, self._user, self._password = conf, user, password
        self._client = self._new_client()
        self.auto_register = auto_register
        self._ids: dict[tuple[str, bytes], int] = {}
        self._schemas: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _new_client(self) -> Any:
        # Imported here: the client brings httpx2 and authlib (0.4 s) that a process without a
        # registry never needs.
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf = dict(self._conf)
        if self._user and self._password is not None:
            conf["basic.auth.user.info"] = f"{self._user}:{self._password.get_secret_value()}"
        return SchemaRegistryClient(conf)

    def _call(self, ask: Any) -> Any:
        """ask(client); a 401 after the password file changed (a rotation) is asked again with it."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        from streams.core.secrets import refresh

        try:
            return ask(self._client)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 401 or self._password is None or not refresh(self._password):
                raise
        self._client = self._new_client()
        return ask(self._client)

    def register(self, subject: str, schema: LoadedSchema) -> int:
        """The id of schema under subject (registered first when auto_register is on)."""
        key = (subject, schema.fingerprint)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        wanted = Schema(json.dumps(schema.parsed_raw), "AVRO")
        schema_id: int | None
        try:
            if self.auto_register:
                schema_id = self._call(lambda client: client.register_schema(subject, wanted))
            else:
                schema_id = self._call(lambda client: client.lookup_schema(subject, wanted).schema_id)
        except SchemaRegistryError as exc:
            raise SerdeError(
                f"schema registry refused {subject}: {exc.http_status_code} {exc.error_message}"
            ) from exc
        if schema_id is None:
            raise SerdeError(f"schema registry answered no id for {subject}")
        with self._lock:
            self._ids[key] = int(schema_id)
            self._schemas[int(schema_id)] = schema.parsed
        return int(schema_id)

    def by_id(self, schema_id: int) -> Any:
        """The parsed writer schema of schema_id; SerdeError when the registry does not know it."""
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self._call(lambda client: client.get_schema(schema_id))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SerdeError(f"schema id {schema_id} is unknown to the registry") from exc
            raise  # registry trouble is infrastructure, not data: crash and restart
        if found.schema_type not in (None, "AVRO"):
            raise SerdeError(f"schema id {schema_id} is a {found.schema_type} schema, not Avro")
        parsed = parse_schema(json.loads(found.schema_str or "null"), _force=True)
        with self._lock:
            self._schemas[schema_id] = parsed
        return parsed


def registry_from_settings(settings: Any) -> SchemaRegistry | None:
    """The schema registry settings configure, or None (single-object encoding, no registry)."""
    if not settings.schema_registry_url:
        return None
    return SchemaRegistry(
        settings.schema_registry_url,
        settings.schema_registry_user,
        settings.schema_registry_password,
        ca_file=settings.schema_registry_ca_file,
        timeout=settings.http_timeout_seconds,
        auto_register=settings.schema_registry_auto_register,
        retries=settings.schema_registry_retries,
    )


class AvroSerde:
    """Encodes canonical records to Avro bytes and decodes either framing back to models.

    With a FieldCrypt, the fields a schema marks sensitive are encrypted on the way out and
    decrypted on the way in (streams/core/fieldcrypt.py); a value that cannot be decrypted is a
    SerdeError of class `encryption` (a dead letter with the reason, replayable once the key is
    there).
    """

    def __init__(
        self,
        store: SchemaStore | None = None,
        registry: SchemaRegistry | None = None,
        crypt: FieldCrypt | None = None,
    ) -> None:
        self.store = store or SchemaStore()
        self.registry = registry
        self.crypt = crypt
        if crypt is not None:
            try:
                for name, raw in self.store.expanded.items():
                    crypt.plan(name, raw)
            except FieldCryptError as exc:
                raise SerdeError(f"schemas: {exc}") from None

    def seal(self, model: type[Record], value: dict[str, Any]) -> dict[str, Any]:
        """value (model's fields as to_avro gives them) with its sensitive fields encrypted."""
        if self.crypt is None:
            return value
        schema = self.store.for_record(model)
        try:
            return self.crypt.seal(self.crypt.plan(schema.name, schema.parsed_raw), value)
        except FieldCryptError as exc:
            raise SerdeError(f"cannot encrypt {schema.name}: {exc}", "encryption") from exc

    def open(self, model: type[Record], value: dict[str, Any]) -> dict[str, Any]:
        """value with its sensitive fields decrypted; SerdeError (class encryption) when one cannot be."""
        if self.crypt is None:
            return value
        schema = self.store.for_record(model)
        try:
            return self.crypt.open(self.crypt.plan(schema.name, schema.parsed_raw), value)
        except FieldCryptError as exc:
            raise SerdeError(f"cannot decrypt {exc}", "encryption") from exc

    def encode(self, record: Record, topic: str | None = None) -> bytes:
        """Single-object encoding, or Confluent framing (subject <topic>-value) with a registry."""
        schema = self.store.for_record(type(record))
        buf = io.BytesIO()
        if self.registry is not None:
            subject = f"{topic}-value" if topic else schema.name
            buf.write(CONFLUENT_MAGIC + struct.pack(">I", self.registry.register(subject, schema)))
        else:
            buf.write(SINGLE_OBJECT_MAGIC + schema.fingerprint)
        value = record.to_avro()
        if self.crypt is not None:
            value = self.seal(type(record), value)
        for name in schema.millis:
            moment = value.get(name)
            if isinstance(moment, datetime) and moment.tzinfo is not None:
                value[name] = (moment - _EPOCH) // _MILLISECOND
        try:
            schemaless_writer(buf, schema.parsed, value)
        except (ValueError, TypeError) as exc:
            raise SerdeError(f"cannot encode {schema.name}: {exc}") from exc
        return buf.getvalue()

    def decode_dict(self, data: bytes, model: type[Record]) -> dict[str, Any]:
        """Avro bytes in either framing to a plain dict in model's current schema."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SerdeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        reader = self.store.for_record(model)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise SerdeError("truncated single-object header")
            writer = self.store.by_fingerprint.get(data[2:10])
            if writer is None:
                raise SerdeError(
                    f"unknown schema fingerprint {data[2:10].hex()} (not in {self.store.schema_dir})"
                )
            writer_schema, body = writer.parsed, data[10:]
            if writer.fingerprint == reader.fingerprint:
                writer_schema = None  # same schema: skip resolution, the fast path
        elif data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise SerdeError("truncated Confluent wire-format header")
            if self.registry is None:
                raise SerdeError("Confluent wire format received but no schema registry is configured")
            writer_schema, body = self.registry.by_id(struct.unpack(">I", data[1:5])[0]), data[5:]
        else:
            raise SerdeError(
                f"unknown framing: first bytes {data[:2].hex() or 'empty'} are neither C301 nor 00"
            )
        stream = io.BytesIO(body)
        try:
            if writer_schema is None:
                value = schemaless_reader(stream, reader.parsed, None)
            else:
                value = schemaless_reader(stream, writer_schema, reader.parsed)
        except SchemaResolutionError as exc:
            # A record of another type (or an incompatible version) on this topic.
            raise SerdeError(f"cannot read the writer's schema as {reader.name}: {str(exc)[:200]}") from exc
        except (
            EOFError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
            UnicodeDecodeError,
            OverflowError,
        ) as exc:
            # OverflowError: a timestamp-millis beyond datetime's range (year 9999) in corrupt bytes.
            raise SerdeError(f"cannot decode {reader.name}: {type(exc).__name__}: {exc}") from exc
        if stream.read(1):
            raise SerdeError(f"trailing bytes after {reader.name}")
        if not isinstance(value, Mapping):
            raise SerdeError(f"{reader.name} decoded to {type(value).__name__}, not a record")
        if self.crypt is not None:
            return self.open(model, dict(value))
        return dict(value)

    def decode(self, data: bytes, model: type[R]) -> R:
        """Avro bytes in either framing to a validated model; SerdeError says why not."""
        value = self.decode_dict(data, model)
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise SerdeError(f"invalid {model.__name__}: {_first_errors(exc)}", "validation") from exc


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def all_record_models() -> tuple[type[Record], ...]:
    """Every canonical record type that has a schema."""
    return RECORD_TYPES


def compatibility_problems(writer: Any, reader: Any, samples: int = 200, seed: int = 7) -> list[str]:
    """Why data written with writer cannot be read with reader (empty when it can), by trial.

    Random records of the writer schema are encoded and resolved against the reader schema, so a
    new field without a default, a removed enum symbol or a changed type shows up as a problem.
    """
    import random

    from fastavro.utils import generate_many

    w = parse_schema(writer, _write_hint=False, _force=True)
    r = parse_schema(reader, _write_hint=False, _force=True)
    problems: list[str] = []
    state = random.getstate()
    random.seed(seed)
    try:
        for record in generate_many(w, samples):
            buf = io.BytesIO()
            schemaless_writer(buf, w, record)
            buf.seek(0)
            try:
                schemaless_reader(buf, w, r)
            except Exception as exc:  # noqa: BLE001 - any failure is a compatibility problem to report
                problems.append(f"{type(exc).__name__}: {exc}")
                break
    finally:
        random.setstate(state)
    return problems
