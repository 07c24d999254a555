"""The topic catalog: every canonical topic declared once, with keys, partitions, policies and DLQs."""

from __future__ import annotations

import dataclasses

import pytest

from backbone.domain import models
from backbone.kafka import topics as catalog

CANONICAL_TOPICS = {
    "ref.clients.v1": ("client_id", True),
    "ref.projects.v1": ("project_id", True),
    "ref.workers.v1": ("worker_id", True),
    "ref.contracts.v1": ("contract_key", True),
    "psa.time-entries.v1": ("time_entry_id", False),
    "psa.approvals.v1": ("time_entry_id", False),
    "billing.invoice-candidates.v1": ("project_id", False),
    "erp.posting-requests.v1": ("project_id", False),
    "erp.posting-acks.v1": ("posting_id", False),
    "billing.responses.v1": ("candidate_id", False),
    "ops.exceptions.v1": ("exception_id", True),
}


def test_the_shipped_catalog_is_valid() -> None:
    assert catalog.validate() == []


@pytest.mark.parametrize(("name", "expected"), CANONICAL_TOPICS.items(), ids=list(CANONICAL_TOPICS))
def test_every_canonical_topic_has_its_key_policy_and_dlq(name: str, expected: tuple[str, bool]) -> None:
    key_field, compacted = expected
    topic = catalog.BY_NAME[name]
    assert topic.key_field == key_field
    assert topic.compacted is compacted
    assert topic.dlq is not None and topic.dlq.name == f"{name}.dlq"
    assert topic.config()["cleanup.policy"] == ("compact" if compacted else "delete")


def test_partitions_follow_the_rule_for_reference_and_transactional_topics() -> None:
    for topic in catalog.EVENT_TOPICS:
        if topic.name.startswith("ref."):
            assert 1 <= topic.partitions <= 3, topic.name
        elif topic.name.startswith(("psa.", "billing.", "erp.")):
            assert topic.partitions == 6, topic.name


def test_every_event_type_has_exactly_one_topic() -> None:
    carried = [t.event for t in catalog.EVENT_TOPICS]
    assert sorted(e.event_type for e in carried if e) == sorted(models.ALL_EVENTS)


def test_contract_versions_are_keyed_by_contract_and_version() -> None:
    version = models.ContractVersion.model_validate(
        {
            "contract_id": "C-1",
            "version": 3,
            "project_id": "P-1",
            "status": "ACTIVE",
            "effective_from": "2026-01-01",
            "currency": "EUR",
            "occurred_at": "2026-01-01T00:00:00Z",
            "source_system": "erp-sim",
        }
    )
    assert version.key == "C-1:3"


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (lambda t: dataclasses.replace(t, partitions=0), "needs at least one partition"),
        (lambda t: dataclasses.replace(t, dlq=None), "has no dead-letter topic"),
        (lambda t: dataclasses.replace(t, dlq=dataclasses.replace(t.dlq, name="x")), "expected"),
    ],
    ids=["zero-partitions", "missing-dlq", "misnamed-dlq"],
)
def test_validation_names_each_problem(broken, problem: str) -> None:  # type: ignore[no-untyped-def]
    topics = (broken(catalog.TIME_ENTRIES), catalog.APPROVALS)
    assert any(problem in message for message in catalog.validate(topics))


def test_validation_finds_duplicate_names() -> None:
    assert catalog.validate((catalog.APPROVALS, catalog.APPROVALS)) == ["topic psa.approvals.v1 is declared twice"]


@pytest.mark.parametrize("name", ["invoice-candidates", "exceptions", "time-entry", "psa.approvals.v1"])
def test_tail_names_resolve_to_catalog_topics(name: str) -> None:
    assert catalog.resolve_stream(name) in catalog.ALL_TOPICS


def test_unknown_stream_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="invoice-candidates"):
        catalog.resolve_stream("invoices")
