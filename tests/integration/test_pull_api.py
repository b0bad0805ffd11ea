"""The pull API over HTTP against real workers on the embedded broker: the list and score
served are the last ones sent to ``recommendations`` and ``lead-scores`` (byte for byte,
from the worker holding the lead or forwarded to it, and after a restart), a fresh list
is published, the bearer token guards everything but health and metrics, and a
property-based run of schemathesis over ``/openapi.json`` checks status codes, content
types and response schemas of every documented operation."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

# schemathesis at import time: imported inside a test, pytest's assertion rewriting of its
# modules once hit CPython 3.11.7's "AST constructor recursion depth mismatch" SystemError
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from leadstream.contract.events import make_event
from leadstream.contract.settings import Settings
from leadstream.ops.broker import free_port
from leadstream.streams.step import partition_for
from leadstream.streams.topics import apply_topics
from tests.integration.conftest import HOME, Worker, publish, read_topic

pytestmark = pytest.mark.integration

TOKEN = "t0ken-" + uuid.uuid4().hex
LEADS = ("PA1", "PA2", "PA3", "PA4")


def call(url: str, path: str, token: str | None = TOKEN) -> tuple[int, bytes, str]:
    """(status, body, content type) of ``GET url+path`` with the bearer token (None:
    without the header)."""
    req = urllib.request.Request(url + path)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read(), r.headers.get_content_type()
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get_content_type()


def _listings():
    rows = [(f"AP{i}", 300_000 + 15_000 * i, ("condo", "house")[i % 2],
             ("Austin", "Denver")[i % 3 == 0], 1 + i % 4) for i in range(12)]
    return [(p.encode(), orjson.dumps({
        "property_id": p, "status": "active", "price": price, "bedrooms": beds,
        "bathrooms": 2, "property_type": t, "city": c})) for p, price, t, c, beds in rows]


def _events(lead: str, start: datetime, n: int = 8):
    out = []
    for i in range(n):
        ts = start + timedelta(seconds=20 * i)
        if i == 0:
            ev = make_event("session_started", event_id=f"{lead}-{i}", lead_id=lead,
                            session_id="s1", timestamp=ts)
        elif i % 3 == 0:
            ev = make_event("property_saved", event_id=f"{lead}-{i}", lead_id=lead,
                            session_id="s1", timestamp=ts, property_id=f"AP{i}")
        else:
            ev = make_event("property_viewed", event_id=f"{lead}-{i}", lead_id=lead,
                            session_id="s1", timestamp=ts, property_id=f"AP{i}",
                            payload={"duration_seconds": 30 + i})
        out.append(("interactions", lead.encode(), orjson.dumps(ev.model_dump(mode="json"))))
    return out


def _last_by_lead(msgs) -> dict[bytes, bytes]:
    """The last value per key (a key's records are in one partition, in order)."""
    out = {}
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        out[m.key] = m.value
    return out


@pytest.fixture(scope="module")
def api(kafka, tmp_path_factory):
    """Two workers with a token on one topic prefix, the catalog and four leads' events
    processed. Yields a dict: settings, workers (list, the first two), url of each."""
    tmp = tmp_path_factory.mktemp("pull-api")
    base = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}-",
                    home=HOME, api_token=SecretStr(TOKEN), web_port=free_port(),
                    worker_data_dir=tmp / "w0")
    asyncio.run(apply_topics(base))
    second = base.model_copy(update={"web_port": free_port(), "worker_data_dir": tmp / "w1"})
    workers = [Worker(base, tmp / "worker0.log")]
    workers[0].wait_ready(90)
    asyncio.run(publish(base, [("properties", k, v) for k, v in _listings()]))
    workers[0].wait_for(lambda: workers[0].total("leadstream_catalog_listings",
                                                 status="active") == 12, what="catalog")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    records = [r for lead in LEADS for r in _events(lead, start)]
    asyncio.run(publish(base, records))
    workers[0].wait_for(lambda: workers[0].total("leadstream_events_processed_total")
                        == len(records), what="every event processed")
    workers.append(Worker(second, tmp / "worker1.log"))
    state = {"settings": base, "workers": workers, "tmp": tmp}
    try:
        yield state
    finally:
        for w in state["workers"]:
            w.stop()


def _both_ready(api) -> list[Worker]:
    """Both workers ready and the partitions split between them."""
    ws = api["workers"]
    for w in ws:
        w.wait_ready(120)

    def split():
        held = [set(orjson.loads(w.get("/health/ready")[1])["partitions"]) for w in ws]
        return all(held) and not (held[0] & held[1]) and len(held[0] | held[1]) == 4

    ws[0].wait_for(split, timeout=120, what="partitions split between two workers")
    return ws


def test_the_list_and_score_served_are_the_last_ones_sent(api):
    s = api["settings"]
    ws = _both_ready(api)
    recs = _last_by_lead(asyncio.run(read_topic(s, "recommendations")))
    scores = _last_by_lead(asyncio.run(read_topic(s, "lead-scores")))
    assert set(recs) == set(scores) == {lead.encode() for lead in LEADS}
    holders = {}
    for lead in LEADS:
        for w in ws:  # one worker holds the lead, the other forwards the request
            status, body, ctype = call(w.url, f"/leads/{lead}/recommendations")
            assert status == 200 and ctype == "application/json", (lead, w.url, body)
            assert orjson.loads(body) == orjson.loads(recs[lead.encode()])
            assert orjson.loads(body)["recommendation_id"]
            status, body, _ = call(w.url, f"/leads/{lead}/score")
            assert status == 200 and orjson.loads(body) == orjson.loads(scores[lead.encode()])
        ready = [orjson.loads(w.get("/health/ready")[1])["partitions"] for w in ws]
        holders[lead] = [i for i, parts in enumerate(ready)
                         if partition_for(lead.encode(), 4) in parts]
    # the byte-for-byte copy from the worker holding the lead
    for lead in LEADS:
        (i,) = holders[lead]
        assert call(ws[i].url, f"/leads/{lead}/recommendations")[1] == recs[lead.encode()]
        assert call(ws[i].url, f"/leads/{lead}/score")[1] == scores[lead.encode()]

    # unknown lead: 404 with a JSON error, on either worker
    for w in ws:
        status, body, ctype = call(w.url, "/leads/NOBODY-here/recommendations")
        assert status == 404 and ctype == "application/json"
        assert "unknown lead" in orjson.loads(body)["error"]
        assert call(w.url, "/leads/NOBODY-here/score")[0] == 404
        assert call(w.url, "/leads/PA1/recommendations?fresh=maybe")[0] == 400


