"""The Faust floor of ``leadstream bench pipeline``: what one Faust worker costs per event
before leadstream does anything.

A Faust app configured like the worker (raw serializers, at-least-once commits, memory
store) whose one agent reads a topic holding ``N`` events, decodes each with orjson and
hands one record per event straight to the producer (as the worker's ``emit`` does). It
prints ``{"events": N, "seconds": S}`` (from the first event to the ``N``-th) on stdout
and runs until it is stopped. ``bench pipeline`` starts it as::

    python -m leadstream.bench.floor BOOTSTRAP GROUP SOURCE_TOPIC DEST_TOPIC N DATA_DIR [MODE]

``MODE`` ``events`` (the default: ``stream.events()``, one ``await`` of the stream per
event), ``batches`` (``stream.take_events(500, within=0.005)``: Faust's own batches) or
``lane`` (the records handed from Faust's fetch loop in batches of up to 500,
``streams.faust_internals.make_lane``, as the worker takes its input: the lane floor).

The gap between this floor and the ceiling is Faust's; between the floor and the
pipeline, leadstream's.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> None:
    import faust
    import orjson
    from faust.worker import Worker

    bootstrap, group, source, dest, n, datadir, *rest = argv
    mode = rest[0] if rest else "events"
    total = int(n)
    app = faust.App(group, broker=[f"kafka://{b}" for b in bootstrap.split(",")],
                    store="memory://", value_serializer="raw", key_serializer="raw",
                    web_enabled=False, datadir=datadir, autodiscover=False,
                    consumer_auto_offset_reset="earliest",
                    processing_guarantee="at_least_once", stream_wait_empty=False)
    src = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw")

    state = {"seen": 0, "t0": None}
    lane = None
    if mode == "lane":
        from leadstream.streams.faust_internals import make_lane
        lane = make_lane(app, source, 500)

    async def handle(event) -> None:
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        value = orjson.dumps(orjson.loads(event.value))
        await app.producer.send(dest, event.key, value, None, None, None)
        state["seen"] += 1
        if state["seen"] == total:
            print(orjson.dumps({"events": total, "seconds": time.perf_counter() - state["t0"]})
                  .decode(), flush=True)

    @app.agent(src, name="floor")
    async def floor(stream):
        if lane is not None:
            ack = app.consumer.ack
            while True:
                for message in await lane.take():
                    await handle(message)
                    ack(message)
        elif mode == "batches":
            async for events in stream.take_events(500, within=0.005):
                for event in events:
                    await handle(event)
        else:
            async for event in stream.events():
                await handle(event)

    class _Worker(Worker):
        def on_setup_root_logger(self, logger, level: int) -> None:
            self.spinner = None  # as the leadstream worker: no DEBUG root logger

    _Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
