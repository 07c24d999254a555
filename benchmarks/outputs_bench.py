"""What writing the topology's outputs costs: the Avro body per output, and `BillingStages._emit` per output.

The outputs are those `stages_bench.py`'s handlers make for `--entries` entries (an invoice candidate and
two posting requests each), kept as the core returned them and not yet written, so each pass writes
objects as a worker does (the three outputs of an entry share their instant, date and an amount). Every
pass writes all of them; the remembered dates and decimals of `backbone.kafka.avro_writer` are forgotten
before each pass. `--against TREE` also times the body writer of another tree's `avro_writer` (e.g. a
`git archive main` of before a change), in the same process, alternated with this tree's, and checks
that both write the same bytes. The `_emit` figure leaves out the encoding of the body only when
`--emit-without-body` is given (the lookups, key, headers and counters around it).

    cd benchmarks && PYTHONPATH=.. ../.venv/bin/python outputs_bench.py [--against /tmp/base]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stages_bench
from workload import Firm

from backbone.domain.models import Event
from backbone.kafka import avro_writer, wire
from backbone.kafka.serde import TopicSerde
from topology.stages import BillingStages

Writers = dict[type[Event], Callable[[dict[str, Any]], bytes]]


def outputs_of(entries: int, projects: int) -> tuple[BillingStages, list[list[Event]]]:
    """The stages, and the outputs of each entry as the core returned them (nothing written)."""
    stages, context, serdes, topics = stages_bench.build(projects, projects, None)
    made: list[list[Event]] = []
    stages._emit = lambda events, context: made.append(list(events))  # type: ignore[method-assign]
    context.holding = True
    for message in stages_bench.input_messages(serdes, topics, Firm(projects=projects, workers=projects), entries):
        stages.entry(message, context)
    del stages._emit  # the class's again
    return stages, made


def writers_of(module: Any, classes: set[type[Event]]) -> Writers:
    return {cls: module.record_writer(wire.schema_for(cls)) for cls in classes}


def forget() -> None:
    # getattr: a tree from before the writers remembered anything (run with PYTHONPATH=<that tree>)
    getattr(avro_writer, "_DATES", {}).clear()
    for remembered in getattr(avro_writer, "_DECIMALS", {}).values():
        remembered.clear()


def body_pass(writers: Writers, outputs: list[Event]) -> float:
    """CPU µs per output of one pass writing every output's body."""
    forget()
    began = time.process_time()
    for output in outputs:
        writers[type(output)](output.__dict__)
    return (time.process_time() - began) / len(outputs) * 1e6


class _Discard:
    def produce(self, topic: str, value: bytes | None, **_: Any) -> None:
        pass


def emit_pass(stages: BillingStages, made: list[list[Event]]) -> float:
    """CPU µs per output of one pass of `_emit` over every entry's outputs (produce discards them)."""
    forget()
    context: Any = _Discard()
    began = time.process_time()
    for events in made:
        stages._emit(events, context)
    return (time.process_time() - began) / sum(map(len, made)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--passes", type=int, default=12)
    parser.add_argument("--against", type=Path, help="another tree whose body writer to time alongside")
    parser.add_argument("--emit-without-body", action="store_true", help="time `_emit` with the body not encoded")
    args = parser.parse_args()
    stages, made = outputs_of(args.entries, args.projects)
    outputs = [output for events in made for output in events]
    classes = {type(output) for output in outputs}
    here = str(Path(avro_writer.__file__).parents[2])  # the tree PYTHONPATH gave
    trees = {here: writers_of(avro_writer, classes)}
    if args.against:
        spec = importlib.util.spec_from_file_location(
            "other_avro_writer", args.against / "backbone/kafka/avro_writer.py"
        )
        assert spec is not None and spec.loader is not None
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        trees[str(args.against)] = writers_of(other, classes)
        mine, theirs = trees.values()
        assert all(mine[type(o)](o.__dict__) == theirs[type(o)](o.__dict__) for o in outputs), "not the same bytes"
    if args.emit_without_body:
        TopicSerde.encode_value = lambda self, event: b""  # type: ignore[method-assign]
    body: dict[str, list[float]] = {name: [] for name in trees}
    emit: list[float] = []
    gc.disable()  # a collection falling into one pass and not the other would be most of the difference
    for n in range(args.passes):
        for name in sorted(trees, reverse=n % 2 == 1):  # each first in half of the passes
            body[name].append(body_pass(trees[name], outputs))
        emit.append(emit_pass(stages, made))
    gc.enable()
    for name, figures in body.items():
        print(f"body writer of {name}: {statistics.median(figures):.2f} µs per output")
    print(
        f"_emit of {here}{' without the body' if args.emit_without_body else ''}: {statistics.median(emit):.2f} µs "
        f"per output (medians of {args.passes} passes over {len(outputs):,} outputs of {args.entries:,} entries)"
    )


if __name__ == "__main__":
    main()
