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

import orjson

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
"""Bytes a record costs besides its response's ids (digests, tuple, dict slots), roughly."""

_Record = tuple[bytes, float, int, bytes | StoredResponse | None]
"""One idempotency key's request: the body's hash, when it began, its size in bytes, and its answer once
it has one (status and JSON body in bytes, `_frozen`). A tuple of bytes and numbers, which the garbage
collector stops tracking: records of tracked objects (a record, its response, the body's dict and list,
up to `max_keys` of them) made every full collection walk them all, a pause of 200-300 ms of CPU with
the store at its 100,000 records, in the middle of whichever requests were being answered
(docs/gateway.md, "Eleventh session")."""


class IdempotencyConflict(Exception):
    """The key was used before with a different body."""


class IdempotencyStore:
    def __init__(
        self, *, ttl_s: float, max_keys: int, max_bytes: int = 64 * 1024 * 1024, clock: Clock = time.monotonic
    ) -> None:
        self._ttl, self._max, self._max_bytes, self._clock = ttl_s, max_keys, max_bytes, clock
        self._records: OrderedDict[bytes, _Record] = OrderedDict()
        # The future duplicates of a request still in flight wait on, made only when one comes: most keys
        # are never repeated.
        self._waiting: dict[bytes, asyncio.Future[StoredResponse]] = {}
        self._bytes = 0

    def begin(self, key: str, body_hash: bytes) -> asyncio.Future[StoredResponse] | None:
        """None when this request is the first (it must `finish` or `abandon`); else the first's future."""
        self._expire()
        digest = _digest(key)
        record = self._records.get(digest)
        if record is None:
            self._records[digest] = (body_hash, self._clock(), RECORD_OVERHEAD, None)
            self._bytes += RECORD_OVERHEAD
            self._evict()
            return None
        if record[0] != body_hash:
            raise IdempotencyConflict(key)
        self._records.move_to_end(digest)
        return self._outcome(digest, record[3])

    def finish(self, key: str, response: StoredResponse) -> None:
        digest = _digest(key)
        record = self._records.get(digest)
        if record is not None and record[3] is None:
            waiting = self._waiting.pop(digest, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(response)
            added = sum(len(i) for i in response.body.get("event_ids", ())) + len(str(response.body.get("error", "")))
            self._records[digest] = (record[0], record[1], record[2] + added, _frozen(response))
            self._bytes += added
            self._evict()

    def abandon(self, key: str) -> None:
        """Forget a request that failed transiently (503) so a retry with the same key runs again."""
        digest = _digest(key)
        record = self._records.pop(digest, None)
        if record is None:
            return
        self._bytes -= record[2]
        waiting = self._waiting.pop(digest, None)
        if waiting is not None and not waiting.done():
            waiting.set_exception(_Abandoned())
            waiting.exception()  # mark retrieved: waiters re-run, nobody else needs it

    def _outcome(self, digest: bytes, answer: bytes | StoredResponse | None) -> asyncio.Future[StoredResponse]:
        """The answer, now or once the first request has it (`_Abandoned` if it failed transiently)."""
        if answer is None:
            waiting = self._waiting.get(digest)
            if waiting is None:
                waiting = self._waiting[digest] = asyncio.get_running_loop().create_future()
            return waiting
        done: asyncio.Future[StoredResponse] = asyncio.get_running_loop().create_future()
        done.set_result(_thawed(answer))
        return done

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes(self) -> int:
        """Approximate memory held by the records."""
        return self._bytes

    def _evict(self) -> None:
        while len(self._records) > self._max or (self._bytes > self._max_bytes and len(self._records) > 1):
            digest, record = self._records.popitem(last=False)
            self._bytes -= record[2]
            self._waiting.pop(digest, None)  # duplicates waiting for it time out, as before

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._records:
            key, record = next(iter(self._records.items()))
            if record[1] >= cutoff or record[3] is None:
                break
            del self._records[key]
            self._bytes -= record[2]


def _frozen(response: StoredResponse) -> bytes | StoredResponse:
    """An answer as a record keeps it: status and JSON body in bytes (what is sent is that JSON anyway);
    the answer itself in the rare case it is more than that (a pending delivery) or not JSON."""
    if response.pending is not None or response.accepted is not None:
        return response
    try:
        return response.status.to_bytes(2, "big") + orjson.dumps(response.body)
    except (TypeError, OverflowError):
        return response


def _thawed(answer: bytes | StoredResponse) -> StoredResponse:
    if isinstance(answer, StoredResponse):
        return answer
    return StoredResponse(int.from_bytes(answer[:2], "big"), orjson.loads(answer[2:]))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class _Abandoned(Exception):
    """The first request with this key failed transiently; a waiting duplicate must run itself."""


ABANDONED = _Abandoned
