"""A Python producer client: one method per event type, validated before it is sent.

>>> import asyncio
>>> sent = []
>>> class FakeProducer:            # any object with aiokafka's ``send_and_wait``
...     async def send_and_wait(self, topic, value, key=None):
...         sent.append((topic, key, value))
>>> async def demo():
...     c = EventCollector(producer=FakeProducer())
...     return await c.property_viewed(lead_id="L1", session_id="s1", property_id="P1",
...                                    duration_seconds=42.0, photos_viewed=7)
>>> ev = asyncio.run(demo())
>>> ev.payload.photos_viewed, sent[0][0], sent[0][1]
(7, 'interactions', b'L1')
>>> try:
...     asyncio.run(EventCollector(producer=FakeProducer()).property_viewed(lead_id="L1",
...                 session_id="s1", property_id="P1", duration_seconds=-1))
... except InvalidRecord as err:
...     print(err.reason)
schema
"""

from __future__ import annotations

import inspect
import uuid
from typing import Any

from leadstream.contract.events import (
    EVENT_CLASSES,
    InvalidRecord,
    event_to_json,
    make_event,
    utcnow,
)

ENVELOPE = ("event_id", "lead_id", "timestamp", "session_id", "property_id", "agent_id", "source")

__all__ = ["EventCollector", "InvalidRecord"]


class EventCollector:
    """Publishes validated interaction events keyed by lead id.

    Use ``async with EventCollector(settings) as c: await c.property_saved(...)`` or pass
    a started aiokafka producer. Every ``<event_type>(...)`` method takes the envelope
    fields (``lead_id``, ``session_id``, ``property_id``, ``agent_id``, ``source``; an
    ``event_id`` and ``timestamp`` are filled in when omitted) and the payload fields of
    that type as keyword arguments, validates them, sends, and returns the event record.
    An invalid event raises :class:`InvalidRecord` and is not sent.
    """

    def __init__(self, settings=None, producer=None, topic: str | None = None):
        self._settings = settings
        self._producer = producer
        self._own = producer is None
        self.topic = topic or (settings.topic("interactions") if settings else "interactions")

    async def __aenter__(self):
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            self._producer = AIOKafkaProducer(**self._settings.kafka_client_kwargs())
            await self._producer.start()
        return self

    async def __aexit__(self, *exc):
        if self._own and self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def track(self, event_type: str, **fields: Any):
        """Validate and send one event of any type."""
        env = {k: fields.pop(k) for k in ENVELOPE if k in fields}
        env.setdefault("event_id", str(uuid.uuid4()))
        env.setdefault("timestamp", utcnow())
        ev = make_event(event_type, payload=fields, **env)
        await self._producer.send_and_wait(self.topic, event_to_json(ev),
                                           key=ev.lead_id.encode())
        return ev


def _method(name: str):
    cls = EVENT_CLASSES[name]
    payload_cls = cls.model_fields["payload"].annotation
    payload_fields = list(payload_cls.model_fields)

    async def send(self, **fields: Any):
        return await self.track(name, **fields)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in ENVELOPE + tuple(payload_fields):
        required = f in ("lead_id",) or (
            f in cls.model_fields and f != "payload" and cls.model_fields[f].is_required()
            and f not in ("event_id", "timestamp")
        ) or (f in payload_fields and payload_cls.model_fields[f].is_required())
        params.append(inspect.Parameter(
            f, inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if required else None))
    send.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    send.__name__ = name
    send.__qualname__ = f"EventCollector.{name}"
    send.__doc__ = f"Send a ``{name}`` event ({cls.__doc__}). Payload fields: " + (
        ", ".join(payload_fields) or "none") + "."
    return send


for _name in EVENT_CLASSES:
    setattr(EventCollector, _name, _method(_name))
