"""When a worker commits its open transaction: early when no input waits, late under full load.

A transaction's age is most of an output's latency when records trickle in, and its commit most of the
overhead per record when they pour in; `backbone.streams.loop.commit_due` decides between the two from
whether the last batch was full.
"""

from __future__ import annotations

import pytest

from backbone.settings import StreamsSettings
from backbone.streams.loop import commit_due, open_wait_ms

STREAMS = StreamsSettings(commit_interval_ms=100, commit_records=20_000, commit_idle_ms=25)


@pytest.mark.parametrize("waiting", [False, True])
def test_a_transaction_never_stays_open_past_the_interval_or_the_record_limit(waiting: bool) -> None:
    assert commit_due(STREAMS, 100.0, 1, waiting)
    assert commit_due(STREAMS, 1.0, 20_000, waiting)


def test_with_nothing_waiting_the_transaction_commits_once_it_is_idle_ms_old() -> None:
    assert not commit_due(STREAMS, 24.9, 10, waiting=False)
    assert commit_due(STREAMS, 25.0, 10, waiting=False)


def test_with_full_batches_waiting_the_transaction_stays_open_up_to_the_interval() -> None:
    assert not commit_due(STREAMS, 25.0, 2_000, waiting=True)
    assert not commit_due(STREAMS, 99.9, 8_000, waiting=True)


def test_an_idle_ms_of_zero_keeps_every_transaction_open_to_the_interval() -> None:
    never_early = StreamsSettings(commit_interval_ms=100, commit_idle_ms=0)
    assert not commit_due(never_early, 99.0, 10, waiting=False)
    assert commit_due(never_early, 100.0, 10, waiting=False)


def test_an_open_transaction_waits_for_input_until_an_early_commit_is_due_and_never_past_the_interval() -> None:
    assert open_wait_ms(STREAMS) == 25
    assert open_wait_ms(StreamsSettings(commit_interval_ms=100, commit_idle_ms=0)) == 100
    assert open_wait_ms(StreamsSettings(commit_interval_ms=100, commit_idle_ms=500)) == 100
