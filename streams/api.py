"""The worker's HTTP API as a document and a gate: the OpenAPI 3.1 document served at
``/openapi.json`` (:class:`ApiDoc`, one per app: every module that adds a route adds its
operation here), the bearer-token middleware in front of every route but health and
metrics (:func:`bearer_auth`), and JSON errors for what aiohttp answers itself
(:func:`json_errors`).

A module adding routes (``streams/intake.py``'s ``POST /events``, say) declares each one
next to its view, with the JSON Schemas it takes and returns::

    ctx.api.add("/events", "post", {
        "summary": "Events over HTTP",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": ctx.api.schema("interaction.json")}}},
        "responses": {"200": ctx.api.json_response("per line: accepted or why not",
                                                   {"type": "object"})}})

and the middleware covers the route without more code. Open, besides :data:`OPEN_PATHS`,
are only the routes whose operation says it authenticates otherwise (``"x-auth":
"signature"``, as a webhook verifying its sender's signature does, or ``"x-auth":
"none"``): the document and the gate agree by construction (:meth:`ApiDoc.is_open`).

>>> doc = ApiDoc("0")
>>> doc.add("/x/{lead_id}", "get", {"summary": "x", "parameters": [LEAD_ID],
...         "responses": {"200": doc.json_response("ok", doc.schema("lead-score.json"))}})
>>> d = doc.document()
>>> d["openapi"], sorted(d["paths"]["/x/{lead_id}"]["get"]["responses"])
('3.1.0', ['200', '401'])
>>> d["paths"]["/x/{lead_id}"]["get"]["responses"]["200"]["content"]["application/json"]
{'schema': {'$ref': '#/components/schemas/LeadScore'}}
>>> doc.add("/health/live", "get", {"summary": "up", "responses": {"200": {"description": "ok"}}})
>>> doc.document()["paths"]["/health/live"]["get"]["security"]
[]
>>> doc.add("/hook", "post", {"x-auth": "signature", "responses": {}})
>>> doc.is_open("/hook"), doc.is_open("/x/L1"), doc.document()["paths"]["/hook"]["post"]["security"]
(True, False, [])
"""

from __future__ import annotations

import copy
import hmac
import json

from aiohttp import web

#: the routes that answer without a token (container health checks, Prometheus)
OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})

#: the ``lead_id`` path parameter (an event's ``lead_id``: 1-128 characters, no control
#: characters)
LEAD_ID = {"name": "lead_id", "in": "path", "required": True,
           "description": "the lead's id, as in its events' lead_id",
           "schema": {"type": "string", "minLength": 1, "maxLength": 128,
                      "pattern": "^[^\\x00-\\x1f]+$"}}

ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "description": "what went wrong, readable"}},
    "description": "every error answer of the worker"}


class ApiDoc:
    """The OpenAPI document of one worker: paths added by the modules that serve them,
    component schemas taken from the JSON Schemas of ``schemas/``."""

    def __init__(self, version: str):
        self.version = version
        self.paths: dict[str, dict] = {}
        self.components: dict[str, dict] = {"Error": ERROR}
        self.open_paths: set[str] = set(OPEN_PATHS)

    def add(self, path: str, method: str, operation: dict) -> None:
        """Declare ``method path`` (aiohttp's ``{name}`` path syntax is OpenAPI's). An
        operation on a path outside :data:`OPEN_PATHS` gets the bearer security and its
        401 answer, unless it says it authenticates otherwise (``x-auth`` other than
        ``bearer``: the path is then open to the middleware, and must check its callers
        itself; only for paths without parameters)."""
        op = dict(operation)
        responses = dict(op.get("responses", {}))
        if op.get("x-auth", "bearer") != "bearer":
            if "{" in path:
                raise ValueError(f"{path}: only a fixed path can be open")
            self.open_paths.add(path)
        if path in self.open_paths:
            op["security"] = []
        else:
            responses.setdefault("401", self.error("missing or wrong bearer token "
                                                   "(when the worker has one set)"))
        op["responses"] = responses
        self.paths.setdefault(path, {})[method.lower()] = op

    def is_open(self, path: str) -> bool:
        """Whether a request for ``path`` passes the token middleware without a token."""
        return path in self.open_paths

    def schema(self, file_name: str) -> dict:
        """A ``$ref`` to the JSON Schema ``schemas/<file_name>`` (as ``leadstream schemas``
        writes it), its definitions moved into the document's components."""
        from leadstream.contract.events import json_schemas

        sch = copy.deepcopy(json_schemas()[file_name])
        name = sch.get("title") or file_name.removesuffix(".json")
        if name not in self.components:
            for sub, d in sch.pop("$defs", {}).items():
                self.components.setdefault(sub, _rebase(d))
            sch.pop("$schema", None)
            self.components[name] = _rebase(sch)
        return {"$ref": f"#/components/schemas/{name}"}

    @staticmethod
    def json_response(description: str, schema: dict) -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def error(self, description: str) -> dict:
        return self.json_response(description, {"$ref": "#/components/schemas/Error"})

    def document(self) -> dict:
        security = {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "LEADSTREAM_API_TOKEN of the worker; every route but /health/* "
                           "and /metrics needs it when it is set (without one the worker "
                           "listens on 127.0.0.1 only)"}}
        return {
            "openapi": "3.1.0",
            "info": {"title": "leadstream worker", "version": self.version,
                     "description": "Every worker serves every route; a request for a lead "
                                    "is forwarded to the worker holding it."},
            "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
            "security": [{"bearerAuth": []}],
            "paths": {p: self.paths[p] for p in sorted(self.paths)},
            "components": {"schemas": dict(self.components), "securitySchemes": security},
        }


def _rebase(schema: dict) -> dict:
    """``#/$defs/X`` references rewritten to the document's ``#/components/schemas/X``."""
    text = json.dumps(schema).replace('"#/$defs/', '"#/components/schemas/')
    return json.loads(text)


def bearer_auth(token: str, is_open=OPEN_PATHS.__contains__):
    """The aiohttp middleware that answers 401 (JSON) to any request without
    ``Authorization: Bearer <token>`` but those for a path ``is_open`` accepts
    (:meth:`ApiDoc.is_open` in the worker); it runs in front of every route, whoever
    added it, and before aiohttp's own 404 / 405."""
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler):
        if is_open(request.path):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected):
            return web.json_response(
                {"error": "this route needs Authorization: Bearer <LEADSTREAM_API_TOKEN>"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="leadstream"'})
        return await handler(request)

    return check_token


@web.middleware
async def json_errors(request: web.Request, handler):
    """aiohttp's own answers (no such route, method not allowed) as JSON errors like the
    views' own."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return web.json_response({"error": err.reason.lower() if err.reason else "error"},
                                 status=err.status, headers={
                                     k: v for k, v in err.headers.items()
                                     if k.lower() == "allow"})
