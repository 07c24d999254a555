"""Per-caller rate limits and idempotency records: bounded, in-process, pure Python.

`RateLimiter` is a token bucket per key (rate per second, burst); it answers how long to wait when a
request is refused, which becomes `Retry-After`. It forgets idle keys so a flood of distinct keys cannot
grow it without bound. `IdempotencyStore` keeps the first response per (caller, idempotency key) with
the body's hash, like Stripe: the same key and body get the same response again, a different body is
an error, and a request arriving while the first is still in flight waits for its result. It holds at
most `max_keys` records and `max_bytes` of stored responses (least recently used go first) for at most
`ttl_s`; keys are kept as SHA-256 digests, so a long key costs no more memory than a short one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, *, clock: Clock = time.monotonic, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self._clock, self._max_keys = rate_per_s, burst, clock, max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is available."""
        now = self._clock()
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def wait(self, key: str) -> float:
        """What `acquire` would answer, without taking a token (0 for a key never seen)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (self._clock() - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]
    pending: Callable[[], Awaitable[None]] | None = None
    """Waits for the deliveries not confirmed when the response was given (a 503): the request stays in
    flight until they settle."""
    accepted: dict[str, Any] | None = None
    """The answer to give once `pending` is delivered."""


RECORD_OVERHEAD = 400
"""Bytes a record costs besides its response's ids (digests, future, dict slots), roughly."""


@dataclass(slots=True)
class _Record:
    """One idempotency key's request: its answer once it has one. The future duplicates wait on is made
    only when one asks (`outcome`): most keys are never repeated, and a future per record was an object
    for every collection to walk, up to `max_keys` of them."""

    body_hash: bytes
    created: float
    size: int = RECORD_OVERHEAD
    response: StoredResponse | None = None
    waiting: asyncio.Future[StoredResponse] | None = None

    def outcome(self) -> asyncio.Future[StoredResponse]:
        """The answer, now or once the first request has it (`_Abandoned` if it failed transiently)."""
        if self.waiting is None:
            self.waiting = asyncio.get_running_loop().create_future()
            if self.response is not None:
                self.waiting.set_result(self.response)
        return self.waiting


class IdempotencyConflict(Exception):
    """The key was used before with a different body."""


class IdempotencyStore:
    def __init__(
        self, *, ttl_s: float, max_keys: int, max_bytes: int = 64 * 1024 * 1024, clock: Clock = time.monotonic
    ) -> None:
        self._ttl, self._max, self._max_bytes, self._clock = ttl_s, max_keys, max_bytes, clock
        self._records: OrderedDict[bytes, _Record] = OrderedDict()
        self._bytes = 0

    def begin(self, key: str, body_hash: bytes) -> asyncio.Future[StoredResponse] | None:
        """None when this request is the first (it must `finish` or `abandon`); else the first's future."""
        self._expire()
        digest = _digest(key)
        record = self._records.get(digest)
        if record is None:
            self._records[digest] = _Record(body_hash, self._clock())
            self._bytes += RECORD_OVERHEAD
            self._evict()
            return None
        if record.body_hash != body_hash:
            raise IdempotencyConflict(key)
        self._records.move_to_end(digest)
        return record.outcome()

    def finish(self, key: str, response: StoredResponse) -> None:
        record = self._records.get(_digest(key))
        if record is not None and record.response is None:
            record.response = response
            if record.waiting is not None and not record.waiting.done():
                record.waiting.set_result(response)
            added = sum(len(i) for i in response.body.get("event_ids", ())) + len(str(response.body.get("error", "")))
            record.size += added
            self._bytes += added
            self._evict()

    def abandon(self, key: str) -> None:
        """Forget a request that failed transiently (503) so a retry with the same key runs again."""
        record = self._records.pop(_digest(key), None)
        if record is None:
            return
        self._bytes -= record.size
        if record.waiting is not None and not record.waiting.done():
            record.waiting.set_exception(_Abandoned())
            record.waiting.exception()  # mark retrieved: waiters re-run, nobody else needs it

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes(self) -> int:
        """Approximate memory held by the records."""
        return self._bytes

    def _evict(self) -> None:
        while len(self._records) > self._max or (self._bytes > self._max_bytes and len(self._records) > 1):
            _, record = self._records.popitem(last=False)
            self._bytes -= record.size

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._records:
            key, record = next(iter(self._records.items()))
            if record.created >= cutoff or record.response is None:
                break
            del self._records[key]
            self._bytes -= record.size


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class _Abandoned(Exception):
    """The first request with this key failed transiently; a waiting duplicate must run itself."""


ABANDONED = _Abandoned
