"""What each webhook source's body means: canonical events from a Toggl, Clockify or Harvest delivery.

A delivery carries one time entry (Toggl wraps it in `{"payload", "metadata"}`; Clockify sends the
entry itself and names the event in `Clockify-Webhook-Event-Type`); the `canonical` source takes
backbone's own events as `{"event_type": ..., "event": {...}}` (one or a list). Parsing is shared with
the file imports and pollers, so an entry means the same whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from backbone.domain.models import INPUT_EVENTS, Event
from producers.clockify import clockify_api_entry
from producers.harvest import harvest_api_entry
from producers.identity import EntryMapper
from producers.parsing import ReadOptions
from producers.toggl import toggl_api_entry

SOURCES = ("toggl", "clockify", "harvest", "canonical")


class NotAnEntry(Exception):
    """A valid delivery that carries nothing to publish (a ping, a running entry); the reason says which."""


def is_toggl_ping(body: object) -> str | None:
    """Toggl validates a subscription with `{"payload": "ping", "validation_code": ...}`; echo the code."""
    if isinstance(body, Mapping) and body.get("payload") == "ping":
        code = body.get("validation_code")
        return str(code) if code is not None else ""
    return None


def events_of(
    source: str, body: object, headers: Mapping[str, str], mapper: EntryMapper, options: ReadOptions
) -> Sequence[Event]:
    """The canonical events a delivery means; `ValueError` when it is malformed."""
    now = datetime.now(UTC).replace(microsecond=0)
    if source == "canonical":
        return _canonical(body)
    if source == "toggl":
        return mapper.events(_or_running(lambda: toggl_api_entry(body, options)))
    if source == "clockify":
        entry = _or_running(lambda: clockify_api_entry(body, options, now))
        if headers.get("clockify-webhook-event-type", "").upper() == "TIME_ENTRY_DELETED":
            entry = _deleted(entry)
        return mapper.events(entry)
    if source == "harvest":
        return mapper.events(_or_running(lambda: harvest_api_entry(body)))
    raise ValueError(f"unknown source {source!r}")


def _or_running(parse):  # type: ignore[no-untyped-def]
    try:
        return parse()
    except ValueError as error:
        if "still running" in str(error):
            raise NotAnEntry(str(error)) from None
        raise


def _deleted(entry):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(entry, deleted=True, decision=None)


def _canonical(body: object) -> list[Event]:
    items = body if isinstance(body, list) else [body]
    events: list[Event] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("event_type") not in INPUT_EVENTS:
            raise ValueError(f"item {index}: needs event_type (one of {', '.join(INPUT_EVENTS)}) and event")
        events.append(INPUT_EVENTS[str(item["event_type"])].model_validate(item.get("event")))
    return events