def test_a_fresh_list_is_published_and_served_as_the_last_one(api):
    s = api["settings"]
    ws = _both_ready(api)
    before = orjson.loads(call(ws[0].url, "/leads/PA2/recommendations")[1])
    status, body, _ = call(ws[1].url, "/leads/PA2/recommendations?fresh=true")
    assert status == 200, body
    fresh = orjson.loads(body)
    assert fresh["trigger"] == "requested"
    assert fresh["recommendation_id"] != before["recommendation_id"]
    for w in ws:
        assert orjson.loads(call(w.url, "/leads/PA2/recommendations")[1]) == fresh
    sent = _last_by_lead(asyncio.run(read_topic(s, "recommendations")))
    assert orjson.loads(sent[b"PA2"]) == fresh
    assert call(ws[0].url, "/leads/NOBODY-here/recommendations?fresh=true")[0] == 404


def test_the_token_guards_everything_but_health_and_metrics(api):
    ws = _both_ready(api)
    w = ws[0]
    for path in ("/leads/PA1/recommendations", "/leads/PA1/score", "/leads/PA1",
                 "/leads/PA1/features", "/openapi.json", "/models", "/agents",
                 "/no/such/route", "/router/", "/"):
        for token in (None, "wrong", TOKEN + "x", ""):
            status, body, ctype = call(w.url, path, token)
            assert status == 401 and ctype == "application/json", (path, token, status)
            assert "Bearer" in orjson.loads(body)["error"]
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert call(w.url, path, None)[0] == 200, path
    assert call(w.url, "/no/such/route")[0] == 404  # with the token: JSON 404
    doc = orjson.loads(call(w.url, "/openapi.json")[1])
    assert doc["openapi"].startswith("3.1")
    for path in ("/health/live", "/health/ready", "/metrics", "/leads/{lead_id}",
                 "/leads/{lead_id}/recommendations", "/leads/{lead_id}/score",
                 "/leads/{lead_id}/features", "/openapi.json", "/models", "/agents"):
        assert "get" in doc["paths"][path], path


def test_schemathesis_over_the_openapi_document(api):
    """Property-based: every documented operation with generated parameters (unknown
    leads, and the leads the workers hold), checked for status codes, content types and
    response schemas (the recommendation and lead-score schemas of schemas/)."""

    ws = _both_ready(api)
    url = ws[0].url
    headers = {"Authorization": f"Bearer {TOKEN}"}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=headers)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    ran: dict[str, int] = {}

    def examples(op, strategy, n: int):
        @given(case=strategy)
        @hypothesis_settings(max_examples=n, deadline=None, phases=[Phase.explicit, Phase.generate],
                  database=None, suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=url, headers=headers, checks=checks, timeout=15)
            ran[op.label] = ran.get(op.label, 0) + 1

        run()

    for result in schema.get_all_operations():
        op = result.ok()
        examples(op, op.as_strategy(), 15)
        if "{lead_id}" in op.path:  # and leads that exist
            for lead in LEADS[:2]:
                examples(op, op.as_strategy(path_parameters={"lead_id": lead}), 4)
    paths = orjson.loads(call(url, "/openapi.json")[1])["paths"]
    documented = {f"{m.upper()} {p}" for p, item in paths.items() for m in item}
    documented.discard("GET /openapi.json")  # schemathesis skips the document it loaded
    assert set(ran) == documented and len(documented) >= 9, sorted(documented - set(ran))


def test_a_restarted_worker_serves_the_same_last_list(api):
    """The last list and score live in the lead's stored record: after both workers
    stop, a new one reads them back from the changelog."""
    s = api["settings"]
    ws = _both_ready(api)
    want = {lead: (call(ws[0].url, f"/leads/{lead}/recommendations")[1],
                   call(ws[0].url, f"/leads/{lead}/score")[1]) for lead in LEADS}
    for w in ws:
        w.stop()
    again = Worker(s.model_copy(update={"worker_data_dir": api["tmp"] / "w2"}),
                   api["tmp"] / "worker2.log")
    api["workers"] = [again]
    again.wait_ready(120)
    for lead in LEADS:
        got = (call(again.url, f"/leads/{lead}/recommendations")[1],
               call(again.url, f"/leads/{lead}/score")[1])
        assert [orjson.loads(x) for x in got] == [orjson.loads(x) for x in want[lead]]


def _listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (IPv4, from /proc/net/tcp)."""
    out = set()
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":  # LISTEN
                out.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def test_without_a_token_a_worker_asked_for_every_interface_binds_loopback(
        settings, worker_factory):
    s = settings.model_copy(update={"web_bind": "0.0.0.0"})
    w = worker_factory(s)
    assert _listening(s.web_port) == {"127.0.0.1"}
    assert "binds 127.0.0.1 only, not 0.0.0.0" in w.log.read_text()
    assert call(w.url, "/leads/NOBODY/score", token=None)[0] == 404  # no token asked
