"""The worker's agents: interactions through the step, agent facts into running figures,
listings checked. Agents only wire: take records, call pure code, write the table, send.

The interactions agent takes what one fetch brought (up to ``batch_max_events``) from the
lane of ``streams.faust_internals.make_lane``, lets each record through the trust check
(its partition's state is whole here, ``streams.durable.StateRestorer``) and the
offset-order guard
(``streams.durable.OrderGuard``), runs one :meth:`streams.step.Step.run` per partition and
stages each changed lead (``features_by_lead``, keyed by the raw lead id and
co-partitioned with ``interactions``) for the partition's next changelog transaction
(``streams.changelog``), which packs it then: once per commit, however many batches
changed it, before it sends the outputs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson

from leadstream.contract.outputs import AgentInsight
from leadstream.models.agents import AgentStats, insights
from leadstream.streams.changelog import ChangelogFenced
from leadstream.streams.context import Context
from leadstream.streams.durable import AGAIN, NEXT
from leadstream.streams.faust_internals import current, refuse
from leadstream.streams.step import ALERT, DEAD_LETTER, FACT, RECOMMENDATION, REKEY, SCORE, Record

log = logging.getLogger("leadstream.worker")


def add_agents(ctx: Context) -> tuple:
    """Declare the agents on ``ctx.app``; returns (interactions agent, listings agent)."""
    app, settings, step, store = ctx.app, ctx.settings, ctx.step, ctx.store
    restorer, guard, emit, catalog_ready = ctx.restorer, ctx.guard, ctx.emit, ctx.catalog_ready
    lane = ctx.lane
    staging = ctx.fence is not None  # the changelog's transactions take staged leads
    # staged: packed once per commit by its transaction; else packed and sent per batch
    write = store.stage if staging else store.put
    t, lead_writes = ctx.topics, ctx.lead_writes
    topic_of = {DEAD_LETTER: t["interactions-dlq"], REKEY: t["interactions"],
                RECOMMENDATION: t["recommendations"], SCORE: t["lead-scores"],
                FACT: t["agent-facts"], ALERT: t["agent-insights"]}

    @app.agent(t["interactions"], name="process_interactions")
    async def process_interactions(stream):
        """Per batch taken from the lane (what one fetch brought, up to
        ``batch_max_events``; the stream itself stays empty, ``faust_internals.make_lane``):
        the records each partition may take, in offset order, through one step; each
        changed lead staged once; the outputs sent; then the batch's records acked, so
        every commit covers only records whose writes the producer holds (the commit
        flushes it first)."""
        await catalog_ready.wait()
        consumer = app.consumer
        while True:
            messages = await lane.take()
            received = time.time()
            parts: dict[int, list] = {}
            for msg in messages:
                p = msg.partition
                if not current(app, msg):
                    refuse(app, msg)  # fetched before a rebalance (Faust's stream skips
                    continue          # these): read again from the committed offset
                if not restorer.trusted(p) and (
                        not await restorer.ready(p)
                        or msg.generation_id != app.consumer_generation_id):
                    refuse(app, msg)  # not this worker's any more, or fetched before a
                    continue          # rebalance: read again from the committed offset
                verdict = await guard.admit(msg)
                if verdict is not NEXT:  # seen before, or past a hole being read again
                    if verdict is AGAIN:
                        step.replayed_again()
                    continue
                parts.setdefault(p, []).append(
                    (msg, Record(msg.key, msg.value, msg.offset, received)))
            if parts and step.unknown_listings([r for it in parts.values() for _, r in it]):
                await ctx.catalog_feed.caught_up(settings.catalog_wait_ms / 1000.0)
            for p, items in parts.items():
                async with lead_writes:  # a lead written over HTTP: before or after
                    if not restorer.trusted(p):  # moved while the guard asked the broker
                        for msg, _ in items:
                            refuse(app, msg)
                        continue
                    # from the trust check to the table writes nothing is awaited
                    try:
                        res = step.run(p, [r for _, r in items], store)
                    except Exception as err:
                        # its leads may be half-updated, and the states staged since the
                        # last commit are those only copies: stop, and the restart replays
                        # from the last commit (the per-lead offsets make it idempotent)
                        log.exception("the step failed on partition %d; the worker stops", p)
                        await app.crash(err)
                        return
                    writes = [(key, write(key, state)) for key, state in res.changed.items()]
                    try:
                        written = not writes or await ctx.write_leads(p, writes)
                    except ChangelogFenced as err:  # taken over: nothing of this worker's since
                        log.error("%s", err)        # its last commit is read back; stop here
                        await app.crash(err)
                        return
                    if not written:
                        for msg, _ in items:  # moved away meanwhile: its new owner reads them
                            refuse(app, msg)
                        if staging:  # and what the step made of them is not this worker's
                            store.discard_staged(res.changed.__contains__)
                        continue
                    for o in res.outputs:
                        await emit(topic_of[o.kind], o.key, o.value, o.partition, o.headers)
            for msg in messages:  # a refused record is marked acked already: a no-op
                consumer.ack(msg)

    agent_stats, stats_restorer = ctx.agent_stats, ctx.stats_restorer

    @app.agent(t["agent-facts"], name="aggregate_agent_facts")
    async def aggregate_agent_facts(stream):
        """Every agent's running figures, on the worker that holds the agent-facts topic."""
        async for event in stream.events():
            msg = event.message
            if not stats_restorer.trusted(msg.partition) and (
                    not await stats_restorer.ready(msg.partition)
                    or msg.generation_id != app.consumer_generation_id):
                refuse(app, msg)
                continue
            fact = orjson.loads(event.value)
            key = fact["agent_id"].encode()
            stored = agent_stats.get(key)
            st = AgentStats.from_dict(orjson.loads(stored)) if stored else AgentStats()
            st.add(fact)
            agent_stats[key] = orjson.dumps(st.to_dict())

    dlq = t["interactions-dlq"]

    @app.agent(t["properties"], name="validate_listings")
    async def validate_listings(stream):
        async for event in stream.events():
            msg = event.message
            res = step.check_listing(event.value, event.key, msg.topic)
            if res is not None:
                await dlq.send(key=event.key, value=event.value,
                               headers=res.headers(msg.topic, msg.partition, msg.offset))

    return process_interactions, validate_listings


def team_insights(ctx: Context) -> dict[str, dict]:
    """Insights of every agent in the agent-stats table (this worker's copy)."""
    team = {k.decode(): AgentStats.from_dict(orjson.loads(v))
            for k, v in list(ctx.agent_stats.data.items())}
    return insights(team)


async def publish_insights(ctx: Context) -> None:
    """Send every agent's insights to ``agent-insights`` (a timer's body)."""
    now = datetime.now(UTC)
    for agent, ins in team_insights(ctx).items():
        rec = AgentInsight(generated_at=now, **ins)
        await ctx.topics["agent-insights"].send(key=agent.encode(),
                                                value=orjson.dumps(rec.model_dump(mode="json")))
        ctx.step.metrics.agent_insights.inc()
