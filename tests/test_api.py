"""The HTTP API's pure parts: the OpenAPI document's schemas are those of ``schemas/``, the
bearer-token middleware over a real aiohttp server on loopback, and the loopback binding
of a worker without a token."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from leadstream.contract.settings import Settings
from leadstream.streams.api import OPEN_PATHS, ApiDoc, bearer_auth, json_errors

REPO = Path(__file__).resolve().parents[1]


def test_response_schemas_are_the_schemas_of_the_repository():
    doc = ApiDoc("1")
    for name, title in (("recommendation.json", "Recommendation"),
                        ("lead-score.json", "LeadScore")):
        ref = doc.schema(name)
        assert ref == {"$ref": f"#/components/schemas/{title}"}
        on_disk = json.loads((REPO / "schemas" / name).read_text())
        defs = on_disk.pop("$defs", {})
        on_disk.pop("$schema")
        rebased = json.loads(json.dumps(on_disk).replace('"#/$defs/', '"#/components/schemas/'))
        comps = doc.document()["components"]["schemas"]
        assert comps[title] == rebased
        for sub, d in defs.items():
            assert comps[sub] == d
    assert "$defs" not in json.dumps(doc.document())  # every reference resolves in the doc


def test_every_protected_operation_documents_the_token_and_open_ones_do_not():
    doc = ApiDoc("1")
    for path in ("/leads/{lead_id}/score", *OPEN_PATHS):
        doc.add(path, "get", {"responses": {"200": {"description": "ok"}}})
    d = doc.document()
    assert d["security"] == [{"bearerAuth": []}]
    assert d["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "401" in d["paths"]["/leads/{lead_id}/score"]["get"]["responses"]
    for path in OPEN_PATHS:
        op = d["paths"][path]["get"]
        assert op["security"] == [] and "401" not in op["responses"]


async def _client(middlewares) -> TestClient:
    app = web.Application(middlewares=middlewares)

    async def ok(request):
        return web.json_response({"ok": request.path})

    for path in ("/health/live", "/health/ready", "/metrics", "/leads/{lead_id}/score",
                 "/added/later"):
        app.router.add_get(path, ok)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_the_token_middleware_guards_every_route_but_health_and_metrics():
    client = await _client([json_errors, bearer_auth("s3cret")])
    try:
        for path in ("/leads/L1/score", "/added/later", "/nope", "/metrics/../leads/L1/score"):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "s3cret"}, {"Authorization": "Basic s3cret"},
                            {"Authorization": "Bearer s3cret2"}):
                r = await client.get(path, headers=headers)
                assert r.status == 401, (path, headers)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "Bearer" in (await r.json())["error"]
        good = {"Authorization": "Bearer s3cret"}
        r = await client.get("/leads/L1/score", headers=good)
        assert r.status == 200 and (await r.json()) == {"ok": "/leads/L1/score"}
        r = await client.get("/added/later", headers={"authorization": "bearer  s3cret"})
        assert r.status == 200
        for path in OPEN_PATHS:
            assert (await client.get(path)).status == 200, path
        r = await client.get("/nope", headers=good)  # aiohttp's own 404, as JSON
        assert r.status == 404 and "error" in await r.json()
        r = await client.post("/leads/L1/score", headers=good)
        assert r.status == 405 and "error" in await r.json() and "GET" in r.headers["Allow"]
    finally:
        await client.close()


async def test_a_route_declared_with_its_own_authentication_is_open_to_the_middleware():
    """A webhook checks its sender's signature (``x-auth: signature`` in its operation, as
    streams/intake.py declares POST /webhooks/gohighlevel): the gate lets it through,
    every other route added later still needs the token."""
    doc = ApiDoc("1")
    doc.add("/added/later", "get", {"responses": {}, "x-auth": "signature"})
    doc.add("/leads/{lead_id}/score", "get", {"responses": {}})
    client = await _client([json_errors, bearer_auth("s3cret", doc.is_open)])
    try:
        assert (await client.get("/added/later")).status == 200
        assert (await client.get("/leads/L1/score")).status == 401
        for path in OPEN_PATHS:
            assert (await client.get(path)).status == 200, path
    finally:
        await client.close()
    ops = doc.document()["paths"]
    assert ops["/added/later"]["get"]["security"] == [] and "401" not in ops[
        "/added/later"]["get"]["responses"]
    with pytest.raises(ValueError, match="fixed path"):
        doc.add("/hooks/{name}", "post", {"responses": {}, "x-auth": "none"})


def test_without_a_token_the_worker_binds_loopback_only_and_says_so(caplog):
    from leadstream.streams.app import create_app

    caplog.set_level(logging.WARNING, logger="leadstream.worker")
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", web_bind="0.0.0.0",
                              web_host="worker-1"))
    assert app.conf.web_bind == "127.0.0.1"
    assert "binds 127.0.0.1 only, not 0.0.0.0" in caplog.text
    assert not app.web.web_app.middlewares or all(
        m.__name__ != "check_token" for m in app.web.web_app.middlewares)
    caplog.clear()
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", web_bind="0.0.0.0",
                              api_token="t"))
    assert app.conf.web_bind == "0.0.0.0" and not caplog.text
    assert [m.__name__ for m in app.web.web_app.middlewares] == ["json_errors", "check_token"]
    assert Settings(web_host="127.0.0.1").web_bind_address() == "127.0.0.1"
    assert not Settings(web_bind="::1").web_bind_refused()


@pytest.mark.parametrize("host", ["10.0.0.5", "worker-1", "0.0.0.0", "::"])
def test_a_non_loopback_host_without_a_token_is_refused(host):
    assert Settings(web_bind=host).web_bind_refused()
    assert Settings(web_bind=host).web_bind_address() == "127.0.0.1"
    assert Settings(web_bind=host, api_token="t").web_bind_address() == host



def test_the_token_is_a_secret():
    shown = Settings(api_token="s3cret-value").printable()
    assert shown["api_token"] == "**********" and "s3cret-value" not in json.dumps(shown)


def test_the_schemathesis_checks_of_the_api_test_catch_a_response_off_its_schema():
    """The property-based API test (tests/integration/test_pull_api.py) is not vacuous:
    the same checks fail on a score whose body breaks the lead-score schema."""
    import http.server
    import threading

    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.openapi.checks import JsonSchemaError
    from schemathesis.specs.openapi.checks import response_schema_conformance

    from leadstream.streams.api import LEAD_ID

    doc = ApiDoc("1")
    doc.add("/leads/{lead_id}/score", "get", {"parameters": [LEAD_ID], "responses": {
        "200": doc.json_response("the score", doc.schema("lead-score.json"))}})
    body = {"/openapi.json": json.dumps(doc.document()).encode()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.get(self.path, b'{"lead_id": "x", "score": "high"}'))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        op = next(r.ok() for r in schema.get_all_operations())

        @given(case=op.as_strategy())
        @settings(max_examples=1, deadline=None, phases=[Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=url, checks=[response_schema_conformance])

        with pytest.raises(BaseException) as excinfo:  # a FailureGroup
            run()

        def flat(err):
            inner = getattr(err, "exceptions", None)
            return [x for e in inner for x in flat(e)] if inner else [err]

        found = flat(excinfo.value)
        assert any(isinstance(e, JsonSchemaError) for e in found), [type(e) for e in found]
    finally:
        server.shutdown()
        server.server_close()
