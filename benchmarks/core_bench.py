"""The billing core alone: entries/s through the pure rules in one process, no Kafka, no Avro.

Feeds the benchmark firm of `topology_bench.py` (master data, then every time entry and its approval)
through `BillingPipeline`, the in-memory reference of what the topology distributes, and reports
approved entries per second (wall clock) and CPU microseconds per entry (`time.process_time`, the
steadier figure on a shared machine), the median of `--rounds` rounds. By default the events carry no
event ids, so the core derives them; `--with-ids` feeds them with ids, as connectors and `backbone emit`
publish them (and as the topology benchmark does). `--profile` prints the functions that take the time.
`--worker-gc` runs the rounds with a worker process's garbage collector settings (`backbone.streams.loop`:
what is alive once the inputs are loaded frozen out of the collector's sight, as a worker does after its
restore — here the input events too —, and its larger thresholds) and says so in its line; the default
figure is CPython's defaults, the one every earlier session reported. `--digest` prints, instead of timing,
a SHA-256 of every output event of the workload (type and JSON, ids included): the same line before and
after a change meant only for speed.

    .venv/bin/python benchmarks/core_bench.py --entries 20000 --projects 200 [--with-ids] [--worker-gc] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import statistics
import time
from pathlib import Path

from topology_bench import firm
from workload import Firm, entry_events, reference_events

from backbone.domain.models import Event
from backbone.domain.pipeline import BillingPipeline
from backbone.domain.routing import parse_routing
from backbone.streams.loop import GC_THRESHOLDS, keep_for_good

ROUTING = Path(__file__).resolve().parents[1] / "topology" / "routing.toml"


def events(entries: int, projects: int, workers: int, with_ids: bool) -> tuple[list[Event], list[Event]]:
    """Master data, then the entries and approvals interleaved as the bench feeds them."""
    if not with_ids:
        reference, time_entries, approvals = firm(entries, projects, workers)
        pairs = [e for pair in zip(time_entries, approvals, strict=True) for e in pair]
        return reference, pairs
    shape = Firm(projects=projects, workers=workers)
    pairs = [e for pair in entry_events(shape, 0, entries, with_ids=True) for e in pair]
    return list(reference_events(shape, with_ids=True)), pairs


def run(reference: list[Event], inputs: list[Event]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of feeding `inputs` to a pipeline that has seen `reference`."""
    pipeline = BillingPipeline(parse_routing(ROUTING.read_text()))
    for event in reference:
        pipeline.handle(event)
    handle = pipeline.handle
    began, cpu = time.perf_counter(), time.process_time()
    emitted = 0
    for event in inputs:
        emitted += len(handle(event))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert emitted >= len(inputs), f"expected a candidate and two postings per entry, got {emitted} events"
    return elapsed, cpu


def digest(reference: list[Event], inputs: list[Event]) -> tuple[str, int]:
    """(SHA-256 of every output event's type and JSON, in emission order; how many there were)."""
    pipeline = BillingPipeline(parse_routing(ROUTING.read_text()))
    for event in reference:
        pipeline.handle(event)
    sha, count = hashlib.sha256(), 0
    for event in inputs:
        for output in pipeline.handle(event):
            sha.update(type(output).__name__.encode() + output.model_dump_json().encode() + b"\n")
            count += 1
    return sha.hexdigest(), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--workers-in-firm", type=int, default=200)
    parser.add_argument("--with-ids", action="store_true", help="events carry event ids, as connectors send them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker-gc", action="store_true", help="a worker's collector settings (reported as such)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--digest", action="store_true", help="a SHA-256 of every output event, no timing")
    args = parser.parse_args()
    reference, inputs = events(args.entries, args.projects, args.workers_in_firm, args.with_ids)
    if args.worker_gc:  # as a worker does after its restore
        keep_for_good()
        gc.set_threshold(*GC_THRESHOLDS)
    if args.digest:
        sha, count = digest(reference, inputs)
        print(f"billing core outputs: {sha} ({count:,} events of {args.entries:,} entries)")
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, reference, inputs)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        return
    rounds = [run(reference, inputs) for _ in range(args.rounds)]
    wall = statistics.median(r[0] for r in rounds)
    cpu = statistics.median(r[1] for r in rounds)
    ids = "with event ids" if args.with_ids else "ids derived"
    collector = ", a worker's gc settings" if args.worker_gc else ""
    print(
        f"billing core: {args.entries / wall:,.0f} entries/s, {cpu / args.entries * 1e6:,.1f} µs CPU per entry "
        f"(median of {args.rounds}; {args.entries:,} entries, {args.projects:,} projects, {ids}{collector})"
    )


if __name__ == "__main__":
    main()
