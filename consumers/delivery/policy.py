"""How a delivery connector judges an answer and protects a system: classify, retry, break the circuit.

Pure code (no HTTP client, no Kafka), so the rules are unit-tested on their own:

- `classify` sorts one HTTP answer (or a transport error) into *accepted*, *rejected* (a permanent
  refusal with the system's code: the record becomes a REJECTED acknowledgment at once) or *transient*
  (timeouts, connection errors, 5xx, 408, 425, 429, and Stripe's 409 `idempotency_key_in_use`): worth
  another try, after the answer's `Retry-After` when it gives one.
- `RetryAfterOrBackoff` is the tenacity wait: `Retry-After` when the system asked for a pause
  (capped), else exponential backoff with jitter.
- `CircuitBreaker` is one per system: it opens after `failure_threshold` transient failures in a row
  that say the *system* is unwell (no connection, no answer in time, 502/503/504, 429), or that hit at
  least two different records. A 500 that only one record ever gets is that record's problem (a
  poisoned record): it goes through the retry topic to the DLQ and must not stop everything else. The
  breaker refuses calls while open, lets a single probe through after `reset_timeout` (half-open) and
  closes again when the probe succeeds; callers that arrive during the probe wait for its outcome.
docs/delivery.md explains how the worker uses them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

from tenacity import RetryCallState
from tenacity.wait import wait_base

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({"idempotency_key_in_use", "lock_timeout", "rate_limit"})
SYSTEMIC_STATUSES = frozenset({429, 502, 503, 504})
"""Answers about the system as a whole (down, overloaded, behind a failing gateway), whatever the record."""


class Verdict(Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class Judgement:
    """What one answer means: the verdict, the system's code and message, and how long it asked us to wait."""

    verdict: Verdict
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None


class TransientFailure(Exception):
    """One attempt failed for a reason that may pass (tenacity retries exactly these)."""

    def __init__(self, reason: str, retry_after: float | None = None, *, systemic: bool = True) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.systemic = systemic


class BreakerOpen(Exception):
    """The system's circuit is open: no call was made; the record waits for the system."""


def classify(status: int, code: str | None, message: str | None, retry_after: str | None) -> Judgement:
    """The verdict on an HTTP answer: 2xx accepted, transient statuses and codes retried, other 4xx rejected."""
    if 200 <= status < 300:
        return Judgement(Verdict.ACCEPTED)
    if status in TRANSIENT_STATUSES or status >= 500 or (code or "").lower() in TRANSIENT_CODES:
        return Judgement(Verdict.TRANSIENT, code, message, parse_retry_after(retry_after))
    return Judgement(Verdict.REJECTED, code or f"HTTP_{status}", message or f"refused with HTTP {status}")


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now())
    except (TypeError, ValueError):
        return None


class RetryAfterOrBackoff(wait_base):
    """tenacity wait: the system's `Retry-After` (at most `cap` seconds), else the fallback backoff."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, TransientFailure) and error.retry_after is not None:
            return min(self.cap, error.retry_after)
        return float(self.fallback(retry_state))


class BreakerState(Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """One system's circuit: CLOSED → OPEN after repeated failures → HALF_OPEN probe → CLOSED (or OPEN again).

    Used from one asyncio loop; `clock` is injectable for tests. `on_change(old, new)` is told of every
    transition (metrics and a log line).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], Any] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._failing: set[str] = set()
        self._systemic = False
        self.opened_at = 0.0
        self._probe: asyncio.Future[bool] | None = None

    @property
    def retry_at(self) -> float:
        """When an open circuit lets its next probe through (clock time)."""
        return self.opened_at + self.reset_timeout

    def admits(self) -> bool:
        """Would a call be let through now (without waiting)? Moves OPEN to HALF_OPEN when its time has come."""
        if self.state is BreakerState.OPEN and self.clock() >= self.retry_at:
            self._move(BreakerState.HALF_OPEN)
        return self.state is not BreakerState.OPEN

    async def enter(self) -> bool:
        """Ask to call the system: True for the half-open probe (report its outcome), False for a normal call.

        Raises `BreakerOpen` while open, or when the probe this call waited for failed.
        """
        if not self.admits():
            raise BreakerOpen(f"circuit of {self.name} is open")
        if self.state is BreakerState.CLOSED:
            return False
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_future()
            return True
        if not await asyncio.shield(self._probe):
            raise BreakerOpen(f"circuit of {self.name} is open (the probe failed)")
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self._failing.clear()
        self._systemic = False
        if self.state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)
        self._settle_probe(True)

    def failed(self, subject: str = "", *, systemic: bool = True) -> None:
        """A transient failure of a call about `subject` (a record id); `systemic` when it says the system is unwell."""
        self.failures += 1
        self._failing.add(subject)
        self._systemic = self._systemic or systemic
        widespread = self._systemic or len(self._failing) >= min(2, self.failure_threshold)
        repeated = self.failures >= self.failure_threshold and widespread
        if self.state is BreakerState.HALF_OPEN or (self.state is BreakerState.CLOSED and repeated):
            self.opened_at = self.clock()
            self._move(BreakerState.OPEN)
        self._settle_probe(False)

    def _settle_probe(self, ok: bool) -> None:
        probe, self._probe = self._probe, None
        if probe is not None and not probe.done():
            probe.set_result(ok)

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if self.on_change is not None and old is not new:
            self.on_change(old, new)
