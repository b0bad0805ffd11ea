"""The closed loop on real parts: a real worker on the embedded broker runs the demo's
experiment (popularity against the hybrid), simulated leads with hidden tastes see the
lists published for them and click, save and book by their taste; `leadstream experiments
report` then shows impressions and clicks per arm and finds the hybrid the better one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest

from leadstream.closedloop import ClosedLoop
from leadstream.simulate import SimConfig, Simulator

from .conftest import publish, recent_start, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOOP_EVENTS = 5000  # the closed loop's events (about 550 lists looked at)


def test_closed_loop_report_finds_the_better_arm(settings, worker_factory):
    from leadstream.cli.simulate import DEMO_EXPERIMENTS

    s = settings.model_copy(update={"experiments_file": DEMO_EXPERIMENTS})
    t0 = time.monotonic()
    w = worker_factory(s)
    # two days of open-loop history (no invented list feedback), so the hybrid knows tastes
    sim = Simulator(SimConfig(leads=120, properties=300, days=2, seed=5,
                              start=recent_start(2), closed_loop=True))
    history = list(sim.records())
    asyncio.run(publish(s, [(r.topic, r.key, r.value) for r in history]))
    n_history = sum(r.topic == "interactions" for r in history)

    def applied():
        return (w.total("leadstream_events_processed_total")
                + w.total("leadstream_events_duplicate_total")
                + w.total("leadstream_events_dead_lettered_total"))

    w.wait_for(lambda: applied() >= n_history, timeout=120, what="the history")
    # leads come back every few seconds (a session_started gets them a list) and look at
    # their newest list at most every 2 s
    loop = ClosedLoop(s, sim, seed=5, look_after=(0.2, 0.6), cooldown=2.0, visit_every=5.0,
                      max_events=LOOP_EVENTS)

    async def run_and_report_midway():
        closed = asyncio.create_task(loop.run(duration=120))
        await asyncio.sleep(15)
        # the report answers while the stream is live (it reads up to the ends it found)
        t = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "leadstream", "experiments", "report", "--json",
            env=settings_env(s), stdout=asyncio.subprocess.PIPE)
        body, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and not closed.done()
        return await closed, orjson.loads(body), time.monotonic() - t

    stats, midway, took = asyncio.run(run_and_report_midway())
    print(f"\nmidway report in {took:.1f} s: "
          + str({arm: (row["impressions"], row["clicks"]) for arm, row in midway["arms"].items()}))
    assert all(row["impressions"] > 0 for row in midway["arms"].values())
    assert stats.sent == LOOP_EVENTS, stats
    w.wait_for(lambda: applied() >= n_history + stats.sent, timeout=60,
               what="the loop's events")
    assert w.total("leadstream_events_dead_lettered_total") == 0

    out = subprocess.run([sys.executable, "-m", "leadstream", "experiments", "report", "--json"],
                         env=settings_env(s), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = orjson.loads(out.stdout)
    pop, hyb = r["arms"]["popularity"], r["arms"]["hybrid"]
    print(f"\nclosed loop ({time.monotonic() - t0:.0f} s, {stats.looked} lists looked at): "
          + "; ".join(f"{arm} {row['impressions']} impressions {row['clicks']} clicks "
                      f"ctr {row['click_through']['value']:.4f} {row['click_through']['ci95']} "
                      f"save rate {row['save_rate']['value']:.4f}"
                      for arm, row in r["arms"].items())
          + f"; p={hyb['click_through']['p_value']}")
    for arm, row in r["arms"].items():
        # every impression and click the leads sent is credited to the arm of its list
        assert row["impressions"] == stats.per_arm[arm]["recommendation_shown"] > 500, arm
        assert row["clicks"] == stats.per_arm[arm]["recommendation_clicked"] > 0, arm
    # five runs: the hybrid's click-through 1.7-2.8 times popularity's, z from 5 to 9
    assert hyb["click_through"]["value"] > 1.3 * pop["click_through"]["value"]
    assert hyb["click_through"]["significant"] and hyb["click_through"]["p_value"] < 1e-3
    assert hyb["saves"] > pop["saves"]
