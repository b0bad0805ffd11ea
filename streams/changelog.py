"""The lead table's changelog, written so that a worker cut off from its group cannot
leave a stale value in it (issue 20, "a frozen worker cannot corrupt state").

Each partition of the changelog is written by a transactional producer of its own, whose
``transactional.id`` names the app, the table and the partition. A worker takes a
partition's producer (:meth:`FencedChangelog.acquire`) when the partition is assigned to
it and before it reads the partition back; starting that producer makes the broker bump
the id's epoch, abort whatever transaction an older holder of the id left open and refuse
every write and commit of that older holder from then on. The restore reads committed
records only (``streams.readers.read_partition``). So a worker frozen with SIGSTOP (or cut
off by a network partition) past its session timeout can resume and go on writing what it
had fetched: the broker rejects it, its open transaction is never read back, and the
worker stops (:class:`ChangelogFenced`) instead of committing anything.

Why a transactional producer and not the alternatives: an owner check before each write
(asking the group coordinator) leaves a window between the check and the write, and a
freeze inside that window defeats it; a generation number inside each value cannot win
against last-write-wins, since the restore (and log compaction) keeps the last record of
a key whatever its generation. The broker's epoch check is the one fence the writer
cannot race.

Writes are staged per partition, a lead's latest value replacing the one before
(:meth:`FencedChangelog.write`, no I/O); :meth:`FencedChangelog.commit` sends each
partition's staged leads in one transaction and commits it. The worker commits before
every offset commit (the producer's flush, which Faust awaits first), before each
restore, on revocation and at least once a second, so the input offsets never run ahead
of the state they produced, a transaction is open only while it is committed, and each
changed lead reaches the changelog once per commit instead of once per batch. Nothing
downstream waits for the commit (outputs are sent with the worker's ordinary producer).

A partition's producer that dies on something other than a fence (aiokafka gives up on some
retriable errors, a coordinator connection cut as the broker stops) is renewed in place
(``faust_internals.renew_producer``): its epoch is ended and bumped only if it is still
current, so a renewal never fences a worker that took the partition over meanwhile, and
the writes it held are committed by the new producer (``docs/reliability.md``, point 12).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import IllegalOperation, InvalidProducerEpoch, KafkaError, ProducerFenced

from leadstream.streams import faust_internals as internals

log = logging.getLogger("leadstream.worker")
RENEWALS = 3  # producers renewed in a row for one partition's commit before giving up


def _retrieved(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


class ChangelogFenced(RuntimeError):
    """Another worker took over a changelog partition this worker still wrote."""


class _ProducerFailed(Exception):
    """A partition's producer died on something other than a fence (its cause)."""


