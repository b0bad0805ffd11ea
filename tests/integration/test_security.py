"""Kafka over TLS with SASL: a broker of its own with a SASL_SSL listener (a throwaway CA
from trustme), a worker and clients configured only through settings, and the password
kept out of the log and the printed settings; HTTP on loopback only."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid

import orjson
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from leadstream.contract.settings import Settings
from leadstream.ops.broker import free_port, start_kafka
from leadstream.simulate import SimConfig, Simulator
from leadstream.streams.topics import apply_topics

from .conftest import HOME, publish, read_topic, recent_start, settings_env

pytestmark = pytest.mark.integration


def _outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.connect(("10.255.255.255", 1))
            ip = u.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@pytest.fixture
def tls_broker(tmp_path):
    """A broker whose SASL_SSL listener checks user ``leadstream`` with a fresh password."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    pem = tmp_path / "server.pem"  # Kafka's PEM key store: a PKCS#8 key, then the chain
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + b"".join(c.bytes() for c in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    password = f"pw-{uuid.uuid4().hex}"
    tls_port = free_port()
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="leadstream" password="{password}" user_leadstream="{password}";')
    broker = start_kafka(HOME, free_port(), tmp_path / "kafka",
                         extra_listeners={"SASL_SSL": (tls_port, "SASL_SSL")},
                         extra_config={
                             "sasl.enabled.mechanisms": "PLAIN",
                             "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
                             "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                             "listener.name.sasl_ssl.ssl.keystore.location": str(pem)})
    yield tls_port, password, tmp_path / "ca.pem"
    broker.stop()


def test_worker_over_sasl_ssl_processes_the_stream_and_never_shows_the_password(
        tls_broker, worker_factory, tmp_path):
    tls_port, password, ca = tls_broker
    s = Settings(kafka_bootstrap=f"127.0.0.1:{tls_port}", security_protocol="SASL_SSL",
                 sasl_mechanism="PLAIN", sasl_username="leadstream", sasl_password=password,
                 ssl_cafile=ca, topic_prefix=f"t{uuid.uuid4().hex[:8]}-", web_port=free_port(),
                 home=HOME, worker_data_dir=tmp_path / "worker")
    asyncio.run(apply_topics(s))
    records = list(Simulator(SimConfig(leads=8, properties=40, days=1, seed=3,
                                       start=recent_start(1))).records())
    asyncio.run(publish(s, [(r.topic, r.key, r.value) for r in records]))
    n = sum(r.topic == "interactions" for r in records)

    w = worker_factory(s)
    w.wait_for(lambda: w.total("leadstream_events_in_total") >= n, what="every event")
    recs = asyncio.run(read_topic(s, "recommendations"))
    assert recs and any(orjson.loads(r.value)["items"] for r in recs)

    # the wrong password is refused: the listener really checks credentials
    wrong = s.model_copy(update={"sasl_password": "not-" + password})
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's auth error types vary
        asyncio.run(asyncio.wait_for(read_topic(wrong, "recommendations", timeout=10), 30))

    # the HTTP endpoints listen on loopback only, unless told otherwise
    if (ip := _outside_address()) is not None:
        with pytest.raises(OSError):
            socket.create_connection((ip, s.web_port), timeout=3).close()

    printed = subprocess.run([sys.executable, "-m", "leadstream", "settings"],
                             env=settings_env(s), capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and "SASL_SSL" in printed.stdout
    assert w.stop() == 0
    for text in (printed.stdout, printed.stderr, w.log.read_text(errors="replace")):
        assert password not in text
