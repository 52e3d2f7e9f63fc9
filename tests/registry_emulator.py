"""A contract emulator of the Confluent Schema Registry REST API: the calls
confluent_kafka.schema_registry makes for Avro, over HTTPS with HTTP basic auth, and a test CA.

Followed documentation:
- Register: "POST /subjects/(string: subject)/versions ... returns the unique identifier of this
  schema ... If the same schema is registered under a different subject, the same identifier will
  be returned"; 409 for an incompatible schema; 422 (error code 42201) for an invalid one.
  https://docs.confluent.io/cloud/current/ccloud/register/ and
  https://docs.confluent.io/platform/current/schema-registry/develop/api.html#post--subjects-(string-%20subject)-versions
- Look up: "POST /subjects/(string: subject) Check if a schema has already been registered under the
  specified subject", answering subject, id, version and schema; 404 with error code 40401
  (subject not found) or 40403 (schema not found).
  https://docs.confluent.io/platform/current/schema-registry/develop/api.html#post--subjects-(string-%20subject)
- Fetch: "GET /schemas/ids/{int: id}" answers {"schema": "..."} (schemaType is left out for AVRO);
  404 with error code 40403 "Schema not found".
  https://docs.confluent.io/platform/current/schema-registry/develop/api.html#get--schemas-ids-int-%20id
- Errors are JSON {"error_code": N, "message": "..."}; 401 when basic auth is missing or wrong.
  https://docs.confluent.io/platform/current/schema-registry/security/index.html
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {"error_code": code, "message": message}, status=status, content_type=CONTENT_TYPE
    )


@dataclass
class RegistryEmulator:
    user: str
    password: str
    first_id: int = 1
    fail_next: int = 0  # answer this many requests 503 first (retries)
    incompatible: bool = False  # answer registrations 409, as for a schema the subject's rules refuse
    by_schema: dict[str, int] = field(default_factory=dict)
    by_id: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_post("/subjects/{subject}", self._lookup)
        app.router.add_get("/schemas/ids/{id}", self._fetch)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, 401, "Unauthorized")
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(503, 50003, "Error while forwarding the request to the primary")
        return await handler(request)

    @staticmethod
    def _canonical(schema: str) -> str:
        return json.dumps(json.loads(schema), sort_keys=True)

    async def _register(self, request: web.Request) -> web.Response:
        if self.incompatible:
            return _error(409, 409, "Schema being registered is incompatible with an earlier schema")
        body = json.loads(await request.read())
        if body.get("schemaType", "AVRO") != "AVRO":
            return _error(422, 42201, "Invalid schema type")
        try:
            canonical = self._canonical(body["schema"])
        except (KeyError, ValueError):
            return _error(422, 42201, "Invalid schema")
        if canonical not in self.by_schema:
            self.by_schema[canonical] = self.first_id + len(self.by_schema)
            self.by_id[self.by_schema[canonical]] = body["schema"]
        schema_id = self.by_schema[canonical]
        versions = self.subjects.setdefault(request.match_info["subject"], [])
        if schema_id not in versions:
            versions.append(schema_id)
        return web.json_response({"id": schema_id}, content_type=CONTENT_TYPE)

    async def _lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        if subject not in self.subjects:
            return _error(404, 40401, "Subject not found")
        body = json.loads(await request.read())
        schema_id = self.by_schema.get(self._canonical(body["schema"]))
        if schema_id is None or schema_id not in self.subjects[subject]:
            return _error(404, 40403, "Schema not found")
        version = self.subjects[subject].index(schema_id) + 1
        return web.json_response(
            {"subject": subject, "id": schema_id, "version": version, "schema": self.by_id[schema_id]},
            content_type=CONTENT_TYPE,
        )

    async def _fetch(self, request: web.Request) -> web.Response:
        schema_id = int(request.match_info["id"])
        if schema_id not in self.by_id:
            return _error(404, 40403, "Schema not found")
        return web.json_response({"schema": self.by_id[schema_id]}, content_type=CONTENT_TYPE)


@dataclass(frozen=True)
class ThrowawayCA:
    """A CA made for one test session and a server certificate for 127.0.0.1 it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(where: Path) -> ThrowawayCA:
    """A throwaway CA and a 127.0.0.1 server certificate (ECDSA P-256, valid one day)."""
    from ops.tls import Authority

    issued = Authority.create("itsm-pipeline test CA", days=1).issue("127.0.0.1", days=1)
    where.mkdir(parents=True, exist_ok=True)
    out = ThrowawayCA(where / "ca.pem", where / "server.pem", where / "server.key")
    out.ca_file.write_bytes(issued.ca_pem)
    out.cert_file.write_bytes(issued.cert_pem)
    out.key_file.write_bytes(issued.key_pem)
    return out
