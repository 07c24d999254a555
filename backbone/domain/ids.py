"""Deterministic ids: the same inputs always give the same id, so replays and re-emits are harmless.

Every id here is a UUIDv5 in backbone's own namespace over a canonical text of its inputs. Pure
functions over canonical models; nothing here touches Kafka or Avro.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import orjson

from backbone.domain.models import DECIMAL_SCALE, Event

BACKBONE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://backbone.dev/ids")
"""Root namespace of every id backbone derives. Changing it changes every id: never do that."""

_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)


def derive_event_id(event: Event) -> str:
    """The id of an event that arrived without one: UUIDv5 over its type and canonical payload.

    The payload is everything but `event_id`, as it will be published (so fill `correlation_id`
    first). Decimals count at the wire's scale, so "150.0" and "150.00" give the same id.
    """
    return event_id_from_payload(event.event_type, event.model_dump(mode="python", exclude={"event_id"}))


def event_id_from_payload(event_type: str, payload: dict[str, Any]) -> str:
    """`derive_event_id` over an event's python-mode dump (without `event_id`), for callers that
    adjust the payload before the event exists, like the emitter filling in defaults."""
    return str(uuid.uuid5(BACKBONE_NAMESPACE, f"{event_type}\n{canonical_payload(payload)}"))


def canonical_payload(payload: dict[str, Any]) -> str:
    """Canonical JSON of a payload: sorted keys, no spaces, decimals at scale 4, instants in UTC."""
    # orjson writes dates, instants (UTC, "+00:00") and enums itself; decimals need the wire's scale.
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=_decimal_text).decode("utf-8")


def _decimal_text(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value.quantize(_QUANTUM), "f")
    raise TypeError(f"cannot put {type(value).__name__} into a canonical payload")


# --- ids of what the billing core emits (billing-rules.md §9) -------------------------------------
# A delta is identified by the transition it records: the entry, its place in the entry's sequence of
# deltas and the before/after figures. The sequence number keeps a "bill, reverse, bill again" history
# from reusing the first id; the rest keeps two different histories from sharing one.


def _uuid(kind: str, *parts: object) -> str:
    return str(uuid.uuid5(BACKBONE_NAMESPACE, "\n".join([kind, *(_part(p) for p in parts)])))


def _part(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value.quantize(_QUANTUM), "f")
    return "" if value is None else str(value)


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
    return _uuid(
        "invoice-candidate",
        time_entry_id,
        project_id,
        sequence,
        kind,
        revision,
        contract_id,
        contract_version,
        billed_before,
        amount,
    )


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
    return _uuid("posting-request", posting_type, time_entry_id, project_id, sequence, revision, posted_before, amount)


def exception_id(*, kind: str, subject_type: str, subject_id: str) -> str:
    """Id of a business exception: one per kind and subject, so its latest state replaces the earlier."""
    return _uuid("exception", kind, subject_type, subject_id)
