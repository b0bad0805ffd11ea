"""The GoHighLevel example payloads of docs/examples/gohighlevel/, moved to the present
(their times shifted together so they keep their order; ``timestamp``, HighLevel's delivery
time, set to now), and signed as HighLevel signs them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "gohighlevel"
ANCHOR = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)  # after every time in the examples
TIME_KEYS = {"dateAdded", "dateUpdated", "startTime", "endTime", "lastStatusChangeAt"}
#: in the order they would arrive for one lead
ORDER = ["contact-create", "outbound-message", "inbound-message", "appointment-create",
         "appointment-update-cancelled", "appointment-update-showed", "opportunity-status-won"]


def _shift(doc, delta: timedelta):
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in TIME_KEYS and isinstance(v, str):
                t = datetime.fromisoformat(v)
                out[k] = (t + delta).isoformat(timespec="milliseconds")
            else:
                out[k] = _shift(v, delta)
        return out
    if isinstance(doc, list):
        return [_shift(v, delta) for v in doc]
    return doc


def load(name: str, now: datetime | None = None) -> dict:
    """One example, its times moved so that the latest is an hour before ``now``."""
    now = now or datetime.now(UTC)
    doc = orjson.loads((EXAMPLES / f"{name}.json").read_bytes())
    doc = _shift(doc, now - timedelta(hours=1) - ANCHOR)
    doc["timestamp"] = now.isoformat(timespec="milliseconds")
    return doc


def sign_ed25519(private_key, body: bytes) -> dict[str, str]:
    return {"X-GHL-Signature": base64.b64encode(private_key.sign(body)).decode()}


def sign_rsa(private_key, body: bytes) -> dict[str, str]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return {"X-WH-Signature": base64.b64encode(sig).decode()}


def public_pem(private_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
