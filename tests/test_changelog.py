"""``streams.changelog.FencedChangelog`` with a stand-in for aiokafka's transactional
producer (the broker's fencing itself: tests/integration/test_changelog.py)."""

from __future__ import annotations

import asyncio

from leadstream.streams.changelog import FencedChangelog


class Producer:
    """A transactional producer whose commit takes a while."""

    def __init__(self):
        self.committed: list[list[bytes]] = []
        self._open: list[bytes] = []
        self.values: dict[bytes, bytes | None] = {}  # the last value sent per key

    async def start(self):
        pass

    async def stop(self):
        pass

    async def begin_transaction(self):
        self._open = []

    async def send(self, topic, value, key=None, partition=None):
        self._open.append(key)
        self.values[key] = value
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def commit_transaction(self):
        await asyncio.sleep(0.05)
        self.committed.append(self._open)


def test_a_commit_returns_only_once_a_commit_in_flight_is_done():
    """Every offset commit and revocation first commits the changelog; one that finds a
    partition's writes already taken by a commit still in flight (the periodic one) must
    not return before that transaction is committed, or the offsets committed next would
    cover writes a crash then loses."""

    async def run():
        producers: dict[str, Producer] = {}
        log = FencedChangelog("t-changelog", "app-leads",
                              lambda tid: producers.setdefault(tid, Producer()))
        await log.acquire(0)
        log.write(0, [(b"L1", b"v1"), (b"L2", b"v2")])
        first = asyncio.ensure_future(log.commit())  # the periodic commit
        await asyncio.sleep(0.01)  # it took the staged writes and waits for the broker
        await log.commit()  # the flush before an offset commit
        done = list(producers["app-leads-0"].committed)
        await first
        return done

    assert asyncio.run(run()) == [[b"L1", b"L2"]]


def test_a_lead_changed_by_several_batches_is_packed_once_per_commit_as_it_is_then():
    """The agent stages each changed lead (``LeadStore.stage``) instead of packing it per
    batch: the transaction packs it when it is sent, once however many batches changed
    it, with its state at that moment; a lead whose partition moved away meanwhile is
    neither packed nor sent (its new owner replays it)."""
    from leadstream.streams.step import LeadState, LeadStore

    packs = []

    class Counted(LeadState):
        def pack(self) -> bytes:
            packs.append(self.profile.event_count)
            return super().pack()

    async def run():
        producers: dict[str, Producer] = {}
        log = FencedChangelog("t-changelog", "app-leads",
                              lambda tid: producers.setdefault(tid, Producer()))
        await log.acquire(0)
        await log.acquire(1)
        store = LeadStore()
        st, other = Counted(), Counted()
        for count in (1, 2, 3):  # three batches change L1 (partition 0) before the commit
            st.profile.event_count = count
            assert log.write(0, [(b"L1", store.stage(b"L1", st))])
        log.write(1, [(b"L2", store.stage(b"L2", other))])
        assert store.packed == {} and store.get(b"L1") is st  # nothing packed yet
        moved = store.discard_staged(lambda key: key == b"L2")  # partition 1 moves away
        await log.release([1])
        await log.commit()
        return producers, store, moved

    producers, store, moved = asyncio.run(run())
    assert packs == [3]
    assert producers["app-leads-0"].committed == [[b"L1"]]
    assert producers["app-leads-0"].values[b"L1"] == store.packed[b"L1"]
    assert LeadState.unpack(store.packed[b"L1"]).profile.event_count == 3
    assert moved == [b"L2"] and b"L2" not in store.packed and store.get(b"L2") is None
    assert not store.staged(b"L1")
