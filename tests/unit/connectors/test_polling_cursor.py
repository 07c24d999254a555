"""Pollers against the fake APIs with an in-memory publisher: every change exactly once, across restarts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from backbone.domain.models import ApprovalDecision, Event, TimeEntry
from producers.identity import EntryMapper
from producers.polling import ClockifyPoller, ClockifyPollSettings, CursorFile, HarvestPoller, TogglPoller
from tests.fixtures.connectors.fake_trackers import FakeTrackers

START = datetime(2024, 1, 1, tzinfo=UTC)


class ListPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Iterable[Event], progress: Any = None) -> None:
        self.events.extend(events)


def _entries(publisher: ListPublisher) -> list[tuple[str, int]]:
    return [(e.time_entry_id, e.revision) for e in publisher.events if isinstance(e, TimeEntry)]


def _harvest(fake: FakeTrackers, publisher: ListPublisher, cursor: Path) -> HarvestPoller:
    # A new poller object each time: what survives a restart is only the cursor file.
    return HarvestPoller(TestClient(fake.app), publisher, CursorFile(cursor), EntryMapper(), START)


def test_harvest_changes_arrive_once_across_restarts_and_page_boundaries(tmp_path: Path) -> None:
    fake, publisher, cursor = FakeTrackers(), ListPublisher(), tmp_path / "harvest.json"
    for entry_id in (1, 2, 3):
        fake.put_harvest(entry_id, "2024-03-05T08:00:00Z")
    assert _harvest(fake, publisher, cursor).poll_once().published == 3
    assert _harvest(fake, publisher, cursor).poll_once().published == 0, "the inclusive boundary is not re-sent"
    fake.put_harvest(2, "2024-03-05T09:00:00Z", hours=2.5, closed=True)
    fake.put_harvest(4, "2024-03-05T09:00:00Z")
    report = _harvest(fake, publisher, cursor).poll_once()
    # The inclusive filter re-reads 1 and 3 at the old boundary; they are skipped, not re-sent.
    assert (report.fetched, report.skipped, report.published) == (4, 2, 3)  # 2 entries + 1 approval
    assert _harvest(fake, publisher, cursor).poll_once().published == 0
    entries = _entries(publisher)
    assert len(entries) == len(set(entries)) == 5
    assert [e.time_entry_id for e in publisher.events if isinstance(e, ApprovalDecision)] == ["harvest-2"]
    revisions = {rev for entry_id, rev in entries if entry_id == "harvest-2"}
    assert len(revisions) == 2, "the change is a new, higher revision"


def test_a_change_in_the_same_second_as_the_cursor_is_not_skipped(tmp_path: Path) -> None:
    fake, publisher, cursor = FakeTrackers(), ListPublisher(), tmp_path / "harvest.json"
    fake.put_harvest(1, "2024-03-05T08:00:00Z")
    _harvest(fake, publisher, cursor).poll_once()
    fake.put_harvest(2, "2024-03-05T08:00:00Z")  # written later, stamped with the same second
    assert _harvest(fake, publisher, cursor).poll_once().published == 1
    assert _entries(publisher) == [("harvest-1", _entries(publisher)[0][1]), ("harvest-2", _entries(publisher)[0][1])]


def test_toggl_deletions_are_terminal_revisions_and_running_entries_wait(tmp_path: Path) -> None:
    fake, publisher, cursor = FakeTrackers(), ListPublisher(), tmp_path / "toggl.json"

    def poller() -> TogglPoller:
        return TogglPoller(TestClient(fake.app), publisher, CursorFile(cursor), EntryMapper(), START)

    fake.put_toggl(1, "2024-03-05T08:00:00Z")
    fake.put_toggl(2, "2024-03-05T08:00:00Z", duration=-1)
    report = poller().poll_once()
    assert (report.published, [r.where for r in report.rejections]) == (1, ["toggl 2"])
    fake.put_toggl(1, "2024-03-06T08:00:00Z", deleted_at="2024-03-06T08:00:00Z")
    fake.put_toggl(2, "2024-03-06T08:00:00Z", duration=1800)
    assert poller().poll_once().published == 2
    assert poller().poll_once().published == 0
    deleted = [e for e in publisher.events if isinstance(e, TimeEntry) and e.deleted]
    assert [e.time_entry_id for e in deleted] == ["toggl-1"]


def test_clockify_window_publishes_only_changed_content(tmp_path: Path) -> None:
    fake, publisher, cursor = FakeTrackers(), ListPublisher(), tmp_path / "clockify.json"
    now = [datetime(2024, 3, 10, tzinfo=UTC)]
    settings = ClockifyPollSettings(workspace_id="w", user_id="u-1", lookback_days=30, page_size=2)

    def poller() -> ClockifyPoller:
        return ClockifyPoller(
            TestClient(fake.app), publisher, CursorFile(cursor), EntryMapper(), settings, clock=lambda: now[0]
        )

    for name in ("a", "b", "c"):
        fake.put_clockify(name, "2024-03-04T09:00:00Z")
    assert poller().poll_once().published == 3
    now[0] = datetime(2024, 3, 11, tzinfo=UTC)
    assert poller().poll_once().published == 0, "unchanged entries are not re-sent after a restart"
    fake.put_clockify("b", "2024-03-04T09:00:00Z", minutes=90, status="APPROVED")
    assert poller().poll_once().published == 2  # entry + approval
    entries = _entries(publisher)
    assert len(entries) == len(set(entries)) == 4
