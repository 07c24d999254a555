"""Prometheus metrics every processor built on `backbone.streams` exposes, labelled by app id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("backbone_streams_records_in_total", "Records consumed and processed", ["app", "topic"])
RECORDS_OUT = Counter("backbone_streams_records_out_total", "Records produced in transactions", ["app", "topic"])
DEAD_LETTERS = Counter("backbone_streams_dead_letters_total", "Records sent to a dead-letter topic", ["app", "topic"])
COMMITS = Counter("backbone_streams_transactions_committed_total", "Transactions committed", ["app"])
ABORTS = Counter("backbone_streams_transactions_aborted_total", "Transactions aborted, by reason", ["app", "reason"])
COMMIT_SECONDS = Histogram(
    "backbone_streams_commit_seconds",
    "Time to flush changelogs, send offsets and commit one transaction",
    ["app"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REBALANCES = Counter("backbone_streams_rebalances_total", "Partition assignments and revocations", ["app", "kind"])
RESTORE_SECONDS = Histogram(
    "backbone_streams_restore_seconds",
    "Time to restore assigned partitions' state from their changelogs",
    ["app"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120),
)
RESTORED_RECORDS = Counter("backbone_streams_restored_records_total", "Changelog records read by restores", ["app"])
LAG = Gauge("backbone_streams_consumer_lag", "Records behind the partition's end", ["app", "topic", "partition"])
