"""What the agents, timers and views of one worker share: built once by
:func:`streams.app.create_app`, handed to ``streams.agents``, ``streams.timers`` and
``streams.web``. Nothing here is a module global: every app has its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from leadstream.models.snapshot import SnapshotStore
from leadstream.streams.api import ApiDoc
from leadstream.streams.durable import OrderGuard, StateRestorer
from leadstream.streams.readers import CatalogFeed
from leadstream.streams.step import LeadStore, Step
from leadstream.streams.topics import TopicSpec


@dataclass
class Context:
    settings: Any
    app: faust.App
    specs: dict[str, TopicSpec]
    n: int  # partitions of ``interactions`` (and of the lead table)
    step: Step  # the pure batch step, and the catalog and models every worker holds whole
    topics: dict  # logical name (as in topics.yaml) -> faust Topic
    leads: Any  # the ``features_by_lead`` table
    agent_stats: Any  # the ``agent_stats_v1`` table
    store: LeadStore  # the lead table's values, recently active leads decoded
    restorer: StateRestorer  # the lead table's partitions, read back from the changelog
    stats_restorer: StateRestorer  # the same for the agent-stats table
    guard: OrderGuard  # input offsets in order, in front of the interactions agent
    snapshots: SnapshotStore
    emit: Callable  # ``emitter``: a record to the producer, its delivery checked
    fence: Any  # ``streams.changelog.FencedChangelog``, or None: changelog writes by ``emit``
    lane: Any  # ``streams.faust_internals.Lane``: the interactions records, in batches
    catalog_ready: asyncio.Event = field(default_factory=asyncio.Event)
    catalog_feed: CatalogFeed = field(default_factory=CatalogFeed)  # the reader's progress
    # the OpenAPI document every module adding a route adds its operation to
    api: ApiDoc = field(default_factory=lambda: ApiDoc("0"))
    # held by the interactions agent from a batch's step to its last send, and by anything
    # else writing a lead (a list asked for over HTTP), so no write interleaves a batch's
    lead_writes: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def changelog(self):
        """The lead table's changelog topic."""
        return self.leads.changelog_topic

    async def write_leads(self, partition: int, records) -> bool:
        """Write ``(key, value or None)`` records of the lead table to its changelog: staged
        for the partition's next transaction (``fence``), or with ``emit``. False if this
        worker no longer holds the partition's producer: nothing is written, and the
        caller leaves the records it handled uncommitted."""
        if self.fence is not None:
            return self.fence.write(partition, records)
        for key, value in records:
            await self.emit(self.changelog, key, value, partition=partition)
        return True


def emitter(producer, watch: Callable[[asyncio.Future], None], out_topics: dict) -> Callable:
    """``emit(topic, key, value, partition=None, headers=None)`` for the faust topics of
    ``out_topics`` (topic -> full name).

    It hands a record to the producer: cheaper than ``Topic.send`` per event, and as safe:
    every offset commit first waits for the producer to deliver all it holds, and refuses
    if any of these records failed (``watch``: ``streams.faust_internals``,
    ``make_delivery_checked``)."""

    async def emit(topic, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers=None) -> None:
        watch(await producer.send(out_topics[topic], key, value, partition, None, headers))

    return emit
