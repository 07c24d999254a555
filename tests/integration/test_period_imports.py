"""Period imports on the real broker, registry and topology (issue 10 parts 3 and 6).

A Harvest export of March is imported, edited and re-exported twice (notes edited, so ids change;
hours changed; an entry removed and later restored; one made non-billable; one invoiced in Harvest),
then the last export once more: the topology's candidates bill exactly the last export, the invoiced
entry is reported and not billed, and the last import publishes nothing. Two imports of one scope at
the same time: the earlier is fenced and publishes nothing. The new time-entry schema registers over
the published one through the registry's BACKWARD check.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema
from topology_harness import Harness, net_per_entry

from backbone.cli.imports import run_import
from backbone.domain.models import BusinessException, ExceptionKind, ExceptionStatus, TimeEntry
from backbone.kafka import wire
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import registry_client
from backbone.kafka.topics import IMPORT_LEDGER, Topic
from producers.harvest import read_harvest
from producers.identity import EntryMapper, IdentityMap
from producers.importing import accepted_events
from producers.parsing import ReadOptions
from producers.periods import ConcurrentImportError, Period, PeriodImport, PeriodPublisher, Scope, read_ledger, within
from tests.support import unique_name, wait_for_partitions, wait_until
from tests.unit.domain.domain_builders import client, contract, project, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MARCH = Period(date(2024, 3, 1), date(2024, 3, 31))
IDENTITY = IdentityMap.from_rows(
    [
        {"kind": "worker", "attribute": "id", "value": "E-17", "canonical_id": "W1"},
        {"kind": "project", "attribute": "code", "value": "WR-01", "canonical_id": "P1"},
    ]
)
D = Decimal


@pytest.fixture
def harness(settings):
    harness = Harness(settings, unique_name("periods") + ".")
    yield harness
    harness.stop_all()


@pytest.fixture
def period_import(harness) -> PeriodImport:
    ledger = Topic(
        name=f"{harness.prefix}{IMPORT_LEDGER.name}", event=None, partitions=IMPORT_LEDGER.partitions, compacted=True
    )
    apply_topics(AdminClient(harness.settings.kafka.client_config()), (ledger,))
    wait_for_partitions(harness.settings.kafka.servers, ledger.name, ledger.partitions)
    topics = {"time-entry": harness.topics.time_entries, "approval": harness.topics.approvals}
    return PeriodImport(Scope("harvest", unique_name("ws")), MARCH, ledger_topic=ledger, topics=topics)


def _import(harness: Harness, period: PeriodImport, fixture: str, day: int) -> None:
    """What `backbone import harvest FILE --period 2024-03-01..2024-03-31` runs."""
    file = FIXTURES / "periods" / fixture
    options = ReadOptions(exported_at=datetime(2024, 4, day, 8, tzinfo=UTC), date_order=None)
    run_import(
        file,
        "harvest",
        options,
        lambda settled: read_harvest(file, settled, EntryMapper(IDENTITY)),
        period=period,
        settings=harness.settings,
    )


def _ledger(harness: Harness, period: PeriodImport):
    topic = period.ledger_topic
    return read_ledger(harness.settings.kafka.client_config(), topic.name, topic.partitions, period.scope, 30.0)


def test_a_re_export_cycle_bills_exactly_the_last_export(harness, period_import) -> None:
    harness.publish([client(), project(), worker(), contract(effective_from=date(2024, 1, 1))])
    harness.start_worker()
    _import(harness, period_import, "harvest_march_v1.csv", 1)
    wait_until(lambda: sum(net_per_entry(harness.candidates()).values()) == D("750.00"), timeout=60)

    for fixture, day in [("harvest_march_v2.csv", 2), ("harvest_march_v3.csv", 3)]:
        _import(harness, period_import, fixture, day)
    published_before = len(harness.committed_view(harness.topics.time_entries))
    _import(harness, period_import, "harvest_march_v3.csv", 4)  # the last export again: nothing new
    assert len(harness.committed_view(harness.topics.time_entries)) == published_before

    ledger = _ledger(harness, period_import)
    live = {r.entry.time_entry_id: r.entry for r in ledger.values() if not r.withdrawn}
    expected = {  # the v3 export at 150/h; Deploy became non-billable, the Harvest-invoiced entry is not billed
        entry_id: D(entry.duration_seconds) / 3600 * 150
        for entry_id, entry in live.items()
        if entry.billable and not entry.invoiced_at_source
    }
    assert sorted(expected.values()) == [D("150"), D("225"), D("450")]

    def billed_as_expected() -> bool:
        harness.check_alive()
        return net_per_entry(harness.candidates()) == expected

    wait_until(billed_as_expected, timeout=90, message="the topology bills the last export")
    invoiced = [e for e in live.values() if e.invoiced_at_source]
    assert len(invoiced) == 1

    def reported() -> list[BusinessException]:
        exceptions = harness.read(harness.topics.exceptions).values()
        return [
            e for e in exceptions if isinstance(e, BusinessException) and e.kind == ExceptionKind.INVOICED_AT_SOURCE
        ]

    [report] = wait_until(reported, timeout=30)
    assert (report.subject_id, report.status, report.amount_at_risk) == (
        invoiced[0].time_entry_id,
        ExceptionStatus.RESOLVED,
        None,
    )
    entries = [e for e in harness.committed_view(harness.topics.time_entries) if isinstance(e, TimeEntry)]
    assert Counter(e.deleted for e in entries)[True] == 4  # Wireframes, Checkout, Review (v2), Hotfix (v3)


def test_two_imports_of_one_scope_at_once_the_earlier_is_fenced_and_publishes_nothing(harness, period_import) -> None:
    settings = harness.settings
    options = ReadOptions(exported_at=datetime(2024, 4, 1, tzinfo=UTC), date_order="YMD")

    def events(fixture: str):
        path = FIXTURES / "periods" / fixture
        return list(accepted_events(within(MARCH)(read_harvest(path, options, EntryMapper(IDENTITY)))))

    def publisher() -> PeriodPublisher:
        p = period_import
        return PeriodPublisher(settings, p.scope, p.period, topics=p.topics, ledger_topic=p.ledger_topic)

    earlier = publisher()  # has read the (empty) ledger, as an import that validated its file
    with publisher() as later:  # starts meanwhile: fences the earlier one
        later.publish(events("harvest_march_v1.csv"), options.exported_at)
    with earlier, pytest.raises(ConcurrentImportError, match="nothing of this file was published"):
        earlier.publish(events("harvest_march_v2.csv"), options.exported_at)

    entries = [e for e in harness.committed_view(harness.topics.time_entries) if isinstance(e, TimeEntry)]
    assert sorted(e.notes or "" for e in entries) == ["Checkout", "Deploy", "Review", "Wireframes"]
    assert len(_ledger(harness, period_import)) == 4


def test_the_time_entry_schema_registers_over_the_published_one(settings) -> None:
    client = registry_client(settings.registry.client_config())
    subject = f"{unique_name('time-entries')}-value"
    published = (FIXTURES / "schemas" / "time-entry.v1.avsc").read_text()
    first = client.register_schema(subject, Schema(published, "AVRO"))
    current = Schema(wire.schema_str(TimeEntry), "AVRO")
    assert client.test_compatibility(subject, current)
    assert client.register_schema(subject, current) != first
    assert [v for v in client.get_versions(subject)] == [1, 2]


def test_an_import_fenced_part_way_through_its_file_publishes_nothing(harness, period_import) -> None:
    settings, p = harness.settings, period_import
    options = ReadOptions(exported_at=datetime(2024, 4, 1, tzinfo=UTC), date_order="YMD")
    path = FIXTURES / "periods" / "harvest_march_v1.csv"
    events = list(accepted_events(within(MARCH)(read_harvest(path, options, EntryMapper(IDENTITY)))))
    later: list[PeriodPublisher] = []

    def file_read_while_another_import_starts():
        yield events[0]
        later.append(PeriodPublisher(settings, p.scope, p.period, topics=p.topics, ledger_topic=p.ledger_topic))
        yield from events[1:]

    earlier = PeriodPublisher(settings, p.scope, p.period, topics=p.topics, ledger_topic=p.ledger_topic)
    with earlier, pytest.raises(ConcurrentImportError):
        earlier.publish(file_read_while_another_import_starts(), options.exported_at)
    with later[0] as publisher:
        report = publisher.publish(events, options.exported_at)
    assert (report.events, report.unchanged) == (8, 0)  # the earlier one left nothing in the ledger
    entries = [e for e in harness.committed_view(harness.topics.time_entries) if isinstance(e, TimeEntry)]
    assert len(entries) == 4
