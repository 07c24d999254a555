"""Replay and restore of the topology at the design's scale: 1M entries tracked in one worker.

  a. publishes master data for `--projects` projects, `--workers-in-firm` consultants and `--contracts`
     contract versions, then `--entries` time entries and their approvals (Avro through
     `TopicSerde.encode_value`, a producer tuned for throughput: linger 20 ms, 1 MB batches, lz4,
     `--publishers` processes), and reports the publish rate;
  b. starts one topology worker on a fresh app id and times it from process start to the N-th
     invoice candidate a read_committed reader sees (the replay figure; target ≤ 2 minutes), with
     the worker's peak RSS (target ≤ 1 GiB with 1M entries tracked);
  c. stops it with SIGTERM (it commits and leaves), starts a new worker with the same app id and
     publishes one probe entry: reports the seconds its "state restored" log lines give (summed over
     assignments), the master data load, and the time from the restart to the probe's candidate
     (target ≤ 60 s), with the restored worker's peak RSS.
Worker logs (structlog JSON, INFO) are kept in `--log-dir`. The design target is the default:

    .venv/bin/python benchmarks/replay_bench.py                       # 1M entries, 100k projects
    .venv/bin/python benchmarks/replay_bench.py --entries 20000 --projects 2000 --workers-in-firm 400 \\
        --contracts 2000                                             # a smoke test
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from workload import (
    ROOT,
    Firm,
    Publisher,
    RecordCounter,
    clean_up,
    entry_events,
    load,
    peak_rss_mib,
    process_env,
    publish_firm,
    stamp,
    stop,
    throughput_producer,
    topology_command,
)

from backbone.kafka.admin import apply_topics
from backbone.settings import Settings, load_settings
from topology.app import TopologyTopics

PROBE_DEADLINE_S = 600.0
"""How long the restarted worker may take to price the probe entry before the run is given up."""


def start_worker(settings: Settings, app_id: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own handle
        return subprocess.Popen(
            topology_command(app_id, prefix), cwd=ROOT, env=process_env(settings, "INFO"), stderr=out
        )


def wait_for(counter: RecordCounter, records: int, worker: subprocess.Popen[bytes], deadline_s: float) -> float:
    """Seconds until `counter` has seen `records` records; exits when the worker dies or output stalls."""
    started = time.perf_counter()
    progress, shown = (0, started), started
    while counter.poll() < records:
        now = time.perf_counter()
        if counter.count != progress[0]:
            progress = (counter.count, now)
        elif now - progress[1] > deadline_s:
            raise SystemExit(f"no progress at {counter.count:,}/{records:,} for {deadline_s:.0f}s")
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); see its log")
        if now - shown >= 5:
            shown = now
            rss = peak_rss_mib(worker.pid)
            print(f"  {counter.count:,}/{records:,} candidates, {now - started:.0f}s, peak RSS {rss:,.0f} MiB")
    return time.perf_counter() - started


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The worker's structlog JSON lines named `event` (other lines, e.g. librdkafka's, are skipped)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == event:
                found.append(record)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="time entries, each with its approval")
    parser.add_argument("--projects", type=int, default=100_000)
    parser.add_argument("--workers-in-firm", type=int, default=20_000)
    parser.add_argument("--contracts", type=int, default=100_000, help="contract versions")
    parser.add_argument("--publishers", type=int, default=2, help="processes publishing the entries")
    parser.add_argument("--compression", default="lz4")
    parser.add_argument("--log-dir", type=Path, default=None, help="worker logs (default: a temporary directory)")
    parser.add_argument(
        "--stall-seconds", type=float, default=600, help="give up when no candidate arrived for this long"
    )
    parser.add_argument("--no-restart", action="store_true", help="skip the restore measurement (c)")
    parser.add_argument("--keep-topics", action="store_true", help="leave this run's topics on the broker")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log file
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"started {stamp()}, load average {load()}")
    settings = load_settings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    app_id = f"{prefix}app"
    logs = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-replay-"))
    logs.mkdir(parents=True, exist_ok=True)
    topics = TopologyTopics.prefixed(prefix)
    apply_topics(AdminClient(settings.kafka.client_config()), topics.all())
    firm = Firm(projects=args.projects, workers=args.workers_in_firm, contracts=args.contracts)

    records, seconds = publish_firm(
        settings, topics, firm, args.entries, processes=args.publishers, compression=args.compression
    )
    print(f"a. published {records:,} records in {seconds:.1f}s: {records / seconds:,.0f} records/s, load {load()}")

    counter = RecordCounter(settings, topics.invoice_candidates.name)
    worker = start_worker(settings, app_id, prefix, logs / "replay.log")
    try:
        replay_s = wait_for(counter, args.entries, worker, args.stall_seconds)
        rss = peak_rss_mib(worker.pid)
    finally:
        stop([worker], timeout=120)
    first_to_last = (counter.last_at or 0) - (counter.first_at or 0)
    print(
        f"b. replay: {args.entries:,} candidates {replay_s:.1f}s after the worker started "
        f"({args.entries / replay_s:,.0f} entries/s; first→last candidate {first_to_last:.1f}s); "
        f"peak RSS {rss:,.0f} MiB; load {load()}"
    )
    if not args.no_restart:
        restarted = time.perf_counter()
        worker = start_worker(settings, app_id, prefix, logs / "restore.log")
        try:
            publisher = Publisher(settings, topics, throughput_producer(settings, args.compression))
            publisher.send_all(iter(next(entry_events(firm, args.entries, args.entries + 1))))
            publisher.flush()
            wait_for(counter, args.entries + 1, worker, PROBE_DEADLINE_S)
            probe_s = time.perf_counter() - restarted
            rss = peak_rss_mib(worker.pid)
        finally:
            stop([worker], timeout=120)
        restored = log_events(logs / "restore.log", "state restored")
        loaded = log_events(logs / "restore.log", "broadcast table loaded")
        print(
            f"c. restore: state restored in {sum(r.get('seconds', 0) for r in restored):.1f}s "
            f"({len(restored)} assignment(s), {sum(r.get('records', 0) for r in restored):,} changelog records); "
            f"master data loaded in "
            f"{sum(r.get('seconds', 0) for r in loaded):.1f}s; restart → probe entry's candidate {probe_s:.1f}s; "
            f"peak RSS {rss:,.0f} MiB; load {load()}"
        )
    counter.close()
    print(f"finished {stamp()}, load average {load()}, worker logs in {logs}")
    clean_up(settings, prefix, args.keep_topics)


if __name__ == "__main__":
    main()
