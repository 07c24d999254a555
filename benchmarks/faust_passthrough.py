"""A faust app that forwards records unchanged: the framework's own ceiling on this machine.

`topology_bench.py` runs it on the same input as the topology: one agent consumes the input topics
as raw bytes and sends every record's key and value to a sink topic, with the topology's own faust
settings the topology ran with before it moved to `backbone.streams`, no decoding and no state. It
needs the `bench` extra (`pip install -e .[bench]`); faust is no runtime dependency of backbone.

    python benchmarks/faust_passthrough.py --app-id bench-x --sink bench-x.sink TOPIC [TOPIC ...]
"""

from __future__ import annotations

import argparse
from typing import Any

import faust

from backbone.settings import Settings, load_settings


def faust_settings(settings: Settings) -> dict[str, Any]:
    """The faust settings the topology used (at-least-once, acks=all, 1 s commits, in-memory tables)."""
    return {
        "broker": f"kafka://{settings.kafka.servers}",
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": 6,
        "topic_replication_factor": settings.kafka.replication_factor,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger_ms": 0,
        "broker_commit_interval": 1.0,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 2.0,
        "stream_wait_empty": True,
    }


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
