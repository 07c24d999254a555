"""`backbone import ...`: a file with an invalid record publishes nothing; `--skip-invalid` publishes the rest.

Most cases use `--dry-run` (events printed, nothing published). The publishing path is checked with a
fake `Emitter` in place of the Kafka one: it must never be built when the file is refused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result

from backbone.cli.main import cli
from backbone.domain.models import Event
from backbone.errors import BackboneError
from backbone.kafka.topics import Topic

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"
EXPORTED = ["--exported-at", "2024-11-01T00:00:00Z"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["import", *args, *EXPORTED])


def _events(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _problems(result: Result) -> list[str]:
    return [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("line")]


PARTLY_INVALID = {
    "harvest-bad-date-hours-and-short-row": (
        ["harvest", str(FIXTURES / "harvest_detailed_eu.csv")],
        ["time-entry", "approval", "time-entry", "time-entry", "time-entry"],
        ["line 6: Date:", "line 7: Hours:", "line 8: (record):"],
    ),
    "clockify-unknown-approval-state": (
        ["clockify", str(FIXTURES / "clockify_detailed_dmy.csv"), "--date-order", "DMY"],
        ["time-entry", "approval", "time-entry", "approval", "time-entry"],
        ["line 5: Approval Status:"],
    ),
    "erp-contract-version-with-bad-line": (
        ["erp", "--kind", "contracts", str(FIXTURES / "erp_contracts.csv")],
        ["contract"] * 3,
        ["lines 6, 7: (record):"],
    ),
    "erp-projects-missing-client": (
        ["erp", "--kind", "projects", str(FIXTURES / "erp_projects_d365.csv"), "--set", "region=NA"],
        ["project"],
        ["line 3: client_id:"],
    ),
}


@pytest.mark.parametrize(("args", "types", "rejected"), PARTLY_INVALID.values(), ids=PARTLY_INVALID.keys())
def test_one_invalid_record_refuses_the_whole_file(args: list[str], types: list[str], rejected: list[str]) -> None:
    result = _invoke(*args, "--dry-run")
    assert result.exit_code == 2, result.stderr
    assert _events(result) == []
    shown = [line for line in result.stderr.splitlines() if line.startswith("line")]
    assert [line[: len(prefix)] for line, prefix in zip(shown, rejected, strict=True)] == rejected
    assert "nothing was published" in result.stderr
    assert "--skip-invalid" in result.stderr


@pytest.mark.parametrize(("args", "types", "rejected"), PARTLY_INVALID.values(), ids=PARTLY_INVALID.keys())
def test_skip_invalid_publishes_the_valid_records_and_writes_the_rejects(
    args: list[str], types: list[str], rejected: list[str], tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    result = _invoke(*args, "--dry-run", "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.stderr
    assert [e["event_type"] for e in _events(result)] == types
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [f"{r['where']}: {r['field']}:" for r in written] == rejected
    assert all(r["reason"] for r in written)


def test_rejects_file_defaults_to_next_to_the_input_with_line_numbers_and_the_row(tmp_path: Path) -> None:
    export = tmp_path / "march.csv"
    shutil.copy(FIXTURES / "harvest_detailed_eu.csv", export)
    result = _invoke("harvest", str(export), "--dry-run", "--skip-invalid")
    assert result.exit_code == 0, result.stderr
    written = [json.loads(line) for line in (tmp_path / "march.csv.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in written] == [(6, "Date"), (7, "Hours"), (8, "(record)")]
    assert written[1]["values"]["hours"] == "eins"
    assert "wrote 3 rejected records" in result.stderr


def test_a_valid_file_needs_no_flag() -> None:
    result = _invoke("toggl", str(FIXTURES / "toggl_detailed_bom_eur.csv"), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert [e["event_type"] for e in _events(result)] == ["time-entry"] * 2
    assert "2 records read, 2 events printed, 0 rejected" in result.stderr


def test_unmapped_report_policy_refuses_the_file_naming_the_line() -> None:
    result = _invoke(
        "clockify",
        str(FIXTURES / "clockify_detailed_us.csv"),
        "--date-order",
        "MDY",
        "--identity",
        str(FIXTURES / "identity.csv"),
        "--unmapped",
        "report",
        "--dry-run",
    )
    assert result.exit_code == 2
    assert _events(result) == []
    assert "line 2: project: clockify project (name='Project without Client') has no mapping" in result.stderr


def test_identity_table_maps_the_valid_rows_when_skipping() -> None:
    result = _invoke(
        "clockify",
        str(FIXTURES / "clockify_detailed_us.csv"),
        "--date-order",
        "MDY",
        "--identity",
        str(FIXTURES / "identity.csv"),
        "--dry-run",
    )
    assert result.exit_code == 0, result.stderr
    mapped = [(e["worker_id"], e["project_id"], e.get("task_id")) for e in _events(result)]
    assert mapped == [("W-001", "clockify:project:Project without Client", None), ("W-001", "P-200", "T-1")]


def test_event_ids_are_filled_and_stable() -> None:
    first = _events(_invoke("toggl", str(FIXTURES / "toggl_detailed_12h.csv"), "--dry-run"))
    again = _events(_invoke("toggl", str(FIXTURES / "toggl_detailed_12h.csv"), "--dry-run"))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert all(e["event_id"] for e in first)


# --- publishing: the emitter is never touched when the file is refused -----------------------


class FakeEmitter:
    """Stands in for `producers.emitter.Emitter`; records what would have been published."""

    built: ClassVar[int] = 0
    published: ClassVar[list[Any]] = []
    publishes: ClassVar[int] = 0
    checked: ClassVar[set[str]] = set()
    missing: ClassVar[set[str]] = set()  # topics the fake broker lacks

    def __init__(self, settings: object, **_: object) -> None:
        FakeEmitter.built += 1

    def ensure_topics(self, topics: Iterable[Topic], timeout: float = 10.0) -> None:
        names = {topic.name for topic in topics}
        FakeEmitter.checked |= names
        if names & FakeEmitter.missing:
            raise BackboneError(f"topics {', '.join(sorted(names & FakeEmitter.missing))} do not exist")

    def __enter__(self) -> FakeEmitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def publish(self, events: Iterable[Event], progress: object = None) -> SimpleNamespace:
        FakeEmitter.published.extend(events)
        FakeEmitter.publishes += 1
        return SimpleNamespace(published=len(FakeEmitter.published), records_per_second=0.0)

    def publish_encoded(self, topic: Topic, records: Iterable[Any], progress: object = None) -> SimpleNamespace:
        """What `backbone import` publishes its spool with: one call per event type (topic)."""
        sent = [SimpleNamespace(event_type=topic.event_type, key=key, body=body) for key, body, _ in records]
        FakeEmitter.published.extend(sent)
        FakeEmitter.publishes += 1
        return SimpleNamespace(published=len(sent), records_per_second=0.0)


@pytest.fixture
def emitter(monkeypatch: pytest.MonkeyPatch) -> type[FakeEmitter]:
    import backbone.settings
    import producers.emitter

    FakeEmitter.built, FakeEmitter.published, FakeEmitter.publishes = 0, [], 0
    FakeEmitter.checked, FakeEmitter.missing = set(), set()
    monkeypatch.setattr(producers.emitter, "Emitter", FakeEmitter)
    monkeypatch.setattr(backbone.settings, "load_settings", lambda: object())
    return FakeEmitter


@pytest.mark.parametrize(
    "args",
    [
        ["harvest", str(FIXTURES / "harvest_detailed_eu.csv")],
        ["clockify", str(FIXTURES / "clockify_dmy_contradiction.csv")],
        ["harvest", str(FIXTURES / "harvest_utf8_stray_byte.csv")],
        ["clockify", str(FIXTURES / "toggl_detailed_12h.csv")],
    ],
    ids=["invalid-row-late-in-file", "date-contradiction-on-last-line", "undecodable-byte", "other-trackers-file"],
)
def test_a_refused_file_never_reaches_the_emitter(args: list[str], emitter: type[FakeEmitter]) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2, result.stderr
    assert (emitter.publishes, emitter.published) == (0, [])


def test_a_valid_file_is_published_once_whole(emitter: type[FakeEmitter]) -> None:
    result = _invoke("toggl", str(FIXTURES / "toggl_detailed_12h.csv"))
    assert result.exit_code == 0, result.stderr
    assert emitter.publishes == 1  # one topic: the file has time entries only
    assert len(emitter.published) == 10
    assert emitter.checked == {"psa.time-entries.v1", "psa.approvals.v1"}


def test_a_missing_topic_is_said_before_the_file_is_read(emitter: type[FakeEmitter]) -> None:
    """A large export takes minutes to validate; an absent topic must not wait for that to be reported."""
    emitter.missing = {"psa.approvals.v1"}
    result = _invoke("harvest", str(FIXTURES / "harvest_detailed_eu.csv"))  # a file with refused rows
    assert result.exit_code != 0
    assert "psa.approvals.v1" in result.stderr
    assert "line " not in result.stderr, "the file was validated before the topics were checked"
    assert emitter.published == []


def test_skip_invalid_publishes_only_the_valid_records(emitter: type[FakeEmitter], tmp_path: Path) -> None:
    rejects = tmp_path / "r.jsonl"
    result = _invoke("harvest", str(FIXTURES / "harvest_detailed_eu.csv"), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.stderr
    # each topic's records in the file's order, the time entries' topic first
    assert [e.event_type for e in emitter.published] == ["time-entry"] * 4 + ["approval"]
    assert len(rejects.read_text().splitlines()) == 3


def test_a_file_too_large_to_keep_is_read_again_to_publish_the_same_events(monkeypatch: pytest.MonkeyPatch) -> None:
    import backbone.cli.imports

    kept = _events(_invoke("toggl", str(FIXTURES / "toggl_detailed_12h.csv"), "--dry-run"))
    monkeypatch.setattr(backbone.cli.imports, "KEEP_IN_MEMORY", 3)
    reread = _events(_invoke("toggl", str(FIXTURES / "toggl_detailed_12h.csv"), "--dry-run"))
    assert len(kept) == 10
    assert reread == kept


def test_the_published_records_are_the_bytes_the_model_path_encodes(emitter: type[FakeEmitter]) -> None:
    """`backbone import` publishes its spool (rows written without models); the records must be those
    `Emitter.publish` made of the models, topic by topic in the file's order."""
    from datetime import UTC, datetime

    from producers.harvest import read_harvest
    from producers.identity import EntryMapper
    from producers.importing import inspect_export
    from producers.parsing import Parsed, ReadOptions
    from producers.spool import EventEncoder

    path = FIXTURES / "harvest_invoiced.csv"
    result = _invoke("harvest", str(path))
    assert result.exit_code == 0, result.stderr
    options = inspect_export(path, ReadOptions(exported_at=datetime(2024, 11, 1, tzinfo=UTC)), "harvest").options
    models = [e for o in read_harvest(path, options, EntryMapper()) if isinstance(o, Parsed) for e in o.events]
    encoder = EventEncoder()
    expected = [(t, encoder.model(e)[1][:2]) for t in ("time-entry", "approval") for e in models if e.event_type == t]
    assert [(e.event_type, (e.key, e.body)) for e in emitter.published] == expected
    assert {event_type for event_type, _ in expected} == {"time-entry", "approval"}
