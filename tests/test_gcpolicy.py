"""The worker's garbage-collector policy (ops/gcpolicy.py): no full collection but those
it runs, young ones as before, every pause noted, cyclic garbage still freed."""

import gc
import weakref

import pytest

from leadstream.ops.gcpolicy import NEVER, CollectorPolicy


@pytest.fixture
def policy():
    p = CollectorPolicy()
    yield p
    p.uninstall()


def _grow_surviving(n: int) -> list:
    """``n`` new container objects that all survive (as decoded leads do)."""
    return [[i] for i in range(n)]


def _full_collections_while(fn) -> int:
    seen = []

    def cb(phase, info):
        if phase == "stop" and info["generation"] == 2:
            seen.append(1)

    gc.callbacks.append(cb)
    try:
        fn()
    finally:
        gc.callbacks.remove(cb)
    return len(seen)


def test_surviving_objects_start_no_full_collection_once_the_policy_is_installed(policy):
    n = len(gc.get_objects()) // 2 + 200_000  # twice the quarter that starts one
    kept: list = []
    # CPython's own schedule: the growth starts full collections
    assert _full_collections_while(lambda: kept.append(_grow_surviving(n))) >= 1
    kept.clear()
    gc.collect()
    policy.install()
    assert gc.get_threshold()[2] == NEVER
    policy.pauses()
    assert _full_collections_while(lambda: kept.append(_grow_surviving(n))) == 0
    # the young generations are still collected, and their pauses noted
    gens = {gen for gen, _ in policy.pauses()}
    assert 0 in gens and 2 not in gens


def test_collect_frees_cyclic_garbage_and_notes_its_pause(policy):
    policy.install()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    alive = weakref.ref(a)
    gc.collect(1)  # still referenced: it survives the young generations, into the oldest
    del a, b
    _grow_surviving(100_000)  # young collections come and go
    gc.collect(1)
    assert alive() is not None  # garbage now, but only a full collection looks there
    policy.pauses()
    assert policy.collect() >= 2
    assert alive() is None
    full = [s for gen, s in policy.pauses() if gen == 2]
    assert len(full) == 1 and full[0] >= 0


def test_uninstall_gives_python_its_schedule_back(policy):
    before = gc.get_threshold()
    policy.install()
    policy.install()  # idempotent
    policy.uninstall()
    assert gc.get_threshold() == before
    assert policy._callback not in gc.callbacks
    gc.collect()
    assert policy.pauses() == []


def test_unscheduled_policy_only_notes_pauses():
    p = CollectorPolicy(scheduled=False)
    before = gc.get_threshold()
    p.install()
    try:
        assert gc.get_threshold() == before
        gc.collect()
        assert [gen for gen, _ in p.pauses()] == [2]
    finally:
        p.uninstall()
