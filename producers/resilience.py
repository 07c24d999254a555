"""Retries and circuit breakers for calls to external systems (reliability.md, "Retries").

A transient failure (timeout, connection error, 408, 429, 5xx) is retried with exponential backoff and
full jitter, a bounded number of times; a `Retry-After` the server sends is honoured (up to a cap, so a
misbehaving server cannot park the poller for a day). Any other 4xx is permanent: retrying a bad token
or a wrong account id only hammers the API, so it raises `PermanentSourceError` at once with a hint.

`CircuitBreaker` counts polls that failed after their retries; past a threshold it opens and the source
is left alone until `reset_after_s` has passed, then one trial poll decides (half-open): success closes
it, failure opens it again. Clocks, randomness and waiting are injected so tests need no sleeps.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from backbone.errors import BackboneError

log = structlog.get_logger("resilience")

TRANSIENT_STATUSES = frozenset({408, 425, 429})
PERMANENT_HINTS: Mapping[int, str] = {
    401: "the token is wrong or revoked: set a valid one and restart",
    403: "the token lacks access to this account/workspace: check the account or workspace id and its rights",
    404: "the base URL, account id or workspace id is wrong: fix the setting and restart",
}


class TransientSourceError(BackboneError):
    """The source failed in a way that may pass (timeout, 5xx, 429); `retry_after` when it said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSourceError(BackboneError):
    """The source refused the request for a reason retrying cannot fix (bad token, unknown account)."""

    def __init__(self, message: str, *, status: int, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class StopRequested(Exception):
    """The process was asked to stop while waiting to retry."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0
    max_retry_after_s: float = 300.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed `attempt` (1-based): full jitter, at least what the server asked."""
        backoff = rand() * min(self.max_s, self.base_s * 2 ** (attempt - 1))
        if retry_after is None:
            return backoff
        return min(max(backoff, retry_after), self.max_retry_after_s)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError):
        return None


def check_response(source: str, response: httpx.Response, now: float) -> None:
    """Raise the transient or permanent error a non-2xx response means."""
    status = response.status_code
    if status < 400:
        return
    where = f"{source} API answered {status} for {response.request.url.path}"
    if status in TRANSIENT_STATUSES or status >= 500:
        raise TransientSourceError(where, retry_after=parse_retry_after(response.headers.get("retry-after"), now))
    hint = PERMANENT_HINTS.get(status, "the request was refused; check the source's settings and restart")
    raise PermanentSourceError(where, status=status, hint=hint)


class ResilientClient:
    """An `httpx.Client` stand-in for pollers whose `get` retries transient failures by a `RetryPolicy`.

    `wait(seconds)` waits and returns True when the process should stop instead (`threading.Event.wait`).
    """

    def __init__(
        self,
        client: httpx.Client,
        policy: RetryPolicy,
        *,
        source: str,
        wait: Callable[[float], bool],
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[TransientSourceError], None] = lambda error: None,
    ) -> None:
        self.client, self.policy, self.source = client, policy, source
        self.wait, self.rand, self.on_retry = wait, rand, on_retry

    def get(self, url: str, *, params: Mapping[str, Any] | None = None) -> httpx.Response:
        for attempt in range(1, self.policy.attempts + 1):
            try:
                response = self.client.get(url, params=params)
                check_response(self.source, response, time.time())
                return response
            except httpx.TransportError as error:
                failure = TransientSourceError(f"{self.source} API unreachable: {error!r}")
            except TransientSourceError as error:
                failure = error
            if attempt == self.policy.attempts:
                raise failure
            self._pause(attempt, failure)
        raise AssertionError("unreachable: the loop returns or raises")

    def _pause(self, attempt: int, failure: TransientSourceError) -> None:
        delay = self.policy.delay(attempt, failure.retry_after, self.rand)
        self.on_retry(failure)
        log.warning("retrying", source=self.source, attempt=attempt, delay_s=round(delay, 3), error=str(failure))
        if self.wait(delay):
            raise StopRequested(f"stop requested while retrying {self.source}")


class BreakerState(enum.IntEnum):
    """Values of the breaker-state gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; lets one trial through after `reset_after_s`."""

    def __init__(
        self, *, failure_threshold: int = 3, reset_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold, self.reset_after_s, self.clock = failure_threshold, reset_after_s, clock
        self.failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        return self.state is not BreakerState.OPEN

    def record_success(self) -> None:
        self.failures, self._opened_at = 0, None

    def record_failure(self) -> None:
        self.failures += 1
        # A failed half-open trial re-opens at once: the source is still down.
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self._opened_at = self.clock()
