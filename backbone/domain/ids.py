"""Deterministic ids: the same inputs always give the same id, so replays and re-emits are harmless.

Every id here is a UUIDv5 in backbone's own namespace over a canonical text of its inputs. Pure
functions over canonical models; nothing here touches Kafka or Avro.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal
from functools import cache
from typing import Any

import orjson

from backbone.domain.models import DECIMAL_SCALE, ContractVersion, Event
from backbone.domain.money import ZERO

BACKBONE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://backbone.dev/ids")
"""Root namespace of every id backbone derives. Changing it changes every id: never do that."""

_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)


def derive_event_id(event: Event) -> str:
    """The id of an event that arrived without one: UUIDv5 over its type and canonical payload.

    The payload is everything but `event_id`, as it will be published (so fill `correlation_id`
    first). Decimals count at the wire's scale, so "150.0" and "150.00" give the same id.
    """
    return event_id_from_payload(event.event_type, _payload(event))


def _payload(event: Event) -> dict[str, Any]:
    """The python-mode dump without `event_id`, read straight from the instance when that is the same.

    For an event whose values are all scalars (every time entry and approval, the core's hot path) the
    python-mode dump *is* the instance's field dict: serializers only act in JSON mode. Nested models
    and tuples of them (rate cards) still go through `model_dump`, which turns them into dicts.
    """
    if isinstance(event, _NESTED_EVENTS):
        return event.model_dump(mode="python", exclude={"event_id"})
    payload = dict(event.__dict__)  # a C-level copy; cheaper than a comprehension that skips event_id
    del payload["event_id"]
    return payload


_NESTED_EVENTS = (ContractVersion,)
"""Events holding models (the rate card); tests/unit/test_ids.py checks every other one is flat."""


ADDED_LATER = frozenset({"invoiced_at_source", "source_invoice_id"})
"""Optional fields added to the contract after events were first published. Left empty (None) they
are not part of the id, so an event re-emitted after the upgrade keeps the id it had before."""


def event_id_from_payload(event_type: str, payload: dict[str, Any]) -> str:
    """`derive_event_id` over an event's python-mode dump (without `event_id`), for callers that
    adjust the payload before the event exists, like the emitter filling in defaults."""
    left_empty = [name for name in ADDED_LATER if payload.get(name, 0) is None]
    if left_empty:
        payload = dict(payload)  # a C-level copy: the caller's dict stays as it was
        for name in left_empty:
            del payload[name]
    return event_id_from_trimmed(event_type, payload)


def event_id_from_trimmed(event_type: str, payload: dict[str, Any]) -> str:
    """`event_id_from_payload` of a payload that already leaves out its empty `ADDED_LATER` fields
    (the compiled line writers build it so, sparing a copy per event)."""
    # the bytes of `canonical_payload`, without a decode and encode
    return _uuid5_of(_sha1(_type_prefix(event_type) + _canonical_bytes(payload)).hexdigest())


def event_id_from_sorted(event_type: str, payload: dict[str, Any]) -> str:
    """`event_id_from_trimmed` of a flat payload (no nested dicts) whose keys are already in sorted order,
    so orjson writes them as they come instead of sorting them (a third of the id's cost; the compiled
    line writers build the payload so)."""
    return _uuid5_of(_sha1(_type_prefix(event_type) + orjson.dumps(payload, default=_decimal_text)).hexdigest())


@cache
def _type_prefix(event_type: str) -> bytes:
    """What an event id's SHA-1 starts with: the namespace and the event type's line. Hashed again with each
    payload: ~0.5 µs cheaper than copying a SHA-1 state that has it (OpenSSL copies a context by
    allocating one; docs/benchmarks.md, "Eighth session")."""
    return BACKBONE_NAMESPACE.bytes + f"{event_type}\n".encode()


def _sha1(data: bytes) -> Any:
    return hashlib.sha1(data, usedforsecurity=False)


def canonical_payload(payload: dict[str, Any]) -> str:
    """Canonical JSON of a payload: sorted keys, no spaces, decimals at scale 4, instants in UTC."""
    return _canonical_bytes(payload).decode("utf-8")


def _canonical_bytes(payload: dict[str, Any]) -> bytes:
    # orjson writes dates, instants (UTC, "+00:00") and enums itself; decimals need the wire's scale.
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=_decimal_text)


def _decimal_text(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value.quantize(_QUANTUM), "f")
    raise TypeError(f"cannot put {type(value).__name__} into a canonical payload")


# --- ids of what the billing core emits (billing-rules.md §9) -------------------------------------
# A delta is identified by the transition it records: the entry, its place in the entry's sequence of
# deltas and the before/after figures. The sequence number keeps a "bill, reverse, bill again" history
# from reusing the first id; the rest keeps two different histories from sharing one.


def _uuid(kind: str, *parts: object) -> str:
    """UUIDv5 over `kind` and the parts, one per line: the text every core id is derived from."""
    return _uuid5_text("\n".join([kind, *(_part(p) for p in parts)]))


def _part(value: object) -> str:
    if isinstance(value, Decimal):
        return _decimal(value)
    return "" if value is None else str(value)


def _decimal(value: Decimal) -> str:
    """A decimal at the wire's scale: the text of `value.quantize(_QUANTUM)` in one step (both round half
    even in the default context, and the core's amounts never have more than 4 places to round anyway)."""
    return format(value, ".4f")


# --- UUIDv5 without the uuid module's detour through a 128-bit int --------------------------------

_NAMESPACE_SHA1 = hashlib.sha1(BACKBONE_NAMESPACE.bytes, usedforsecurity=False)
"""SHA-1 state after the namespace bytes; each id copies it instead of hashing the namespace again."""

_PREFIX_SHA1 = {
    kind: hashlib.sha1(BACKBONE_NAMESPACE.bytes + f"{kind}\n".encode(), usedforsecurity=False)
    for kind in ("invoice-candidate", "posting-request")
}
"""SHA-1 state after the namespace and the first line of the two ids the core derives per entry."""


def _uuid5_text(name: str, *, prefix: str = "") -> str:
    """`str(uuid.uuid5(BACKBONE_NAMESPACE, prefix + "\\n" + name))` (or of `name` alone when no prefix is
    given), character for character; tests/unit/test_ids.py checks it against the uuid module."""
    sha = (_PREFIX_SHA1[prefix] if prefix else _NAMESPACE_SHA1).copy()
    sha.update(name.encode("utf-8"))
    return _uuid5_of(sha.hexdigest())


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The variant digit of a UUID whose SHA-1 hex digit 16 is the key (a lookup instead of parsing it)."""


def _uuid5_of(digest: str) -> str:
    """The UUID text of a SHA-1 hex digest: its first 32 digits with the version digit set to 5 and the
    variant's two high bits to 10 (RFC 4122), so digit 16 becomes one of 8, 9, a, b."""
    variant = _VARIANT[digest[16]]
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:32]}"


