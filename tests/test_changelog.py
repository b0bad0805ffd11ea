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

    async def start(self):
        pass

    async def stop(self):
        pass

    async def begin_transaction(self):
        self._open = []

    async def send(self, topic, value, key=None, partition=None):
        self._open.append(key)
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
