"""A record's retries: tenacity takes over after a failed first attempt made without it, as one loop would.

The connector makes each record's first attempt without tenacity and hands a failure to tenacity as
attempt 1 (`DeliveryWorker._retry`). These cases hold that to what a single tenacity loop around every
attempt did: the same number of calls in all, the time budget counted from the first attempt, the first
wait taken from the first failure (its Retry-After), a success ending the loop, and a refusal (the
circuit is open) passed through at once.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from tenacity import RetryCallState, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_fixed

from consumers.delivery.policy import BreakerOpen, Judgement, RetryAfterOrBackoff, TransientFailure, Verdict
from consumers.delivery.worker import DeliveryWorker

EVENT: Any = object()


def retrying(outcomes: list[BaseException | None], *, attempts: int = 4, budget: float = 8.0) -> SimpleNamespace:
    """A stand-in for the worker's retry state: its attempts give `outcomes` in turn (None: accepted)."""
    waits: list[float] = []
    calls: list[int] = []

    async def attempt(event: Any) -> tuple[Judgement, Any]:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome
        return Judgement(Verdict.ACCEPTED), {"ok": True}

    def count_retry(state: RetryCallState) -> None:
        waits.append(state.upcoming_sleep)

    return SimpleNamespace(
        _retry_stop=stop_after_attempt(attempts) | stop_after_delay(budget),
        _retry_wait=RetryAfterOrBackoff(wait_fixed(0), cap=0.05),
        _count_retry=count_retry,
        _attempt=attempt,
        calls=calls,
        waits=waits,
    )


def retry(worker: SimpleNamespace, first: TransientFailure, tried_at: float | None = None) -> Any:
    started = time.monotonic() if tried_at is None else tried_at
    return asyncio.run(DeliveryWorker._retry(worker, EVENT, first, started))  # type: ignore[arg-type]


def test_max_attempts_counts_the_first_attempt_made_before_tenacity() -> None:
    worker = retrying([TransientFailure("again")] * 10, attempts=4)
    with pytest.raises(TransientFailure, match="again"):
        retry(worker, TransientFailure("first"))
    assert len(worker.calls) == 3 and len(worker.waits) == 3


def test_the_time_budget_counts_from_the_first_attempt() -> None:
    worker = retrying([TransientFailure("again")] * 10, budget=8.0)
    with pytest.raises(TransientFailure, match="first"):
        retry(worker, TransientFailure("first"), tried_at=time.monotonic() - 9)
    assert worker.calls == []  # the first attempt already took the whole budget


def test_the_first_wait_honours_the_first_failures_retry_after() -> None:
    worker = retrying([None])
    judgement, body = retry(worker, TransientFailure("throttled", retry_after=0.03))
    assert judgement.verdict is Verdict.ACCEPTED and body == {"ok": True}
    assert worker.waits == [0.03] and len(worker.calls) == 1


def test_an_open_circuit_ends_the_retries_at_once() -> None:
    worker = retrying([BreakerOpen("open"), None])
    with pytest.raises(BreakerOpen):
        retry(worker, TransientFailure("first"))
    assert len(worker.calls) == 1
