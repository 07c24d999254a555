"""An import's events encoded without a model per row are the bytes the model path gives, row for row.

`backbone import` encodes each row's events into its spool with the compiled line writers, from the
canonical values the mapper builds (`EntryMapper.encoded`), and builds the model only for values the
writers cannot vouch for. Each case reads one export both ways, through the same reader: the model
path (`EntryMapper.events`, each model encoded as `Emitter.publish` encodes it) and the spool path. The
keys, Avro bodies, source systems, correlation ids and event ids must be equal, and every rejection
(its line, field, reason and values) too. The fixtures cover each tracker's CSV, JSON API and webhook
shapes, invoiced rows, deletions (withdrawals), day-first files and identity tables; generated files add
rows only the model can judge (ids with control or bidi characters, overlong ids, 32-bit revisions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.clockify import read_clockify
from producers.harvest import read_harvest
from producers.identity import EntryMapper, IdentityMap, IdentityRules
from producers.importing import RefusedExportError, inspect_export
from producers.parsing import Outcome, Parsed, ReadOptions, Rejection
from producers.spool import EventEncoder, Spool
from producers.toggl import read_toggl

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"
EXPORTED = datetime(2024, 11, 1, tzinfo=UTC)
Reader = Callable[[Path, ReadOptions, EntryMapper], Iterator[Outcome]]
READERS: dict[str, Reader] = {"toggl": read_toggl, "harvest": read_harvest, "clockify": read_clockify}
REFUSED_WHOLE = {"clockify_dmy_contradiction.csv", "harvest_utf8_stray_byte.csv"}
"""Refused before any row is read (tests/unit/connectors/test_import_command.py): nothing to encode."""
FIXTURE_FILES = sorted(
    (tracker, path.name)
    for tracker in READERS
    for path in FIXTURES.glob(f"{tracker}_*")
    if path.suffix in {".csv", ".json"} and path.name not in REFUSED_WHOLE
)


def _settled(path: Path, tracker: str, date_order: str | None = None) -> ReadOptions | None:
    """The options `backbone import` reads the file with; None for a file it refuses as a whole."""
    options = ReadOptions(exported_at=EXPORTED, date_order=date_order)  # type: ignore[arg-type]
    try:
        return inspect_export(path, options, tracker).options
    except RefusedExportError:
        return None


def _both_ways(tracker: str, path: Path, options: ReadOptions, mapper: Callable[[], EntryMapper]) -> tuple[Any, Any]:
    encoder = EventEncoder()
    by_model = [_described(outcome, encoder) for outcome in READERS[tracker](path, options, mapper())]
    fast = mapper()
    fast.encode_with(EventEncoder())
    by_spool = [_described(outcome, None) for outcome in READERS[tracker](path, options, fast)]
    return by_model, by_spool


def _described(outcome: Outcome, encoder: EventEncoder | None) -> tuple[Any, ...]:
    if isinstance(outcome, Rejection):
        return ("rejected", str(outcome), dict(outcome.values or {}))
    assert isinstance(outcome, Parsed)
    return ("parsed", outcome.where, [encoder.model(event) if encoder else event for event in outcome.events])


def _identity() -> EntryMapper:
    return EntryMapper(IdentityMap.from_file(FIXTURES / "identity_by_client.csv"))


@pytest.mark.parametrize(("tracker", "name"), FIXTURE_FILES, ids=[name for _, name in FIXTURE_FILES])
@pytest.mark.parametrize("mapper", [EntryMapper, _identity], ids=["unmapped", "identity-table"])
def test_every_fixture_encodes_to_the_model_paths_bytes(
    tracker: str, name: str, mapper: Callable[[], EntryMapper]
) -> None:
    path = FIXTURES / name
    orders = ["DMY", "MDY"] if _settled(path, tracker) is None else [None]
    settled = [options for order in orders if (options := _settled(path, tracker, order)) is not None]
    assert settled, f"{name} is refused as a whole"
    for options in settled:
        by_model, by_spool = _both_ways(tracker, path, options, mapper)
        assert by_spool == by_model
        assert any(kind == "parsed" for kind, *_ in by_model) or all(kind == "rejected" for kind, *_ in by_model)


TOGGL_HEADER = "User,Email,Client,Project,Task,Description,Billable,Start date,Start time,Duration\n"
ODD_TOGGL_ROWS = {
    "plain": "Ann,ann@example.com,Acme,Web,Design,notes,Yes,2024-03-04,09:00:00,1:30:00",
    "bidi-override-in-an-email": "Ann,ann\u202e@example.com,Acme,Web,,x,Yes,2024-03-04,09:00:00,1:30:00",
    "control-character-in-a-project": "Ann,ann@example.com,Acme,We\u0007b,,x,No,2024-03-04,09:00:00,0:15:00",
    "overlong-email": f"Ann,{'a' * 300}@example.com,Acme,Web,,x,Yes,2024-03-04,09:00:00,1:00:00",
    "blank-task-and-notes": "Ann,ann@example.com,Acme,Web,,,No,2024-03-05,10:00:00,0:45:00",
    "non-latin-text": "Zoë,zoë@example.com,Ünïcode GmbH,Тест,任务,説明 ✓,Yes,2024-03-06,23:59:59,12:20:00 AM",
    "tab-in-a-client": "Ann,ann@example.com,Ac\tme,Web,,x,Yes,2024-03-07,08:00:00,2:00:00",
    "bad-duration": "Ann,ann@example.com,Acme,Web,,x,Yes,2024-03-08,08:00:00,soon",
}


@pytest.mark.parametrize("row", ODD_TOGGL_ROWS.values(), ids=ODD_TOGGL_ROWS.keys())
def test_rows_only_the_model_can_judge_are_judged_by_it(row: str, tmp_path: Path) -> None:
    path = tmp_path / "toggl.csv"
    path.write_text(TOGGL_HEADER + row + "\n", encoding="utf-8")
    options = ReadOptions(exported_at=EXPORTED)
    by_model, by_spool = _both_ways("toggl", path, options, EntryMapper)
    assert by_spool == by_model


@pytest.mark.parametrize(
    "exported_at",
    [datetime(2088, 2, 1, tzinfo=UTC), datetime(2024, 11, 1, 12, 30, 15, 123456, tzinfo=UTC)],
    ids=["revision-beyond-32-bits", "microseconds"],
)
def test_update_times_at_the_edges_encode_alike(exported_at: datetime, tmp_path: Path) -> None:
    path = tmp_path / "toggl.csv"
    path.write_text(TOGGL_HEADER + ODD_TOGGL_ROWS["plain"] + "\n", encoding="utf-8")
    by_model, by_spool = _both_ways("toggl", path, ReadOptions(exported_at=exported_at), EntryMapper)
    assert by_spool == by_model


def test_a_valid_export_builds_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the spool path: the compiled writers vouch for ordinary rows, invoiced ones included."""
    built: list[object] = []
    monkeypatch.setattr(EventEncoder, "model", lambda self, event: built.append(event))
    for tracker, name in [("harvest", "harvest_invoiced.csv"), ("clockify", "clockify_invoiced.csv")]:
        path = FIXTURES / name
        options = _settled(path, tracker) or _settled(path, tracker, "MDY")
        assert options is not None
        mapper = EntryMapper(rules_free_identity())
        mapper.encode_with(EventEncoder())
        outcomes = list(READERS[tracker](path, options, mapper))
        assert any(isinstance(outcome, Parsed) and len(outcome.events) == 2 for outcome in outcomes)
    assert built == []


def rules_free_identity() -> IdentityMap:
    return IdentityMap(rules=IdentityRules())


def test_the_spool_gives_back_each_event_types_records_in_order() -> None:
    encoder = EventEncoder()
    path = FIXTURES / "harvest_invoiced.csv"
    options = _settled(path, "harvest") or _settled(path, "harvest", "MDY")
    assert options is not None
    events = [event for outcome in read_harvest(path, options, EntryMapper()) if isinstance(outcome, Parsed)
              for event in outcome.events]  # fmt: skip
    with Spool(encoder) as spool:
        spool.add_all(events)
        for event_type in ("time-entry", "approval"):
            expected = [encoder.model(event)[1] for event in events if event.event_type == event_type]
            back = [
                (key, body, dict(headers)["source_system"], dict(headers).get("correlation_id", b""))
                for key, body, headers in spool.records(event_type)
            ]
            assert back == expected
            assert spool.counts[event_type] == len(expected) > 0