# The two ids below are written out as f-strings rather than through `_uuid`: they are derived for every
# entry, and the text is the same `_uuid` would build (None never occurs in them; `!s` is `_part`'s str and
# `:.4f` is `_decimal`), hashed from the SHA-1 state after their first line as `_uuid5_text` would.

_ZERO_TEXT = format(ZERO, ".4f")
"""The text of the amount every ledger starts at, "0.0000". An entry's first candidate and first two postings
count from that very object (`ZERO`), so their ids take the text as it is: formatting a Decimal costs ~2,700
machine instructions (callgrind), three of the six per entry (docs/core-performance.md, "Thirteenth session").
Any other zero (a "0.00" or a "-0.00" a sum came to) is formatted as before."""

_CANDIDATE_SHA1 = _PREFIX_SHA1["invoice-candidate"]
_POSTING_SHA1 = _PREFIX_SHA1["posting-request"]


def candidate_id(
    *,
    time_entry_id: str,
    project_id: str,
    sequence: int,
    kind: str,
    revision: int,
    contract_id: str,
    contract_version: int,
    billed_before: Decimal,
    amount: Decimal,
) -> str:
    """Id of the `sequence`-th invoice candidate of an entry in a project's book."""
    before = _ZERO_TEXT if billed_before is ZERO else f"{billed_before:.4f}"
    sha = _CANDIDATE_SHA1.copy()
    sha.update(
        f"{time_entry_id!s}\n{project_id!s}\n{sequence!s}\n{kind!s}\n{revision!s}\n{contract_id!s}\n"
        f"{contract_version!s}\n{before}\n{amount:.4f}".encode()
    )
    digest = sha.hexdigest()  # `_uuid5_of`, spelt out: three ids per entry, a call each was measurable
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{_VARIANT[digest[16]]}{digest[17:20]}-{digest[20:32]}"


def posting_id(
    *,
    posting_type: str,
    time_entry_id: str,
    project_id: str,
    sequence: int,
    revision: int,
    posted_before: Decimal,
    amount: Decimal,
) -> str:
    """Id of the `sequence`-th COST or REVENUE posting request of an entry in a project's book."""
    before = _ZERO_TEXT if posted_before is ZERO else f"{posted_before:.4f}"
    sha = _POSTING_SHA1.copy()
    sha.update(
        f"{posting_type!s}\n{time_entry_id!s}\n{project_id!s}\n{sequence!s}\n{revision!s}\n"
        f"{before}\n{amount:.4f}".encode()
    )
    digest = sha.hexdigest()  # `_uuid5_of`, spelt out (see `candidate_id`)
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{_VARIANT[digest[16]]}{digest[17:20]}-{digest[20:32]}"


def exception_id(*, kind: str, subject_type: str, subject_id: str) -> str:
    """Id of a business exception: one per kind and subject, so its latest state replaces the earlier."""
    return _uuid("exception", kind, subject_type, subject_id)
