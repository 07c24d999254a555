"""The billing core alone: entries/s through the pure rules in one process, no Kafka, no Avro.

Feeds the benchmark firm of `topology_bench.py` (master data, then every time entry and its approval)
through `BillingPipeline`, the in-memory reference of what the topology distributes, and reports
approved entries per second. `--profile` prints the functions that take the time.

    .venv/bin/python benchmarks/core_bench.py --entries 20000 --projects 200 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from topology_bench import firm

from backbone.domain.pipeline import BillingPipeline
from backbone.domain.routing import parse_routing

ROUTING = Path(__file__).resolve().parents[1] / "topology" / "routing.toml"


def run(entries: int, projects: int, workers: int) -> float:
    reference, time_entries, approvals = firm(entries, projects, workers)
    pipeline = BillingPipeline(parse_routing(ROUTING.read_text()))
    for event in reference:
        pipeline.handle(event)
    began = time.perf_counter()
    emitted = 0
    for entry, approval in zip(time_entries, approvals, strict=True):
        emitted += len(pipeline.handle(entry))
        emitted += len(pipeline.handle(approval))
    elapsed = time.perf_counter() - began
    assert emitted >= 2 * entries, f"expected a candidate and two postings per entry, got {emitted} events"
    return entries / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--workers-in-firm", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        rate = profiler.runcall(run, args.entries, args.projects, args.workers_in_firm)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
    else:
        rate = run(args.entries, args.projects, args.workers_in_firm)
    print(f"billing core: {rate:,.0f} entries/s ({args.entries:,} entries, {args.projects:,} projects)")


if __name__ == "__main__":
    main()
