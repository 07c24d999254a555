"""What each webhook source's body means: canonical events from a Toggl, Clockify or Harvest delivery.

A delivery carries one time entry (Toggl wraps it in `{"payload", "metadata"}`; Clockify sends the
entry itself and names the event in `Clockify-Webhook-Event-Type`); the `canonical` source takes
backbone's own events as `{"event_type": ..., "event": {...}}` (one or a list). Parsing is shared with
the file imports and pollers, so an entry means the same whichever way it arrives.

Clockify events: NEW_TIME_ENTRY, TIME_ENTRY_UPDATED, TIMER_STOPPED and TIME_ENTRY_RESTORED carry an
entry; TIME_ENTRY_DELETED becomes its terminal revision (`deleted: true`, ranked after the last update).
Approval events (NEW_APPROVAL_REQUEST, APPROVAL_REQUEST_STATUS_UPDATED) describe a request over a
*date range*, not the entries in it, so they are acknowledged without publishing: the entries' own
`approvalStatus` reaches backbone through entry webhooks or the poller. Other events are acknowledged too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from backbone.domain.models import INPUT_EVENTS, Event
from producers.clockify import clockify_api_entry
from producers.harvest import harvest_api_entry
from producers.identity import EntryMapper, SourceEntry
from producers.parsing import ReadOptions
from producers.toggl import toggl_api_entry

SOURCES = ("toggl", "clockify", "harvest", "canonical")
CLOCKIFY_EVENT_HEADER = "clockify-webhook-event-type"
CLOCKIFY_ENTRY_EVENTS = frozenset({"NEW_TIME_ENTRY", "TIME_ENTRY_UPDATED", "TIMER_STOPPED", "TIME_ENTRY_RESTORED"})
CLOCKIFY_DELETION = "TIME_ENTRY_DELETED"


Write = Callable[[type[Event], Any], Any]
"""Writes an event from its canonical values without a model (`Emitter.prepare_values`), or gives None."""


class NotAnEntry(Exception):
    """A valid delivery that carries nothing to publish (a ping, a running entry); the reason says which."""


def is_toggl_ping(body: object) -> str | None:
    """Toggl validates a subscription with `{"payload": "ping", "validation_code": ...}`; echo the code."""
    if isinstance(body, Mapping) and body.get("payload") == "ping":
        code = body.get("validation_code")
        return str(code) if code is not None else ""
    return None


def events_of(
    source: str,
    body: object,
    headers: Mapping[str, str],
    mapper: EntryMapper,
    options: ReadOptions,
    *,
    max_events: int = 1000,
    write: Write | None = None,
) -> Sequence[Any]:
    """The canonical events a delivery means, as `mapper.convert` gives them (models, or encoded once
    the mapper was given an encoder); `ValueError` when it is malformed. `write` writes a canonical
    delivery's event without a model, or gives None when only the model can judge it."""
    if source == "canonical":
        return _canonical(body, max_events, write)
    if source == "toggl":
        return mapper.convert(_or_running(lambda: toggl_api_entry(body, options)))
    if source == "clockify":
        return mapper.convert(_clockify_entry(body, headers, options))
    if source == "harvest":
        return mapper.convert(_or_running(lambda: harvest_api_entry(body)))
    raise ValueError(f"unknown source {source!r}")


def _or_running(parse):  # type: ignore[no-untyped-def]
    try:
        return parse()
    except ValueError as error:
        if "still running" in str(error):
            raise NotAnEntry(str(error)) from None
        raise


def _clockify_entry(body: object, headers: Mapping[str, str], options: ReadOptions) -> SourceEntry:
    # A payload without `updatedAt` is dated when it arrived (the gateway's clock, in `options`).
    event = headers.get(CLOCKIFY_EVENT_HEADER, "").strip().upper()
    if event == CLOCKIFY_DELETION:
        # A deleted entry may be "running"-shaped or unchanged since its last update: it still ends it.
        entry = clockify_api_entry(_stopped(body), options, options.exported_at)
        ranked_after_update = max(entry.updated_at + timedelta(seconds=1), options.exported_at)
        return replace(entry, deleted=True, decision=None, updated_at=ranked_after_update)
    if event and event not in CLOCKIFY_ENTRY_EVENTS:
        raise NotAnEntry(f"Clockify event {event} carries no time entry to publish")
    return _or_running(lambda: clockify_api_entry(body, options, options.exported_at))


def _stopped(body: object) -> object:
    """A deleted running timer has no end; it never counted, so it ends where it started."""
    if not isinstance(body, Mapping) or not isinstance(body.get("timeInterval"), Mapping):
        return body
    interval = dict(body["timeInterval"])
    if interval.get("end") is None:
        interval.update(end=interval.get("start"), duration="PT0S")
    return {**body, "timeInterval": interval}


def _canonical(body: object, max_events: int, write: Write | None) -> list[Any]:
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > max_events:
        raise ValueError(f"send 1 to {max_events} events per delivery (as the events API takes)")
    events: list[Any] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("event_type") not in INPUT_EVENTS:
            raise ValueError(f"item {index}: needs event_type (one of {', '.join(INPUT_EVENTS)}) and event")
        model, event = INPUT_EVENTS[str(item["event_type"])], item.get("event")
        events.append((write and write(model, event)) or model.model_validate(event))
    return events
