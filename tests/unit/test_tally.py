"""Single-writer tallies expose what prometheus_client's own counters and histograms expose for the same updates.

The topology's per-record metrics moved to `backbone.streams.tally` for speed; dashboards and alerts
read the same names, labels, buckets and values, so each family is scraped here next to the library's
own metric fed the same values.
"""

from __future__ import annotations

import enum

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from backbone.domain.models import Decision
from backbone.streams.tally import CounterFamily, HistogramFamily

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OBSERVED = [0.0, 0.004, 0.005, 0.0051, 0.01, 0.3, 1, 1.0000001, 29.9, 30, 31, 1e9]


def scraped(registry: CollectorRegistry) -> set[str]:
    """The exposition's sample lines (comments and `_created` samples left out: tallies have none)."""
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if line and not line.startswith("#") and "_created" not in line}


def test_a_histogram_tally_exposes_the_buckets_count_and_sum_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = HistogramFamily("t_seconds", "latency", ["stage"], BUCKETS, registry=ours)
    reference = Histogram("t_seconds", "latency", ["stage"], buckets=BUCKETS, registry=theirs)
    for stage, values in (("entries", OBSERVED), ("books", OBSERVED[:3])):
        for value in values:
            tally.labels(stage).observe(value)
            reference.labels(stage).observe(value)
    assert scraped(ours) == scraped(theirs)
    assert 't_seconds_bucket{le="0.005",stage="entries"} 3.0' in scraped(ours)  # 0.005 is in its own bucket


def test_a_counter_tally_exposes_the_total_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = CounterFamily("events_in_total", "events", ["event_type"], registry=ours)
    reference = Counter("events_in_total", "events", ["event_type"], registry=theirs)
    for event_type, times in (("time-entry", 3), ("approval", 1)):
        for _ in range(times):
            tally.labels(event_type).inc()
            reference.labels(event_type).inc()
    tally.labels("approval").inc(2.5)
    reference.labels("approval").inc(2.5)
    assert scraped(ours) == scraped(theirs)


def test_labels_must_match_the_familys_label_names() -> None:
    family = CounterFamily("x_total", "x", ["a", "b"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="takes the labels"):
        family.labels("only-one")


def test_bucket_bounds_must_rise() -> None:
    with pytest.raises(ValueError, match="must rise"):
        HistogramFamily("y_seconds", "y", [], (1, 0.5), registry=CollectorRegistry())


def test_a_family_name_taken_in_the_registry_is_refused() -> None:
    registry = CollectorRegistry()
    Counter("z_total", "z", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        CounterFamily("z_total", "z", [], registry=registry)


class Status(str, enum.Enum):  # noqa: UP042 - str() of its member is "Status.OPEN", as prometheus_client shows it
    OPEN = "OPEN"


def test_enum_label_values_are_exposed_as_prometheus_client_exposes_them() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = CounterFamily("exceptions_total", "exceptions", ["kind", "status"], registry=ours)
    reference = Counter("exceptions_total", "exceptions", ["kind", "status"], registry=theirs)
    for kind, status in ((Decision.APPROVED, Status.OPEN), ("APPROVED", Status.OPEN), (Decision.REJECTED, "x")):
        tally.labels(kind, status).inc()
        reference.labels(kind, status).inc()
    assert scraped(ours) == scraped(theirs)
