"""The faust codecs of the topology, registered in one place on top of `backbone.serde` and pydantic.

`backbone-avro` writes canonical events in the Confluent wire format through the schema registry
(the serde's `to_record` seam; never a hand-built Avro dict). The state codecs keep changelog values
as the domain's own JSON (`EntryState`, `Ledger`), so a table is exactly the pydantic model.
Input topics are read as raw bytes and decoded in the agents, where a bad record can be dead-lettered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from faust.serializers import codecs
from pydantic import BaseModel, TypeAdapter

from backbone.domain.billing import Ledger
from backbone.domain.entries import EntryState
from backbone.domain.models import Event
from backbone.serde import SerdeCache
from topology import catalog

AVRO = "backbone-avro"
ENTRY_STATE = "backbone-entry-state"
LEDGER = "backbone-ledger"
OPENED_AT = "backbone-opened-at"


class AvroEventCodec(codecs.Codec):
    """Canonical event -> Confluent-framed Avro for the event's catalog topic (encode only)."""

    def __init__(self, serdes: SerdeCache) -> None:
        super().__init__()
        self.serdes = serdes

    def _dumps(self, event: Any) -> bytes:
        assert isinstance(event, Event)
        return self.serdes.for_topic(catalog.topic_for(event.event_type)).encode_value(event)

    def _loads(self, data: bytes) -> Any:
        raise NotImplementedError("inputs are decoded in the agents, where bad records can be dead-lettered")


class ModelCodec(codecs.Codec):
    """A pydantic model as its JSON."""

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__()
        self.model = model

    def _dumps(self, value: Any) -> bytes:
        return value.model_dump_json().encode()  # type: ignore[no-any-return]

    def _loads(self, data: bytes) -> Any:
        return self.model.model_validate_json(data)


class OpenedAtCodec(codecs.Codec):
    _adapter = TypeAdapter(datetime | None)

    def _dumps(self, value: Any) -> bytes:
        return self._adapter.dump_json(value)

    def _loads(self, data: bytes) -> Any:
        return self._adapter.validate_json(data)


def register_codecs(serdes: SerdeCache) -> None:
    """Register every codec the topology names (idempotent; the Avro one follows the latest registry)."""
    codecs.register(AVRO, AvroEventCodec(serdes))
    codecs.register(ENTRY_STATE, ModelCodec(EntryState))
    codecs.register(LEDGER, ModelCodec(Ledger))
    codecs.register(OPENED_AT, OpenedAtCodec())
