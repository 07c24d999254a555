"""The master data every topology worker keeps (topology/reference.py `ReferenceStore`): per key, the event
at the newest position wins, whichever way (broadcast table or book command) and order it arrives."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from backbone.domain.models import ContractVersion, Project
from topology.messages import Position
from topology.reference import ReferenceStore

AT = datetime(2026, 11, 2, tzinfo=UTC)


def project(project_id: str, name: str) -> Project:
    return Project(
        occurred_at=AT, source_system="t", project_id=project_id, client_id="C1", name=name, status="ACTIVE",
        billing_type="TIME_AND_MATERIALS", currency="EUR", business_unit="b", region="EU", legal_entity="L",
    )  # fmt: skip


def contract(version: int, project_id: str, rate: str = "100") -> ContractVersion:
    return ContractVersion(
        occurred_at=AT, source_system="t", contract_id="K1", version=version, project_id=project_id,
        status="ACTIVE", effective_from=date(2026, 1, 1), currency="EUR", default_hourly_rate=Decimal(rate),
    )  # fmt: skip


def at(topic: str, offset: int) -> Position:
    return Position(topic=topic, partition=0, offset=offset)


def test_an_older_event_never_overwrites_a_newer_one_of_its_key() -> None:
    store = ReferenceStore()
    assert store.apply(project("P1", "new"), at("ref.projects.v1", 7))
    assert not store.apply(project("P1", "old"), at("ref.projects.v1", 3))
    assert not store.apply(project("P1", "same"), at("ref.projects.v1", 7))
    assert store.data.projects["P1"].name == "new"


def test_the_same_key_on_two_topics_is_two_keys() -> None:
    store = ReferenceStore()
    assert store.apply(project("X", "a project"), at("ref.projects.v1", 5))
    assert store.apply(contract(1, "X"), at("ref.contracts.v1", 1))
    assert store.data.projects["X"].name == "a project" and store.data.contract_versions("X")


def test_a_new_version_of_a_contract_key_replaces_it_and_a_moved_one_leaves_its_old_project() -> None:
    store = ReferenceStore()
    store.apply(contract(1, "P1", "100"), at("ref.contracts.v1", 1))
    store.apply(contract(2, "P1", "120"), at("ref.contracts.v1", 2))
    store.apply(contract(1, "P1", "110"), at("ref.contracts.v1", 3))
    assert [(v.version, v.default_hourly_rate) for v in store.data.contract_versions("P1")] == [
        (2, Decimal("120")),
        (1, Decimal("110")),
    ]
    store.apply(contract(2, "P2"), at("ref.contracts.v1", 4))
    assert [v.version for v in store.data.contract_versions("P1")] == [1]
    assert [v.version for v in store.data.contract_versions("P2")] == [2]
    assert set(store.data.contracts) == {"K1:1", "K1:2"}
