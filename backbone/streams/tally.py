"""Counters and histograms that one thread updates without a lock, exposed as ordinary Prometheus metrics.

prometheus_client takes a lock for every `inc` and `observe` (2-4 µs each on this machine), which a
processor's handler pays several times per record: about 5 % of the billing topology's CPU per entry
(docs/topology-performance.md, "Sixth session"). A stage's handlers all run on its worker's one thread,
so its per-record metrics need no lock: a tally is a plain number (or a list of bucket counts) the
handler thread adds to, and a collector reads it when Prometheus scrapes. A reader on another thread sees
each number whole (the GIL); a histogram read between a bucket's and the sum's update is off by that one
observation until the next scrape, which Prometheus tolerates as it does any scrape mid-update.

Only for metrics updated from a single thread; everything else keeps prometheus_client's own types.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterTally:
    """One labelled child of a `CounterFamily`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class HistogramTally:
    """One labelled child of a `HistogramFamily`: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # a bucket holds the values up to and including its bound ("le"): the first bound >= value
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        new_child: Callable[[], CounterTally | HistogramTally],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._new_child = new_child
        self._children: dict[tuple[str, ...], CounterTally | HistogramTally] = {}
        (REGISTRY if registry is None else registry).register(self)

    def _child(self, values: tuple[str, ...]) -> CounterTally | HistogramTally:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes the labels {self.labelnames}, not {values}")
            # exposed as text, as prometheus_client's labels() does: an enum member and its text are one child
            text = tuple(str(v) for v in values)
            child = self._children.get(text) or self._children.setdefault(text, self._new_child())
            self._children[values] = child
        return child

    def _distinct(self) -> list[tuple[tuple[str, ...], CounterTally | HistogramTally]]:
        """Each child once, under its label values as text (an enum member and its text share one)."""
        return list(
            {
                id(child): (tuple(str(v) for v in values), child) for values, child in list(self._children.items())
            }.values()
        )

    def describe(self) -> Iterator[Metric]:
        yield from self.collect()


class CounterFamily(_Family):
    """A labelled counter whose children are `CounterTally`s (exposed as `<name>_total`)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry | None = None
    ) -> None:
        super().__init__(name, documentation, labelnames, CounterTally, registry)

    def labels(self, *values: str) -> CounterTally:
        return self._child(values)  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._distinct():
            family.add_metric(values, child.value)  # type: ignore[union-attr]
        yield family


class HistogramFamily(_Family):
    """A labelled histogram whose children are `HistogramTally`s over `buckets` (upper bounds, rising)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: bucket bounds must rise: {buckets}")
        super().__init__(name, documentation, labelnames, lambda: HistogramTally(self.bounds), registry)

    def labels(self, *values: str) -> HistogramTally:
        return self._child(values)  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._distinct():
            counts, total = list(child.counts), child.sum  # type: ignore[union-attr]
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(values, buckets, total)
        yield family
