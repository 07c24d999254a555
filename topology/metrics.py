"""Prometheus metrics of the billing topology (served by `backbone.observability.serve_metrics`).

The ones updated per record are single-writer tallies (`backbone.streams.tally`): a worker's handlers
all run on its one thread, and prometheus_client's lock per update was ~5 % of the CPU per entry.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge

from backbone.streams.tally import CounterFamily, CounterTally, HistogramFamily, HistogramTally

EVENTS_IN = CounterFamily("backbone_topology_events_in_total", "Input events processed, by event type", ["event_type"])
EVENTS_OUT = CounterFamily("backbone_topology_events_out_total", "Events emitted, by event type", ["event_type"])
EXCEPTIONS = CounterFamily("backbone_topology_exceptions_total", "Business exceptions emitted", ["kind", "status"])
DEAD_LETTERS = Counter("backbone_topology_dead_letters_total", "Records sent to a dead-letter topic", ["topic"])
DUPLICATES = Counter("backbone_topology_duplicates_total", "Input events ignored as duplicates (same event_id)")
REPRICES_SKIPPED = Counter(
    "backbone_topology_reprices_skipped_total",
    "Master-data book commands not re-priced: every ledger of the partition was priced with that master data",
)
CHANGES_PRICED = Counter(
    "backbone_topology_entry_changes_total",
    "Entry changes handed to a book: in place (this worker holds the book) or through the book-commands topic",
    ["path"],
)
CHANGES_IN_PLACE = CHANGES_PRICED.labels("in_place")
CHANGES_THROUGH_TOPIC = CHANGES_PRICED.labels("topic")
IGNORED = Counter("backbone_topology_ignored_after_deletion_total", "Revisions/approvals ignored after a deletion")
LATENCY = HistogramFamily(
    "backbone_topology_processing_seconds",
    "Time from a record's timestamp to the end of its processing, by stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AWAITING = Gauge("backbone_topology_entries_awaiting_approval", "Entries whose latest revision has no decision yet")
AWAITING_AGE = Gauge(
    "backbone_topology_oldest_awaiting_approval_seconds", "Age of the oldest entry revision waiting for a decision"
)


# Each record counts under a label; `labels()` takes a lock and builds a key every call, which the hot
# path paid several times per entry. A metric's child per label value is the same for the process's
# life, so it is looked up once.


@functools.cache
def events_in(event_type: str) -> CounterTally:
    return EVENTS_IN.labels(event_type)


@functools.cache
def events_out(event_type: str) -> CounterTally:
    return EVENTS_OUT.labels(event_type)


@functools.cache
def latency(stage: str) -> HistogramTally:
    return LATENCY.labels(stage)
