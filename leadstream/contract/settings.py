"""One typed settings object for every leadstream process.

Values come, in order of precedence, from keyword arguments, environment variables
prefixed ``LEADSTREAM_`` (``LEADSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092``), an optional
file named by ``LEADSTREAM_CONFIG`` (TOML, keys as below without the prefix), and the
defaults written here. Nothing reads ``os.environ`` at import time: build a
:class:`Settings` and pass it on.

>>> s = Settings(kafka_bootstrap="127.0.0.1:9092", topic_prefix="t1-")
>>> s.topic("interactions")
't1-interactions'
>>> s.kafka_bootstrap
'127.0.0.1:9092'
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# HighLevel's published webhook keys (marketplace.gohighlevel.com/docs/webhook/
# WebhookIntegrationGuide): Ed25519 for X-GHL-Signature, RSA for the legacy X-WH-Signature
GHL_ED25519_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
"""
GHL_RSA_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
"""


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leadstream"


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by ``LEADSTREAM_CONFIG`` (if set)."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls)
        path = os.environ.get("LEADSTREAM_CONFIG")
        self._data: dict[str, Any] = {}
        if path:
            with open(path, "rb") as fh:
                self._data = tomllib.load(fh)

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by pydantic here
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items()
                if k in self.settings_cls.model_fields or k.startswith(_ADDED_WEIGHT)}


_ADDED_WEIGHT = "hybrid_w_"  # the prefix of every hybrid weight setting


class _AddedWeightsSource(PydanticBaseSettingsSource):
    """``LEADSTREAM_HYBRID_W_<NAME>`` variables of hybrid components that have no field
    of their own (see ``Settings.hybrid_weights_added``)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by pydantic here
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = "LEADSTREAM_" + _ADDED_WEIGHT.upper()
        return {k[len("LEADSTREAM_"):].lower(): v for k, v in os.environ.items()
                if k.upper().startswith(prefix)
                and k[len("LEADSTREAM_"):].lower() not in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Every knob of a leadstream process. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(env_prefix="LEADSTREAM_", frozen=True, extra="ignore")

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset = start the embedded broker"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    topic_prefix: str = Field("", description="prepended to every topic name in topics.yaml")
    app_id: str = Field("leadstream", description="consumer group and state namespace")
    topics_file: Path | None = Field(None, description="topics.yaml (default: the bundled one)")

    # --- embedded broker ------------------------------------------------------------
    broker_port: int = 9092
    broker_kind: Literal["auto", "kafka", "tansu"] = "auto"
    home: Path = Field(default_factory=_default_home, description="jar cache and broker data")

    # --- worker -----------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="the worker's address as other workers and "
                          "clients reach it (requests for a lead are routed there)")
    web_bind: str | None = Field(None, description="interface the HTTP server binds "
                                 "(default: web_host; 0.0.0.0 in containers)")
    web_port: int = 6066
    api_token: SecretStr | None = Field(
        None, description="bearer token every HTTP route but /health/* and /metrics asks "
        "for (Authorization: Bearer <token>); unset: no token asked, and the web server "
        "binds 127.0.0.1 only whatever web_bind / web_host say")
    worker_data_dir: Path | None = None
    kafka_session_timeout_seconds: float = Field(
        30.0, description="a worker silent this long (crashed) loses its partitions to the others")
    commit_interval_seconds: float = Field(
        2.8, gt=0, description="how often the worker commits its input offsets, and at least "
        "as often (at most every second) the lead table's changelog transactions: what a "
        "crash replays")
    producer_linger_ms: float = Field(
        0.0, description="how long the worker's producer waits to fill a batch: fewer, larger "
        "requests (less CPU per event under load) for that much more latency")
    batch_max_events: int = Field(
        500, ge=1, description="the worker takes what one fetch brought, up to this many "
        "records per step (all the input partitions it holds together); a record never waits "
        "for more to arrive")
    fetch_max_wait_ms: int = Field(
        20, ge=1, le=1500, description="how long the broker may hold a fetch of the worker's "
        "consumer for fetch_min_bytes to arrive (Faust fixes 1,500 ms; a fetch sent while "
        "records of other partitions wait unconsumed holds those partitions' new records "
        "back that long)")
    fetch_min_bytes: int = Field(
        8192, ge=1, description="what a fetch of the worker's consumer waits for, up to "
        "fetch_max_wait_ms: fewer, larger fetches under load (each costs the consumer a "
        "round of its own), at most that wait more latency on a quiet input")
    catalog_wait_ms: float = Field(
        2000.0, ge=0, description="an event on a listing the worker does not know yet waits "
        "at most this long for the worker's catalog reader to reach the end of the properties "
        "topic (a listing published just before its first interactions)")
    lead_cache_size: int = Field(
        10_000, ge=0, description="recently active leads kept decoded in memory, about 13 KB "
        "each for a lead with two weeks of history (their stored records are kept whatever "
        "this is)")

    # --- ingest rules -------------------------------------------------------------------
    max_event_bytes: int = Field(65_536, description="bigger payloads are dead-lettered")
    max_future_skew_seconds: float = Field(
        3600.0, description="events stamped further ahead of the wall clock are dead-lettered"
    )
    max_event_age_days: float = Field(
        365.0, description="live ingestion dead-letters events older than this"
    )
    dedup_ttl_seconds: float = Field(
        86_400.0, description="a repeated event_id within this event-time span is dropped"
    )
    dedup_max_ids: int = Field(
        512, ge=1, le=65_535,
        description="event ids remembered per lead (bound; 12 bytes each, the latest in event "
        "time within the TTL)",
    )
    allowed_lateness_seconds: float = Field(
        6 * 3600.0,
        description="events further behind their lead's latest event time are dead-lettered "
        "(reason late_event); within it they are applied exactly as if in order",
    )
    session_gap_seconds: float = Field(
        1800.0, description="a session id silent for longer than this starts a new session"
    )

    score_min_change: float = Field(
        5.0, description="publish a lead score when it moved this many points (or its tier "
        "changed, or on a CRM event)")
    score_min_interval_seconds: float = Field(
        60.0, description="at most one score-change publication per lead per this much "
        "event time")
    score_refresh_seconds: float = Field(
        300.0, description="without a strong signal or CRM event, a lead's score is computed "
        "again once it is this much event time old (a strong signal, a CRM event and a "
        "lead's first event compute it at once)")

    drift_min_positives: int = Field(
        5, description="preference-drift alerts only for leads with this many positive events")
    drift_price_change: float = Field(
        0.25, description="a move of the price level by this share is a drift (0.25 = 25 %)")
    agent_insights_interval_seconds: float = Field(
        60.0, description="publish every agent's insights this often")

    # --- HTTP intake (streams/intake.py) ------------------------------------------------
    http_max_body_bytes: int = Field(
        1_048_576, ge=1, description="POST /events and webhook bodies larger than this are "
        "refused with 413 (each event is still held to max_event_bytes)")
    http_ack_timeout_seconds: float = Field(
        30.0, gt=0, description="how long an intake request waits for the broker to "
        "acknowledge its records before answering 503 (/events) or 429 (webhooks): retry, "
        "event ids make a repeat harmless")
    ghl_webhook_public_key: str = Field(
        GHL_ED25519_PUBLIC_KEY, description="PEM (or its base64 body) of the Ed25519 key "
        "that verifies GoHighLevel's X-GHL-Signature; default: the key HighLevel publishes in "
        "its Webhook Integration Guide")
    ghl_webhook_legacy_public_key: str = Field(
        GHL_RSA_PUBLIC_KEY, description="PEM of the RSA key that verifies the legacy "
        "X-WH-Signature (RSA-SHA256); default: the key HighLevel publishes")
    ghl_accept_legacy_signature: bool = Field(
        True, description="accept a webhook signed only with the legacy X-WH-Signature "
        "(HighLevel deprecated it on 2026-07-01 in favour of X-GHL-Signature)")
    ghl_webhook_max_age_seconds: float = Field(
        7200.0, ge=0, description="a webhook whose own timestamp is older than this is "
        "refused as a replay (0: no check); within it a repeat is dropped by event-id "
        "de-duplication. HighLevel retries a 429 for about 70 minutes")
    ghl_property_id_pattern: str = Field(
        r"\[(?P<property_id>[^\]\s]{1,128})\]", description="regular expression with a "
        "group property_id that finds the listing an appointment is for in its title, then "
        "its notes (default: an id in square brackets, 'Viewing [P17]')")
    ghl_unassigned_agent_id: str = Field(
        "ghl-unassigned", min_length=1, max_length=128, description="agent_id of CRM events "
        "whose opportunity or contact has no assigned user")

    # --- models ---------------------------------------------------------------------------
    model_seed: int = Field(42, description="seed of every model (same seed, same output)")
    model_refit_every: int = Field(
        2000, ge=1, description="positive events between refits of the EASE item model (its "
        "inverse runs in a thread, off the event loop; leadstream_model_refit_seconds)")
    # one field per hybrid component of models/registry.py, named hybrid_ + its weight name,
    # with its default weight (tests/test_registry.py checks they agree)
    hybrid_w_popularity: float = Field(0.5, description="hybrid weight scale: popularity")
    hybrid_w_content: float = Field(2.0, description="hybrid weight scale: content")
    hybrid_w_itemitem: float = Field(1.0, description="hybrid weight scale: item-to-item")
    hybrid_w_mf: float = Field(0.7, description="hybrid weight scale: matrix factorisation")
    hybrid_w_ease: float = Field(1.0, description="hybrid weight scale: EASE item weights")
    hybrid_weights_added: dict[str, float] = Field(
        default_factory=dict, description="weight scales of hybrid components without a "
        "field above (added to models/registry.py since), by weight name: "
        "LEADSTREAM_HYBRID_W_<NAME> (or hybrid_w_<name> in the file, or as a keyword) sets "
        "w_<name>; a component not named keeps its default weight")
    experiments_file: Path | None = Field(
        None, description="YAML declaring A/B experiments (models/experiments.py); the first "
        "active one applies")
    model_dir: Path | None = Field(
        None, description="model snapshots (default: HOME/models/APP_ID-WEB_PORT)")
    snapshot_interval_seconds: float = Field(
        300.0, description="snapshot the models this often (and on shutdown)")
    quality_sample_every: int = Field(
        20, description="measure every model's online HR@10 on every n-th positive event, "
        "at most once per batch (each measurement ranks the catalog with every model)")
    quality_min_interval_seconds: float = Field(
        0.25, ge=0, description="and at most once per this much event time (at 1,000 events/s "
        "of live traffic in small batches, 4 measurements a second instead of about 37)")

    # --- lead state -------------------------------------------------------------------
    lead_ttl_seconds: float = Field(
        30 * 86_400.0, description="a lead with no event for this long (wall clock) is forgotten"
    )
    normalizer_sample_every: int = Field(
        10, description="feed every n-th lead feature vector to the online scalers"
    )
    lead_sweep_interval_seconds: float = Field(
        60.0, description="how often a worker looks for idle leads to forget"
    )
    gc_full_interval_seconds: float = Field(
        60.0, ge=0, description="the worker runs Python's full (generation 2) garbage "
        "collection this often, and never in between: CPython would start one whenever a "
        "quarter more objects survive, a pause of 100-200 ms over a worker's decoded leads "
        "every few seconds under load (ops/gcpolicy.py); 0: CPython's own schedule")
    changelog_transactions: bool = Field(
        True, description="write each lead-table changelog partition with a transactional "
        "producer of its own, so a worker frozen past its session timeout cannot leave a "
        "stale lead behind (streams/changelog.py); off only for brokers without "
        "transactions (the Tansu fallback)")
    fault_drop_one_in: int = Field(
        0, ge=0, description="tests only: the worker's fetch loses, once, every n-th "
        "interactions record, which the offset-order guard must notice and read again"
    )

    # --- recommendations --------------------------------------------------------------
    top_k: int = 10
    recommend_min_interval_seconds: float = Field(
        5.0, description="at most one recommendation per lead per this much event time"
    )
    recommend_every_n_events: int = Field(
        5, description="after this many events since the last list, recompute it and publish "
        "if it changed materially"
    )
    recommend_min_change: float = Field(
        0.3, description="material change: a new top item, or this share of the list new"
    )

    @model_validator(mode="before")
    @classmethod
    def _added_weights(cls, data: Any) -> Any:
        """``hybrid_w_<name>`` without a field of its own: into ``hybrid_weights_added``."""
        if not isinstance(data, dict):
            return data
        added = [k for k in data if k.startswith(_ADDED_WEIGHT) and k not in cls.model_fields]
        if not added:
            return data
        data = dict(data)
        extra = dict(data.get("hybrid_weights_added") or {})
        for k in added:
            extra.setdefault(k[len("hybrid_"):], data.pop(k))
        data["hybrid_weights_added"] = extra
        return data

    @field_validator("ghl_webhook_public_key", "ghl_webhook_legacy_public_key")
    @classmethod
    def _public_key(cls, value: str, info):
        if not value and info.field_name == "ghl_webhook_legacy_public_key":
            return value  # no legacy key: X-WH-Signature is refused
        try:
            key = load_public_key(value)
        except Exception:  # noqa: BLE001 - cryptography raises several kinds
            raise ValueError("not a PEM public key (nor the base64 body of one)") from None
        want = "Ed25519PublicKey" if info.field_name == "ghl_webhook_public_key" else \
            "RSAPublicKey"
        if not any(c.__name__ == want for c in type(key).__mro__):
            raise ValueError(f"not an {want[:-9]} public key")
        return value

    @field_validator("ghl_property_id_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        import re

        try:
            rx = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from None
        if "property_id" not in rx.groupindex:
            raise ValueError("needs a group named property_id, e.g. \\[(?P<property_id>[^\\]]+)\\]")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls,
        init_settings,
        env_settings,
        dotenv_settings,
        file_secret_settings,
    ):
        return (init_settings, env_settings, _AddedWeightsSource(settings_cls),
                _TomlFileSource(settings_cls), file_secret_settings)

    def hybrid_weights(self) -> dict[str, float]:
        """The ModelSuite weight parameters (``leadstream evaluate --tune`` suggests them):
        every ``hybrid_w_<name>`` field as ``w_<name>``, then ``hybrid_weights_added``.

        >>> w = Settings(hybrid_w_mf=2.0, hybrid_w_recency=0.3).hybrid_weights()
        >>> w["w_mf"], w["w_recency"], list(w)[:2]
        (2.0, 0.3, ['w_popularity', 'w_content'])
        """
        return {**{name[len("hybrid_"):]: getattr(self, name) for name in type(self).model_fields
                   if name.startswith(_ADDED_WEIGHT)}, **self.hybrid_weights_added}

    def web_bind_address(self) -> str:
        """The interface the worker's web server binds: ``web_bind`` (default
        ``web_host``), but loopback (127.0.0.1) when no ``api_token`` is set and another
        interface was asked for (see :meth:`web_bind_refused`).

        >>> Settings(web_bind="0.0.0.0").web_bind_address()
        '127.0.0.1'
        >>> Settings(web_bind="0.0.0.0", api_token="s3cret").web_bind_address()
        '0.0.0.0'
        >>> Settings(web_host="localhost").web_bind_address()
        'localhost'
        """
        asked = self.web_bind or self.web_host
        return "127.0.0.1" if self.web_bind_refused() else asked

    def web_bind_refused(self) -> bool:
        """True when a non-loopback interface was asked for without an ``api_token``."""
        if self.api_token is not None:
            return False
        asked = self.web_bind or self.web_host
        return not (asked == "localhost" or asked == "::1" or asked.startswith("127."))

    def web_url(self) -> str:
        """Where a client on this host reaches the worker's HTTP API (``web_host``, or
        127.0.0.1 when the worker binds loopback only for want of a token)."""
        host = "127.0.0.1" if self.web_bind_refused() else self.web_host
        return f"http://{host}:{self.web_port}"

    def api_headers(self) -> dict[str, str]:
        """The ``Authorization`` header a client sends (none without an ``api_token``).

        >>> Settings(api_token="s3cret").api_headers()
        {'Authorization': 'Bearer s3cret'}
        """
        if self.api_token is None:
            return {}
        return {"Authorization": f"Bearer {self.api_token.get_secret_value()}"}

    def snapshot_dir(self) -> Path:
        """Where this worker keeps its model snapshots."""
        name = f"{self.topic_prefix}{self.app_id}-{self.web_port}"
        return self.model_dir or self.home / "models" / name

    def topic(self, name: str) -> str:
        """The full name of a topic declared in topics.yaml."""
        return f"{self.topic_prefix}{name}"

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for aiokafka clients (TLS/SASL included)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kw

    def printable(self) -> dict[str, Any]:
        """Settings as a JSON-friendly dict with secrets hidden."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


def load_public_key(text: str):
    """A public key from a PEM, or from its base64 body alone (what fits in an environment
    variable), literal ``\\n`` sequences allowed.

    >>> body = "".join(GHL_ED25519_PUBLIC_KEY.splitlines()[1:-1])
    >>> type(load_public_key(body)).__name__
    'Ed25519PublicKey'
    """
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.replace("\\n", "\n").strip().strip("'\"")
    if "-----BEGIN" not in text:
        body = re.sub(r"\s+", "", text)
        text = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(
            body[i:i + 64] for i in range(0, len(body), 64)) + "\n-----END PUBLIC KEY-----\n"
    return load_pem_public_key(text.encode())
