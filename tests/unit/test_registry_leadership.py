"""Leadership over one log: only the instance that claimed it last can write, and ids never repeat.

Two stores over one log in memory (tests/registry_memory.py keeps `KafkaLog`'s fencing contract) stand
for two registry instances; tests/integration/test_registry_ha.py kills real ones on the real broker.
"""

from __future__ import annotations

import json

import pytest

from backbone.registry.replica import SchemaStore
from backbone.registry.store import RegistryError, RegistryState, candidate_schema
from tests.registry_memory import MemoryLog, leading_store


def schema(name: str) -> str:
    return json.dumps({"type": "record", "name": name, "fields": [{"name": "x", "type": "int"}]})


def register(store: SchemaStore, subject: str, text: str) -> int:
    version = store.write(lambda state: state.register(subject, candidate_schema(state, text)))
    return version.schema_id


def follower(log: MemoryLog, url: str = "http://127.0.0.1:2") -> SchemaStore:
    """Another instance on the same topic."""
    store = SchemaStore(log.on_same_topic(), url=url)
    store.start(timeout=5)
    return store


def test_a_follower_refuses_writes_with_a_retryable_503() -> None:
    log = MemoryLog()
    leading_store(log)
    with pytest.raises(RegistryError) as refused:
        register(follower(log), "s", schema("A"))
    assert (refused.value.status, refused.value.error_code) == (503, 50004)


def test_followers_learn_the_leader_and_its_writes_from_the_log() -> None:
    log = MemoryLog()
    leader = leading_store(log, url="http://127.0.0.1:1")
    other = follower(log)
    schema_id = register(leader, "s", schema("A"))
    assert other.wait_for(log.end_offset(), timeout=5)
    assert other.leader_url == "http://127.0.0.1:1" and not other.is_leader
    assert other.state.schema_by_id(schema_id).subject == "s"


def test_a_deposed_leader_is_fenced_and_the_new_one_continues_the_ids() -> None:
    log = MemoryLog()
    old = leading_store(log, url="http://127.0.0.1:1")
    first = register(old, "a", schema("A"))
    new = follower(log, url="http://127.0.0.1:2")
    assert new.claim_leadership()  # the old one has not noticed anything yet (a zombie)

    with pytest.raises(RegistryError) as fenced:
        register(old, "b", schema("B"))
    assert (fenced.value.status, fenced.value.error_code) == (503, 50004)
    assert not old.is_leader
    second = register(new, "b", schema("B"))
    assert second == first + 1
    assert new.leader_url == "http://127.0.0.1:2"
    assert [key["kind"] for key, _ in log.records].count("LEADER") == 2


def test_ids_of_permanently_deleted_schemas_are_never_handed_out_again() -> None:
    """Compaction drops a hard-deleted schema's records; the MAX_ID record it leaves keeps its id used."""
    state = RegistryState()
    version, records = state.register("s", candidate_schema(state, schema("A")))
    compacted = [(key, value) for key, value in records if key["kind"] == "MAX_ID"]  # the schema record is gone
    fresh = RegistryState()
    for key, value in compacted:
        fresh.apply(key, value)
    again, _ = fresh.register("t", candidate_schema(fresh, schema("B")))
    assert again.schema_id == version.schema_id + 1
