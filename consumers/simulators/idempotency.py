"""Stripe's `Idempotency-Key` rules as pure functions: the request's fingerprint and what to do with it.

Stripe keeps the first response given for a key and replays it, status and body, to every later
request with that key; a later request whose endpoint or parameters differ gets 400
`idempotency_error`; a request arriving while the first is still running gets 409
`idempotency_key_in_use` (nothing is stored for it, so it can retry); keys expire after 24 hours and
are at most 255 characters. Requests refused before the endpoint begins (invalid parameters, an
injected outage) store nothing, so they can be retried with the same key. The billing simulator's
store applies these decisions inside one database transaction that holds the key's advisory lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

MAX_KEY_LENGTH = 255


class Decision(Enum):
    EXECUTE = "execute"
    """No live record for the key: run the request and store its response."""
    REPLAY = "replay"
    """Same key, same request: answer the stored response again."""
    MISMATCH = "mismatch"
    """Same key, different endpoint or parameters: 400 idempotency_error."""


@dataclass(frozen=True)
class StoredRequest:
    """What is kept for a key: the first request's fingerprint and when it was made."""

    fingerprint: str
    created_at: datetime


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    """A digest of the endpoint and its parameters, independent of their order and encoding (form or JSON)."""
    canonical = json.dumps([method.upper(), path, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def decide(stored: StoredRequest | None, request_fingerprint: str, now: datetime, ttl: timedelta) -> Decision:
    """What to do with a request carrying a key for which `stored` is kept (None: nothing kept)."""
    if stored is None or now - stored.created_at >= ttl:
        return Decision.EXECUTE
    if stored.fingerprint != request_fingerprint:
        return Decision.MISMATCH
    return Decision.REPLAY


def key_problem(key: str) -> str | None:
    """Why `key` cannot be used as an idempotency key, or None when it can."""
    if not key.strip():
        return "the Idempotency-Key header is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"an Idempotency-Key is at most {MAX_KEY_LENGTH} characters"
    return None
