"""API polling: Harvest (`updated_since`), Toggl (`since`) and Clockify (a time range) to canonical events.

Each poll asks for what changed since the cursor, maps it like the file imports do, publishes it (the
publisher returns only when the broker has every event) and only then saves the cursor, atomically,
in a file in the data directory. So a restart neither skips (the cursor never passes unpublished
changes) nor re-sends (the cursor moved past what was published). A crash between publishing and
saving re-sends the last page on restart; that is harmless because an event's id derives from its
payload, which holds the source id and the revision derived from the update time.

Harvest and Toggl report their update time (`updated_at`, `at`). Their cursor is the latest update
time seen plus the (id, revision)s seen at exactly that instant, because `since` filters may include
the boundary. Clockify's API filters by start time and gives no update time, so its poller re-reads a
look-back window every time and publishes only entries whose content changed (a fingerprint per id in
the cursor), with the poll time as the revision's update time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from backbone.domain.models import Event
from backbone.errors import BackboneError, ServiceUnavailableError
from producers.clockify import clockify_api_entry
from producers.harvest import harvest_api_entry
from producers.identity import EntryMapper, SourceEntry
from producers.parsing import ReadOptions, Rejection, describe_error, parse_instant

log = structlog.get_logger("polling")


class EventPublisher(Protocol):
    """`Emitter.publish`: returns once the broker has every event, raises otherwise."""

    def publish(self, events: Iterable[Event], progress: Any = None) -> Any: ...


class CursorStore(Protocol):
    """Where a poller keeps its position: `CursorFile`, or `checkpoint.KafkaCursor` (transactional)."""

    def load(self) -> dict[str, Any]: ...

    def save(self, state: Mapping[str, Any]) -> None: ...


class HttpGetter(Protocol):
    """`httpx.Client.get`, or `resilience.ResilientClient.get` (retries transient failures)."""

    def get(self, url: str, *, params: Any = None) -> httpx.Response: ...


# --- settings -----------------------------------------------------------------------------------


class HarvestPollSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKBONE_HARVEST_", frozen=True, extra="ignore")

    base_url: str = "https://api.harvestapp.com"
    access_token: SecretStr = SecretStr("")
    account_id: str = ""
    page_size: int = Field(default=100, ge=1, le=2000)
    start_at: datetime = Field(default=datetime(2020, 1, 1, tzinfo=UTC), description="First poll's updated_since.")


class TogglPollSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKBONE_TOGGL_", frozen=True, extra="ignore")

    base_url: str = "https://api.track.toggl.com"
    api_token: SecretStr = SecretStr("")
    start_at: datetime = Field(default=datetime(2020, 1, 1, tzinfo=UTC), description="First poll's since.")
    timezone: str = "UTC"


class ClockifyPollSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKBONE_CLOCKIFY_", frozen=True, extra="ignore")

    base_url: str = "https://api.clockify.me"
    api_key: SecretStr = SecretStr("")
    workspace_id: str = ""
    user_id: str = ""
    lookback_days: int = Field(default=35, ge=1, description="Entries started this long ago can still change.")
    page_size: int = Field(default=50, ge=1, le=5000)
    timezone: str = "UTC"


# --- cursor -------------------------------------------------------------------------------------


class CursorFile:
    """A JSON document in the data directory, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise BackboneError(
                f"cursor {self.path} is unreadable: {error}",
                hint="restore it, or delete it to re-poll from the configured start",
            ) from error

    def save(self, state: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


@dataclass
class PollReport:
    fetched: int = 0
    published: int = 0
    skipped: int = 0
    rejections: list[Rejection] = field(default_factory=list)


# --- incremental pollers (Harvest, Toggl) ----------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One fetched record: its id, the update time the API filters on, and what it maps to."""

    source_id: str
    updated: datetime
    entry: SourceEntry | None
    rejection: str | None = None


class IncrementalPoller(ABC):
    """Shared loop of pollers whose API filters by update time."""

    source = "?"

    def __init__(
        self,
        client: HttpGetter,
        publisher: EventPublisher,
        cursor: CursorStore,
        mapper: EntryMapper,
        start_at: datetime,
    ) -> None:
        self.client, self.publisher, self.cursor, self.mapper = client, publisher, cursor, mapper
        self.start_at = start_at

    def poll_once(self) -> PollReport:
        state = self.cursor.load()
        since = parse_instant(state["since"]) if "since" in state else self.start_at
        boundary = set(state.get("boundary", []))
        report = PollReport()
        changes = sorted(self.fetch(since), key=lambda c: c.updated)
        report.fetched = len(changes)
        fresh = [c for c in changes if c.updated > since or f"{c.source_id}@{c.updated.isoformat()}" not in boundary]
        report.skipped = len(changes) - len(fresh)
        events = list(self._events(fresh, report))
        if events:
            self.publisher.publish(events)
        report.published = len(events)
        self.cursor.save(self._next_state(since, boundary, fresh))
        log.info(
            "polled",
            source=self.source,
            fetched=report.fetched,
            published=report.published,
            skipped=report.skipped,
            rejected=len(report.rejections),
        )
        return report

    def _events(self, changes: list[Change], report: PollReport) -> Iterator[Event]:
        for change in changes:
            if change.entry is None:
                report.rejections.append(Rejection(f"{self.source} {change.source_id}", change.rejection or "?"))
                continue
            try:
                yield from self.mapper.events(change.entry)
            except ValueError as error:
                report.rejections.append(Rejection(f"{self.source} {change.source_id}", describe_error(error)))

    @staticmethod
    def _next_state(since: datetime, boundary: set[str], fresh: list[Change]) -> dict[str, Any]:
        if not fresh:
            return {"since": since.isoformat(), "boundary": sorted(boundary)}
        latest = max(c.updated for c in fresh)
        at_latest = {f"{c.source_id}@{c.updated.isoformat()}" for c in fresh if c.updated == latest}
        if latest == since:
            at_latest |= boundary
        return {"since": latest.isoformat(), "boundary": sorted(at_latest)}

    @abstractmethod
    def fetch(self, since: datetime) -> Iterator[Change]:
        """Every change at or after `since`; each tracker's poller says how its API pages them."""

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        try:
            response = self.client.get(path, params=params)
        except httpx.HTTPError as error:
            raise ServiceUnavailableError(f"{self.source} API unreachable: {error}") from error
        if response.status_code >= 400:
            raise ServiceUnavailableError(
                f"{self.source} API answered {response.status_code} for {path}",
                hint="check the base URL and credentials",
            )
        return response.json()


def _change(source_id: object, updated: object, parse: Callable[[], SourceEntry]) -> Change:
    when = parse_instant(str(updated))
    try:
        return Change(str(source_id), when, parse())
    except ValueError as error:
        return Change(str(source_id), when, None, describe_error(error))


class HarvestPoller(IncrementalPoller):
    """`GET /v2/time_entries?updated_since=...`, following `next_page`."""

    source = "harvest"

    def fetch(self, since: datetime) -> Iterator[Change]:
        page: int | None = 1
        while page is not None:
            body = self._get("/v2/time_entries", {"updated_since": _z(since), "page": page, "per_page": 100})
            for item in body.get("time_entries", []):
                yield _change(item.get("id"), item.get("updated_at"), functools.partial(harvest_api_entry, item))
            page = body.get("next_page")

    @classmethod
    def from_settings(
        cls, settings: HarvestPollSettings, publisher: EventPublisher, data_dir: Path, mapper: EntryMapper
    ) -> HarvestPoller:
        client = harvest_client(settings)
        return cls(client, publisher, CursorFile(data_dir / "cursors" / "harvest.json"), mapper, settings.start_at)


class TogglPoller(IncrementalPoller):
    """`GET /api/v9/me/time_entries?since=<unix>`: changed entries, deleted ones included."""

    source = "toggl"

    def __init__(self, *args: Any, timezone: str = "UTC", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = ReadOptions(exported_at=datetime.now(UTC), timezone=timezone)

    def fetch(self, since: datetime) -> Iterator[Change]:
        from producers.toggl import toggl_api_entry

        for item in self._get("/api/v9/me/time_entries", {"since": int(since.timestamp())}):
            yield _change(item.get("id"), item.get("at"), functools.partial(toggl_api_entry, item, self.options))

    @classmethod
    def from_settings(
        cls, settings: TogglPollSettings, publisher: EventPublisher, data_dir: Path, mapper: EntryMapper
    ) -> TogglPoller:
        client = toggl_client(settings)
        return cls(
            client,
            publisher,
            CursorFile(data_dir / "cursors" / "toggl.json"),
            mapper,
            settings.start_at,
            timezone=settings.timezone,
        )


# --- Clockify: a window re-read, published when content changed -------------------------------------


class ClockifyPoller:
    """`GET /api/v1/workspaces/{ws}/user/{user}/time-entries?start=&end=&page=`, over a look-back window."""

    source = "clockify"

    def __init__(
        self,
        client: HttpGetter,
        publisher: EventPublisher,
        cursor: CursorStore,
        mapper: EntryMapper,
        settings: ClockifyPollSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client, self.publisher, self.cursor, self.mapper = client, publisher, cursor, mapper
        self.settings, self.clock = settings, clock

    def poll_once(self) -> PollReport:
        now = self.clock().replace(microsecond=0)
        window_start = now - timedelta(days=self.settings.lookback_days)
        seen: dict[str, str] = self.cursor.load().get("fingerprints", {})
        report, fingerprints = PollReport(), {}
        events: list[Event] = []
        options = ReadOptions(exported_at=now, timezone=self.settings.timezone)
        for item in self._fetch(window_start, now):
            report.fetched += 1
            entry_id, fingerprint = str(item.get("id")), _fingerprint(item)
            fingerprints[entry_id] = fingerprint
            if seen.get(entry_id) == fingerprint:
                report.skipped += 1
                continue
            try:
                events.extend(self.mapper.events(clockify_api_entry(item, options, now)))
            except ValueError as error:
                report.rejections.append(Rejection(f"clockify {entry_id}", describe_error(error)))
                fingerprints.pop(entry_id)  # retried next poll (e.g. a running entry that stops)
        if events:
            self.publisher.publish(events)
        report.published = len(events)
        self.cursor.save({"fingerprints": fingerprints, "window_start": window_start.isoformat()})
        return report

    def _fetch(self, start: datetime, end: datetime) -> Iterator[Mapping[str, Any]]:
        path = f"/api/v1/workspaces/{self.settings.workspace_id}/user/{self.settings.user_id}/time-entries"
        page = 1
        while True:
            response = self.client.get(
                path, params={"start": _z(start), "end": _z(end), "page": page, "page-size": self.settings.page_size}
            )
            if response.status_code >= 400:
                raise ServiceUnavailableError(f"clockify API answered {response.status_code}")
            items = response.json()
            yield from items
            if len(items) < self.settings.page_size:
                return
            page += 1

    @classmethod
    def from_settings(
        cls, settings: ClockifyPollSettings, publisher: EventPublisher, data_dir: Path, mapper: EntryMapper
    ) -> ClockifyPoller:
        client = clockify_client(settings)
        return cls(client, publisher, CursorFile(data_dir / "cursors" / "clockify.json"), mapper, settings)


# --- HTTP clients, authenticated the way each API documents -------------------------------------------


def harvest_client(settings: HarvestPollSettings) -> httpx.Client:
    return httpx.Client(
        base_url=settings.base_url,
        timeout=30,
        headers={
            "Authorization": f"Bearer {settings.access_token.get_secret_value()}",
            "Harvest-Account-Id": settings.account_id,
            "User-Agent": "backbone connector",
        },
    )


def toggl_client(settings: TogglPollSettings) -> httpx.Client:
    return httpx.Client(
        base_url=settings.base_url, timeout=30, auth=(settings.api_token.get_secret_value(), "api_token")
    )


def clockify_client(settings: ClockifyPollSettings) -> httpx.Client:
    return httpx.Client(
        base_url=settings.base_url, timeout=30, headers={"X-Api-Key": settings.api_key.get_secret_value()}
    )


def _fingerprint(item: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _z(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