class FencedChangelog:
    """One transactional producer per changelog partition of ``topic``.

    ``make_producer(transactional_id)`` builds an (unstarted) ``AIOKafkaProducer``; the
    ids are ``f"{id_prefix}-{partition}"``: the same for every worker of one app (that is
    what fences), and different between apps and tables. ``on_renewed(partition)`` is
    told of each producer renewed after a failure that was not a fence.
    """

    def __init__(self, topic: str, id_prefix: str, make_producer, on_renewed=None):
        self.topic, self.id_prefix, self.make_producer = topic, id_prefix, make_producer
        self.on_renewed = on_renewed  # called with the partition whose producer was renewed
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._dirty: dict[int, dict] = {}  # partition -> key -> value (or what makes it)
        self._locks: dict[int, asyncio.Lock] = {}
        # one commit at a time: a flush (before an offset commit, on revocation) that
        # found a partition's writes popped by a commit in flight must wait for it
        self._committing = asyncio.Lock()
        self.commits = 0
        self.records_written = 0
        self.renewals = 0  # producers replaced after a failure that was not a fence

    def _lock(self, partition: int) -> asyncio.Lock:
        return self._locks.setdefault(partition, asyncio.Lock())

    def held(self) -> set[int]:
        """The partitions this worker holds a producer for."""
        return set(self._producers)

    def pending(self) -> int:
        """Records waiting for the next commit."""
        return sum(len(d) for d in self._dirty.values())

    async def acquire(self, partition: int) -> None:
        """Take ``partition``'s producer: every other holder of it is fenced, and its open
        transaction aborted, once this returns. Call before reading the partition back."""
        async with self._lock(partition):
            await self._close(partition)
            producer = self.make_producer(f"{self.id_prefix}-{partition}")
            await producer.start()  # InitProducerId: bumps the epoch, aborts the old txn
            self._producers[partition] = producer

    async def release(self, partitions: Iterable[int]) -> None:
        """Stop the producers of ``partitions`` (moved away) and drop what waited for
        their next commit (its input offsets are not committed here either: the new owner
        replays them)."""
        for p in partitions:
            async with self._lock(p):
                await self._close(p)

    async def _close(self, partition: int) -> None:
        producer = self._producers.pop(partition, None)
        self._dirty.pop(partition, None)
        if producer is not None:
            try:
                await producer.stop()
            except Exception as err:  # noqa: BLE001 (fenced or the broker away: gone anyway)
                log.info("changelog partition %d: its producer stopped with %r", partition, err)

    def write(self, partition: int, records) -> bool:
        """Stage ``records`` (key, value) for ``partition``'s next commit; a key staged
        again before it replaces its earlier value, so each changed lead is sent once per
        commit, not once per batch (as Kafka Streams' record caches do). A value is the
        record's bytes, None (a tombstone) or a function returning either, called when the
        transaction is sent (a lead packed once per commit: ``LeadStore.stage``). False if
        this worker holds no producer for the partition (moved away or being read back):
        nothing is staged, and the caller must leave the batch's records uncommitted."""
        if partition not in self._producers:
            return False
        staged = self._dirty.setdefault(partition, {})
        for key, value in records:
            staged[key] = value
        return True

    async def commit(self) -> None:
        """Send what each partition staged, in one transaction per partition, and commit
        it; raise :class:`ChangelogFenced` if another worker took a partition over, or
        ``RuntimeError`` if a record was not delivered. Writes staged meanwhile wait for
        the next commit."""
        async with self._committing:  # a second caller returns once the first's is done
            await self._commit()

    async def _commit(self) -> None:
        for p in list(self._dirty):
            async with self._lock(p):
                for attempt in range(RENEWALS + 1):
                    staged = self._dirty.pop(p, None)
                    producer = self._producers.get(p)
                    if not staged or producer is None:
                        break
                    # the values still to pack, packed now: the leads as they are between
                    # two batches (nothing is awaited from the pop to here)
                    staged = {k: v() if callable(v) else v for k, v in staged.items()}
                    try:
                        await self._send(p, producer, staged)
                        break
                    except _ProducerFailed as err:
                        # kept for the renewed producer, under what was staged meanwhile
                        self._dirty[p] = {**staged, **self._dirty.get(p, {})}
                        if attempt == RENEWALS:
                            raise RuntimeError(f"changelog partition {p}: its producer "
                                               f"failed {attempt + 1} times in a row "
                                               f"(last: {err.__cause__!r})") from err
                        await self._renew(p, producer, err.__cause__)

    async def _send(self, p: int, producer: AIOKafkaProducer, staged: dict) -> None:
        await self._call(p, producer, producer.begin_transaction())
        sent = []
        for key, value in staged.items():
            fut = await self._call(p, producer, producer.send(self.topic, value, key=key,
                                                              partition=p))
            fut.add_done_callback(_retrieved)  # a fenced write fails the commit too
            sent.append(fut)
            if len(sent) % 256 == 0:  # a send returns without yielding: let the
                await asyncio.sleep(0)  # agent run between (batches stage anew)
        await self._call(p, producer, producer.commit_transaction())
        failed = [f.exception() for f in sent
                  if f.done() and not f.cancelled() and f.exception() is not None]
        if failed:  # not reached in practice: a failed write fails the commit
            raise RuntimeError(f"changelog partition {p}: {len(failed)} writes not "
                               f"delivered (first: {failed[0]!r})")
        self.commits += 1
        self.records_written += len(sent)

    async def _renew(self, p: int, failed: AIOKafkaProducer, cause) -> None:
        """Replace ``p``'s producer, whose sending task died on something other than a
        fence, keeping its epoch's claim (``faust_internals.renew_producer``): if another
        worker took the partition over meanwhile, this one stops as a fenced one does."""
        log.warning("changelog partition %d: its producer failed (%r); renewing it, its "
                    "writes kept for the next transaction", p, cause)
        fresh = self.make_producer(f"{self.id_prefix}-{p}")
        try:
            await internals.renew_producer(failed, fresh)
        except ProducerFenced as err:
            await self._close(p)
            raise ChangelogFenced(
                f"changelog partition {p} was taken over by another worker while this "
                f"one's producer was down ({cause!r}); this worker stops") from err
        finally:
            try:
                await failed.stop()
            except Exception:  # noqa: BLE001 (its sending task is dead already)
                pass
        self._producers[p] = fresh
        self.renewals += 1
        if self.on_renewed is not None:
            self.on_renewed(p)

    async def _call(self, partition: int, producer: AIOKafkaProducer, aw):
        try:
            return await aw
        except (ProducerFenced, InvalidProducerEpoch) as err:
            raise ChangelogFenced(
                f"changelog partition {partition} was taken over by another worker while "
                f"this one still wrote it (frozen or cut off past its session timeout?): "
                f"its open transaction is aborted and never read back; this worker "
                f"stops ({err!r})") from err
        except (AssertionError, IllegalOperation, KafkaError) as err:
            # aiokafka, once the producer's sending task died: the error that killed it,
            # an invalid state transition, or "not in transaction"
            cause = internals.producer_failure(producer)
            if cause is not None and not isinstance(cause, (ProducerFenced,
                                                            InvalidProducerEpoch)):
                raise _ProducerFailed() from cause
            raise ChangelogFenced(f"changelog partition {partition}: its producer failed "
                                  f"earlier, most likely fenced ({err!r}); this worker "
                                  f"stops") from err

    async def close(self) -> None:
        """Stop every producer; what was staged and not committed is dropped."""
        await self.release(list(self._producers))
