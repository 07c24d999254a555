"""Identity mapping: rules resolve source people, projects and tasks; unmapped ones are never dropped."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from backbone.domain.models import TimeEntry
from producers.clockify import read_clockify
from producers.identity import (
    EntryMapper,
    IdentityMap,
    IdentityRules,
    SourceEntry,
    SourceRef,
    UnmappedIdentityError,
)
from producers.parsing import ImportReport, ReadOptions

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"
TABLE = IdentityMap.from_file(FIXTURES / "identity.csv")


@pytest.mark.parametrize(
    ("ref", "canonical", "mapped"),
    [
        (SourceRef("worker", "toggl", email="peter.test@email.test"), "W-001", True),
        (SourceRef("worker", "clockify", email=" PETER.TEST@email.test "), "W-001", True),
        (SourceRef("worker", "harvest", id="1782959", name="Anna"), "W-002", True),
        (SourceRef("worker", "clockify", id="1782959"), "clockify:worker:1782959", False),
        (SourceRef("worker", "toggl", name="harry"), "W-003", True),
        (SourceRef("project", "harvest", id="9", code="WR-01"), "P-100", True),
        (SourceRef("project", "toggl", name="Project for  Big Company"), "P-200", True),
        (SourceRef("project", "toggl", name="Elsewhere"), "toggl:project:Elsewhere", False),
        (SourceRef("task", "clockify", name="Task 1"), "T-1", True),
        (SourceRef("worker", "toggl"), "toggl:worker:unknown", False),
    ],
    ids=[
        "email",
        "email-case-and-space-insensitive",
        "id-scoped-to-source",
        "id-of-other-source-not-matched",
        "name",
        "project-code",
        "project-name-whitespace",
        "unmapped-project-keeps-source-name",
        "task-name",
        "no-identifiers",
    ],
)
def test_table_rules(ref: SourceRef, canonical: str, mapped: bool) -> None:
    resolved = TABLE.resolve(ref)
    assert (resolved.canonical_id, resolved.mapped) == (canonical, mapped)


@pytest.mark.parametrize(
    ("rules", "ref", "canonical"),
    [
        (IdentityRules(project_code_is_id=True), SourceRef("project", "harvest", code="ERP-7"), "ERP-7"),
        (IdentityRules(worker_email_is_id=True), SourceRef("worker", "toggl", email="a@b.c"), "a@b.c"),
        (
            IdentityRules(project=("name", "code")),
            SourceRef("project", "harvest", code="WR-01", name="Project for Big Company"),
            "P-200",
        ),
        (
            IdentityRules(worker=("name",)),
            SourceRef("worker", "toggl", email="peter.test@email.test"),
            "toggl:worker:peter.test@email.test",
        ),
    ],
    ids=["project-code-is-id", "worker-email-is-id", "rule-order-decides", "attributes-outside-rules-ignored"],
)
def test_configurable_rules(rules: IdentityRules, ref: SourceRef, canonical: str) -> None:
    assert IdentityMap(table=TABLE.table, rules=rules).resolve(ref).canonical_id == canonical


def _entry(worker: SourceRef, project: SourceRef) -> SourceEntry:
    return SourceEntry(
        source="toggl",
        entry_id="toggl-1",
        updated_at=datetime(2024, 3, 5, tzinfo=UTC),
        worker=worker,
        project=project,
        work_date=date(2024, 3, 4),
        duration_seconds=60,
        billable=True,
    )


def test_unmapped_entries_are_published_with_source_ids_by_default() -> None:
    [event] = EntryMapper(TABLE).events(
        _entry(SourceRef("worker", "toggl", id="77"), SourceRef("project", "toggl", id="5"))
    )
    assert isinstance(event, TimeEntry)
    assert (event.worker_id, event.project_id) == ("toggl:worker:77", "toggl:project:5")


def test_unmapped_entries_are_reported_when_asked() -> None:
    mapper = EntryMapper(TABLE, unmapped="report")
    with pytest.raises(
        UnmappedIdentityError, match=r"toggl worker \(id='77'\) has no mapping \(tried id, email, name\)"
    ):
        mapper.events(_entry(SourceRef("worker", "toggl", id="77"), SourceRef("project", "toggl", code="WR-01")))


def test_report_policy_rejects_only_the_unmapped_rows_with_line_numbers() -> None:
    table = IdentityMap.from_rows(
        [
            {"kind": "project", "attribute": "name", "value": "Project for Big Company", "canonical_id": "P-200"},
            {"kind": "worker", "attribute": "email", "value": "peter.test@email.test", "canonical_id": "W-001"},
        ]
    )
    options = ReadOptions(exported_at=datetime(2024, 11, 1, tzinfo=UTC), date_order="MDY")
    report = ImportReport()
    events = list(
        report.events_of(
            read_clockify(FIXTURES / "clockify_detailed_us.csv", options, EntryMapper(table, unmapped="report"))
        )
    )
    assert [(e.worker_id, e.project_id) for e in events if isinstance(e, TimeEntry)] == [("W-001", "P-200")]
    assert [str(r) for r in report.rejections] == [
        "line 2: project: clockify project (name='Project without Client') has no mapping (tried id, code, name)"
    ]


def test_identity_table_rows_are_validated() -> None:
    with pytest.raises(ValueError, match="identity row 1: canonical_id is missing"):
        IdentityMap.from_rows([{"kind": "worker", "attribute": "email", "value": "x@y.z"}])
    with pytest.raises(ValueError, match="kind must be worker/project/task"):
        IdentityMap.from_rows([{"kind": "client", "attribute": "email", "value": "x", "canonical_id": "C"}])


def test_json_identity_table(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    path.write_text('[{"kind": "worker", "attribute": "email", "value": "a@b.c", "canonical_id": "W-9"}]')
    assert IdentityMap.from_file(path).resolve(SourceRef("worker", "toggl", email="A@b.c")).canonical_id == "W-9"


BY_CLIENT = IdentityMap.from_rows(
    [
        {"kind": "project", "attribute": "name", "value": "Website", "canonical_id": "P-ACME", "client": "Acme"},
        {"kind": "project", "attribute": "name", "value": "Website", "canonical_id": "P-GLOBEX", "client": "globex "},
        {"kind": "project", "attribute": "name", "value": "Internal", "canonical_id": "P-INT"},
        {"kind": "project", "attribute": "code", "value": "WEB", "canonical_id": "P-TOGGL-WEB", "source": "toggl"},
    ]
)


@pytest.mark.parametrize(
    ("ref", "canonical", "mapped"),
    [
        (SourceRef("project", "toggl", name="Website", client="Acme"), "P-ACME", True),
        (SourceRef("project", "harvest", name="website", client="GLOBEX"), "P-GLOBEX", True),
        (
            SourceRef("project", "toggl", name="Website", client="Initech"),
            "toggl:client:Initech:project:Website",
            False,
        ),
        (SourceRef("project", "toggl", name="Website"), "toggl:project:Website", False),
        (SourceRef("project", "toggl", name="Internal", client="Acme"), "P-INT", True),
        (SourceRef("project", "toggl", code="WEB", client="Acme"), "P-TOGGL-WEB", True),
        (SourceRef("project", "toggl", id="77", name="Website", client="Initech"), "toggl:project:77", False),
    ],
    ids=[
        "client-and-name",
        "client-compared-without-case-or-space",
        "unmapped-keeps-the-client-in-its-id",
        "no-client-no-scope",
        "row-without-client-matches-every-client",
        "source-scoped-code-under-any-client",
        "source-ids-are-unique-without-the-client",
    ],
)
def test_projects_are_told_apart_by_client(ref: SourceRef, canonical: str, mapped: bool) -> None:
    resolved = BY_CLIENT.resolve(ref)
    assert (resolved.canonical_id, resolved.mapped) == (canonical, mapped)


def test_same_named_projects_of_two_clients_never_share_a_fallback_id() -> None:
    acme = SourceRef("project", "harvest", name="Website", client="Acme")
    globex = SourceRef("project", "harvest", name="Website", client="Globex")
    assert IdentityMap().resolve(acme).canonical_id != IdentityMap().resolve(globex).canonical_id


def test_only_project_rows_name_a_client() -> None:
    with pytest.raises(ValueError, match="identity row 1: only project rows can name a client"):
        IdentityMap.from_rows(
            [{"kind": "worker", "attribute": "email", "value": "a@b.c", "canonical_id": "W", "client": "Acme"}]
        )
