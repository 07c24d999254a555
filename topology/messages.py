"""What the topology's stages tell each other on their internal topics (not part of the contract).

The entry stage hands `EntryChange`s to the project books; reference events travel to the books *with*
their payload, so a book never re-prices with reference data older than the event that asked it to; the
feedback stage hands them the `Refusal`s of the billing engine.

An entry change, one per approved entry and the hot path, travels as a compact orjson array headed by
a format number (`encode_change`); reference commands, a few per master-data change, as the
`BookCommand`'s pydantic JSON. `decode_command` reads both (a JSON object is the pydantic form, which
is also what records written before the compact form hold). A reference command also carries its
event's topic, offset and key in a record header (`reference_headers`): in a replay the books skip almost
every one of them (their books were priced with that master data already), and the header lets them
decide so without decoding the command (`reference_mark`); the value stays the pydantic JSON, so a
worker of any version reads any record. The time entry inside a change is rebuilt
without validation: the entry stage wrote it from an event it had validated, in the same transaction
scheme, and validating it again cost more than the rest of the hop (docs/topology-performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict

from backbone.domain.construction import construct
from backbone.domain.entries import EntryChange
from backbone.domain.feedback import Refusal
from backbone.domain.models import ContractVersion, Project, Worker
from topology.state_codecs import time_entry_from_values, time_entry_values

CHANGE_FORMAT = 1
"""`[CHANGE_FORMAT, time_entry_id, project_id, time entry values or null, correlation_id, occurred_at,
sequence]` (`sequence` came last and later: a change without it is change 0, always applied)."""

REFERENCE_HEADER = "backbone.reference"
"""Header of a reference command: `[topic, offset, key]` of its reference event, as orjson."""


class Position(BaseModel):
    """Where a reference event was read (its key always lives in one partition, so offsets order it)."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class BookCommand(BaseModel):
    """One thing a project's book must do: price an entry change, re-price after reference data, or take
    back a line the billing engine refused (`refusal`, from the feedback stage)."""

    change: EntryChange | None = None
    refusal: Refusal | None = None
    project: Project | None = None
    contract: ContractVersion | None = None
    worker: Worker | None = None
    position: Position | None = None
    moved_from: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceMark:
    """The reference event a reference command carries, as its header names it (`reference_headers`)."""

    topic: str
    offset: int
    key: str


def reference_headers(position: Position, key: str) -> list[tuple[str, bytes]]:
    """The headers of a reference command for the event of `key` read at `position`."""
    return [(REFERENCE_HEADER, orjson.dumps([position.topic, position.offset, key]))]


def reference_mark(headers: Sequence[tuple[str, bytes | None]] | None) -> ReferenceMark | None:
    """The reference event a command's headers name; None for a command without a well-formed one
    (every other command, and reference commands written before the header), which is then decoded."""
    for name, value in headers or ():
        if name == REFERENCE_HEADER and value is not None:
            try:
                topic, offset, key = orjson.loads(value)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                return None
            if isinstance(topic, str) and isinstance(offset, int) and isinstance(key, str):
                return ReferenceMark(topic, offset, key)
            return None
    return None


def encode_change(change: EntryChange) -> bytes:
    """The compact book command of one entry change."""
    return orjson.dumps(
        [
            CHANGE_FORMAT,
            change.time_entry_id,
            change.project_id,
            time_entry_values(change.entry),
            change.correlation_id,
            change.occurred_at,
            change.sequence,
        ]
    )


def encode_command(command: BookCommand) -> bytes:
    """A reference command (or any command) in its pydantic JSON form."""
    return command.model_dump_json().encode()


def decode_command(data: bytes) -> BookCommand:
    """A book command in either form; anything else raises (and is dead-lettered by the runtime)."""
    if data[:1] != b"[":
        return BookCommand.model_validate_json(data)
    values = orjson.loads(data)
    if len(values) not in (6, 7) or values[0] != CHANGE_FORMAT:
        raise ValueError(f"not a format-{CHANGE_FORMAT} book command: {bytes(data[:60])!r}")
    _, time_entry_id, project_id, entry, correlation_id, occurred_at = values[:6]
    change = construct(
        EntryChange,
        time_entry_id=time_entry_id,
        project_id=project_id,
        entry=time_entry_from_values(entry),
        correlation_id=correlation_id,
        occurred_at=datetime.fromisoformat(occurred_at),
        sequence=values[6] if len(values) > 6 else 0,  # a change written before changes were numbered: 0
    )
    return construct(
        BookCommand,
        change=change,
        refusal=None,
        project=None,
        contract=None,
        worker=None,
        position=None,
        moved_from=None,
    )
