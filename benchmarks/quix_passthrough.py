"""A Quix Streams exactly-once stateful pass-through: another framework's ceiling on this machine.

`topology_bench.py` runs it on the same input as the topology. For every input record it reads and
writes one key of Quix's RocksDB state (the per-key count of records seen, logged to Quix's changelog
topic) and sends the record's key and value unchanged to a sink topic, with
`processing_guarantee="exactly-once"` (a transactional producer, read_committed consumer, offsets
committed in the transaction every `--commit-interval` seconds: by default 0.1, the commit interval of
backbone's runtime; Quix's own default is 5). No decoding.

quixstreams pins its own confluent-kafka, so this script runs in a separate environment,
`.venv-bench-quix` (made by `benchmarks/setup_bench.sh`), and imports nothing from backbone: the
broker, topics and sink come as arguments. It stops on SIGTERM.

    .venv-bench-quix/bin/python benchmarks/quix_passthrough.py --broker 127.0.0.1:9092 \\
        --app-id bench-x-quix --sink bench-x.quix-sink --state-dir /tmp/quix-x TOPIC [TOPIC ...]
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application, State


def count_seen(_value: Any, state: State) -> None:
    """One state read and one write per record (the key is the record's key)."""
    state.set("seen", state.get("seen", 0) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="bootstrap servers, e.g. 127.0.0.1:9092")
    parser.add_argument("--app-id", required=True, help="consumer group and transactional id prefix")
    parser.add_argument("--sink", required=True, help="topic the records are forwarded to (must exist)")
    parser.add_argument("--state-dir", required=True, help="where Quix keeps its RocksDB state")
    parser.add_argument("--commit-interval", type=float, default=0.1, help="seconds between transactions")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    app = Application(
        broker_address=args.broker,
        consumer_group=args.app_id,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        processing_guarantee="exactly-once",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    sink = app.topic(args.sink, key_serializer="bytes", value_serializer="bytes")
    for name in args.sources:
        source = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        stream = app.dataframe(source).update(count_seen, stateful=True)
        stream.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
