"""What the topology's stages tell each other on their internal topics (JSON, not part of the contract).

The entry stage hands `EntryChange`s to the project books; reference events travel to the books *with*
their payload, so a book never re-prices with reference data older than the event that asked it to.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from backbone.domain.entries import EntryChange
from backbone.domain.models import ContractVersion, Project, Worker


class Position(BaseModel):
    """Where a reference event was read (its key always lives in one partition, so offsets order it)."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class BookCommand(BaseModel):
    """One thing a project's book must do: price an entry change, or re-price after reference data."""

    change: EntryChange | None = None
    project: Project | None = None
    contract: ContractVersion | None = None
    worker: Worker | None = None
    position: Position | None = None
    moved_from: str | None = None
