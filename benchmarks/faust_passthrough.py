"""A faust app that forwards records unchanged: the framework's own ceiling on this machine.

`topology_bench.py` runs it on the same input as the topology: one agent consumes the input topics
as raw bytes and sends every record's key and value to a sink topic, with the topology's own faust
settings (`topology.app.faust_settings`), no decoding and no state. What the topology costs beyond
this is backbone's; what this costs beyond the confluent-kafka pass-through is faust's.

    python benchmarks/faust_passthrough.py --app-id bench-x --sink bench-x.sink TOPIC [TOPIC ...]
"""

from __future__ import annotations

import argparse
from typing import Any

import faust

from backbone.settings import load_settings
from topology.app import faust_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    app = faust.App(args.app_id, **faust_settings(load_settings()))
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    sink = app.topic(args.sink, **raw)

    async def forward(stream: Any) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)

    app.agent(app.topic(*args.sources, **raw), name="forward")(forward)
    faust.Worker(app, loglevel="WARNING", override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
