"""Encoded events of an import, spooled while the file is validated and produced once it is whole.

`backbone import` used to read its file three times (inspect, validate, publish) and to build, validate
and encode a pydantic model per event in the last two; two thirds of a row's time went there
(docs/benchmarks.md, "Ninth session"). Like `backbone emit`, an import now encodes each event in the
validation pass and writes the record to a spool (temporary files, one per event type, of
length-prefixed records), and the publish pass produces the spooled records without reading the file
again, so memory stays bounded whatever the file's size.

`EventEncoder` encodes an event given as canonical values (the dict a JSON line of it would parse
into) with the event type's compiled line writer (`backbone.kafka.compiled_writer`, no model per row),
and falls back to the model only when the writer cannot vouch for the values: the model then accepts
them, or raises the exact error the row is rejected with. The bytes are the same either way; an event
that cannot be encoded (an id that is not valid text) is a rejected row, never a failure part-way
through publishing.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from backbone.errors import InvalidInputError

if TYPE_CHECKING:
    from backbone.domain.models import Event
    from backbone.kafka.compiled_writer import LineWriter, Written
    from backbone.kafka.serde import TopicSerde

Encoded = tuple[str, "Written"]
"""(event type, (key, Avro body, source_system, correlation_id or b"")): one event ready to spool."""

LENGTHS = struct.Struct("<IIHH")
"""A spooled record: lengths of key, Avro body, source_system and correlation_id (0: none); the format
`backbone emit` spools in too."""


class EventEncoder:
    """Encodes events for the spool: canonical values by the compiled line writer, models by the serde."""

    def __init__(self) -> None:
        self._writers: dict[type[Event], LineWriter | None] = {}
        self._serdes: dict[str, TopicSerde] = {}

    def values(self, event_cls: type[Event], values: Mapping[str, Any], model: Callable[[], Event]) -> Encoded:
        """`values` written by `event_cls`'s compiled writer; else `model()` (which raises what is wrong) encoded."""
        writer = self._writers.get(event_cls, _UNKNOWN)
        if writer is _UNKNOWN:
            writer = self._writers[event_cls] = _line_writer(event_cls)
        written = writer(values) if writer is not None else None
        if written is None:
            return self.model(model())
        return event_cls.event_type, written

    def model(self, event: Event) -> Encoded:
        """A model encoded as `Emitter.publish` encodes it (envelope defaults applied); `ValueError` when it
        cannot be (so the row is rejected with the reason, before anything is published)."""
        from producers.emitter import encode_for_spool

        try:
            key, body, headers = encode_for_spool(event, self._serde(event.event_type))
        except InvalidInputError as error:
            raise ValueError(str(error)) from None
        values = dict(headers)
        source, correlation = _as_bytes(values.get("source_system")), _as_bytes(values.get("correlation_id"))
        return event.event_type, (key, body, source, correlation)

    def _serde(self, event_type: str) -> TopicSerde:
        serde = self._serdes.get(event_type)
        if serde is None:
            from backbone.kafka.serde import TopicSerde
            from backbone.kafka.topics import topic_for

            # Avro bodies only: the schema id is asked by the emitter that produces them.
            serde = self._serdes[event_type] = TopicSerde(topic_for(event_type), registry=None)  # type: ignore[arg-type]
        return serde


_UNKNOWN: Any = object()


def _line_writer(event_cls: type[Event]) -> LineWriter | None:
    from producers.emitter import line_writer

    return line_writer(event_cls)


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode("utf-8")


class Spool:
    """Encoded events in temporary files, one per event type, in the order they were added.

    `files` are temporary files to spool those event types into, made before a fork: a child process
    spools into them and the parent `adopt`s what it wrote (`producers.halves`)."""

    def __init__(self, encoder: EventEncoder | None = None, files: Mapping[str, IO[bytes]] | None = None) -> None:
        self.encoder = encoder or EventEncoder()
        self._files: dict[str, IO[bytes]] = {}
        self._given: dict[str, IO[bytes]] = dict(files or {})
        self.counts: dict[str, int] = {}

    def adopt(self, counts: Mapping[str, int]) -> None:
        """The records another process spooled into the given files: `counts` per event type, in the order
        that process first spooled them."""
        for event_type, count in counts.items():
            self._files[event_type] = self._given.pop(event_type)
            self.counts[event_type] = count

    def flush(self) -> None:
        for spool in self._files.values():
            spool.flush()

    def add_all(self, events: Iterable[Encoded | Event]) -> None:
        """One record's events, encoded ones as they are and models through the encoder, all or none:
        `ValueError` (nothing added) when one cannot be encoded."""
        encoded = [event if isinstance(event, tuple) else self.encoder.model(event) for event in events]
        for event in encoded:
            self.add(event)

    def add(self, encoded: Encoded) -> None:
        event_type, (key, body, source, correlation) = encoded
        spool = self._files.get(event_type)
        if spool is None:
            spool = self._given.pop(event_type, None) or tempfile.TemporaryFile()  # noqa: SIM115 - closed in `close`
            self._files[event_type] = spool
            self.counts[event_type] = 0
        lengths = LENGTHS.pack(len(key), len(body), len(source), len(correlation))
        spool.write(b"".join((lengths, key, body, source, correlation)))  # one copy, not four
        self.counts[event_type] += 1

    @property
    def event_types(self) -> list[str]:
        return list(self._files)

    def records(self, event_type: str) -> Iterator[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]]:
        """The spooled records of `event_type` as `Emitter.publish_encoded` takes them, with the headers
        the emitter writes (`event_type`, `source_system`, `correlation_id` when there is one)."""
        spool = self._files[event_type]
        spool.flush()
        spool.seek(0)
        return spooled(spool, event_type)

    def close(self) -> None:
        for spool in (*self._files.values(), *self._given.values()):
            spool.close()
        self._files.clear()
        self._given.clear()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def spooled(spool: IO[bytes], event_type: str) -> Iterator[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]]:
    """The records of a spool file read back, with the headers the emitter writes."""
    read, size = spool.read, LENGTHS.size
    type_header = ("event_type", event_type.encode())
    while True:
        lengths = read(size)
        if len(lengths) < size:
            return
        key_len, body_len, source_len, correlation_len = LENGTHS.unpack(lengths)
        payload = read(key_len + body_len + source_len + correlation_len)
        body_end = key_len + body_len
        headers: list[tuple[str, str | bytes | None]] = [
            type_header,
            ("source_system", payload[body_end : body_end + source_len]),
        ]
        if correlation_len:
            headers.append(("correlation_id", payload[body_end + source_len :]))
        yield payload[:key_len], payload[key_len:body_end], headers
