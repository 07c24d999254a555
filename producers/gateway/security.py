"""Webhook signatures and API keys: pure checks with constant-time comparison.

Three signature schemes are accepted, per source (configured in `GatewaySettings.webhook_schemes`):
- `toggl`: `X-Webhook-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` (Toggl Track).
- `clockify`: `Clockify-Signature: <the webhook's token>`. Clockify sends a static per-webhook token, not
  an HMAC, so it proves the sender knows the token but not that the body is unaltered, and a captured
  delivery can be replayed: serve the gateway over HTTPS only, and rotate the token (re-create the
  webhook) if it leaks.
- `timestamped`: `Backbone-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, the
  Stripe scheme. The timestamp is signed, so a captured delivery cannot be replayed after the tolerance
  window; several `v1=` values may be present while a secret is being rotated.
Every comparison uses `hmac.compare_digest`, so timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Scheme = Literal["toggl", "timestamped", "clockify"]
TOGGL_HEADER = "x-webhook-signature-256"
CLOCKIFY_HEADER = "clockify-signature"
TIMESTAMPED_HEADER = "backbone-signature"
MAX_TIMESTAMP_DIGITS = 12
"""Unix seconds have 10 digits until the year 2286; a longer `t=` is refused, not turned into a float."""


class SignatureError(Exception):
    """The request is not signed by the holder of the secret (the reason is for logs, not for callers)."""


def hmac_hex(secret: str, message: bytes) -> str:
    # The one-shot `hmac.digest` runs in C; `hmac.new(...).hexdigest()` builds two hash objects in Python.
    return hmac.digest(secret.encode(), message, "sha256").hex()


def toggl_signature(secret: str, body: bytes) -> str:
    """The header value Toggl sends for `body`."""
    return f"sha256={hmac_hex(secret, body)}"


def timestamped_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `Backbone-Signature` value a sender computes for `body` at `timestamp`."""
    return f"t={timestamp},v1={hmac_hex(secret, str(timestamp).encode() + b'.' + body)}"


def verify_toggl(body: bytes, header: str | None, secret: str) -> None:
    if not header:
        raise SignatureError("missing X-Webhook-Signature-256")
    scheme, _, signature = header.strip().partition("=")
    if scheme.lower() != "sha256" or not signature:
        raise SignatureError("signature is not sha256=<hex>")
    if not hmac.compare_digest(signature.lower().encode(), hmac_hex(secret, body).encode()):
        raise SignatureError("signature does not match the body")


def verify_clockify(header: str | None, secret: str) -> None:
    if not header:
        raise SignatureError("missing Clockify-Signature")
    if not hmac.compare_digest(header.strip().encode(), secret.encode()):
        raise SignatureError("Clockify-Signature is not this webhook's token")


def verify_timestamped(body: bytes, header: str | None, secret: str, *, now: float, tolerance_s: float) -> None:
    if not header:
        raise SignatureError("missing Backbone-Signature")
    timestamp, candidates = _parse_timestamped(header)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is outside the {tolerance_s:.0f}s tolerance")
    expected = hmac_hex(secret, str(timestamp).encode() + b"." + body).encode()
    # Compare against every candidate (no early exit) so timing does not tell which one was close.
    matches = [hmac.compare_digest(c.lower().encode(), expected) for c in candidates]
    if not any(matches):
        raise SignatureError("signature does not match the body and timestamp")


def _parse_timestamped(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= MAX_TIMESTAMP_DIGITS:
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("signature header needs t=<unix seconds>,v1=<hex>")
    return timestamp, candidates


def verify(
    scheme: Scheme, body: bytes, headers: Mapping[str, str], secret: str, *, now: float, tolerance_s: float
) -> None:
    """Raise `SignatureError` unless `headers` carry a valid signature of `body` under `scheme`."""
    if scheme == "toggl":
        verify_toggl(body, headers.get(TOGGL_HEADER), secret)
    elif scheme == "clockify":
        verify_clockify(headers.get(CLOCKIFY_HEADER), secret)
    else:
        verify_timestamped(body, headers.get(TIMESTAMPED_HEADER), secret, now=now, tolerance_s=tolerance_s)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the configured name of the API key (never the key itself)."""

    name: str


def authenticate(presented: str | None, keys: Mapping[str, str]) -> Principal | None:
    """The principal whose key equals `presented`; every key is compared, so timing says nothing."""
    if not presented:
        return None
    found: str | None = None
    for name, key in keys.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = name
    return Principal(found) if found else None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """An API key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return headers.get("x-api-key") or None
