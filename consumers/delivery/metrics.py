"""Prometheus metrics of the delivery connectors (labelled by connector app and system).

Requests by outcome (accepted, rejected, transient, timeout, connection, breaker_open), retries, the
breaker's state and transitions, request latency, requests in flight, and what became of each record
(acknowledged, rejected, retry topic, dead letter, postponed, skipped), plus POSTING_ACK_TIMEOUT raised
and resolved. The runtime's own metrics (`backbone_streams_*`) come with the worker.

What moves with every request or record (requests by outcome, latency, records by fate) is a
single-writer tally (`backbone.streams.tally`: plain numbers the worker's thread adds to, read at
scrape time), as the topology's are: prometheus_client's lock per update was a few per cent of the
connector's CPU. Requests in flight are read from the worker when scraped (`Gauge.set_function`), so
a request costs them nothing. Names, labels and buckets are what they were.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from backbone.streams.tally import CounterFamily, HistogramFamily

REQUESTS = CounterFamily(
    "backbone_delivery_requests_total", "HTTP requests to a system, by outcome", ["connector", "system", "outcome"]
)
RETRIES = Counter(
    "backbone_delivery_retries_total", "Attempts repeated after a transient failure", ["connector", "system"]
)
BREAKER_STATE = Gauge(
    "backbone_delivery_breaker_state", "Circuit state: 0 closed, 1 half-open, 2 open", ["connector", "system"]
)
BREAKER_TRANSITIONS = Counter(
    "backbone_delivery_breaker_transitions_total", "Circuit state changes, by new state", ["connector", "system", "to"]
)
LATENCY = HistogramFamily(
    "backbone_delivery_request_seconds",
    "Time of one HTTP attempt",
    ["connector", "system"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("backbone_delivery_in_flight", "HTTP requests in flight", ["connector", "system"])
RECORDS = CounterFamily(
    "backbone_delivery_records_total", "What became of each consumed record", ["connector", "outcome"]
)
ACK_TIMEOUTS = Counter(
    "backbone_delivery_ack_timeouts_total", "POSTING_ACK_TIMEOUT exceptions, by status", ["connector", "status"]
)
PENDING = Gauge("backbone_delivery_pending_postings", "Postings seen and not yet acknowledged", ["connector"])
