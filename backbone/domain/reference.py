"""Reference data as the billing core sees it: the latest client, project, worker and contract versions.

The topology keeps one `ReferenceData` per process, filled from the compacted `ref.*` topics, and
passes it to the billing functions; tests build one by hand. Contract versions are indexed by project,
because pricing and re-pricing always start from a project. Every worker keeps all of it, so it is kept
lean: a project's versions are a tuple, not a dict of their own (docs/topology-performance.md,
"Seventh session").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backbone.domain.models import Client, ContractVersion, Project, Worker

ReferenceEvent = Client | Project | Worker | ContractVersion


@dataclass
class ReferenceData:
    """The latest master data by key. `apply` is an upsert: the latest event per key is the truth."""

    clients: dict[str, Client] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    contracts: dict[str, ContractVersion] = field(default_factory=dict)
    """By contract key `"{contract_id}:{version}"`."""
    _by_project: dict[str, tuple[ContractVersion, ...]] = field(default_factory=dict)
    """A project's contract versions in the order they were applied (a project has a few)."""

    @classmethod
    def of(cls, *events: ReferenceEvent) -> ReferenceData:
        data = cls()
        for event in events:
            data.apply(event)
        return data

    def apply(self, event: ReferenceEvent) -> str:
        """Files `event` under its key, which it returns (the very string the dict holds, for callers
        that key more by it)."""
        if isinstance(event, Client):
            self.clients[key := event.client_id] = event
        elif isinstance(event, Project):
            self.projects[key := event.project_id] = event
        elif isinstance(event, Worker):
            self.workers[key := event.worker_id] = event
        else:
            self.forget_contract(key := event.contract_key)
            self.contracts[key] = event
            self._by_project[event.project_id] = (*self._by_project.get(event.project_id, ()), event)
        return key

    def forget_contract(self, contract_key: str) -> None:
        """Drop a contract version (a tombstone on the compacted topic, or a version moving project)."""
        old = self.contracts.pop(contract_key, None)
        if old is None:
            return
        kept = tuple(v for v in self._by_project.get(old.project_id, ()) if v.contract_key != contract_key)
        if kept:
            self._by_project[old.project_id] = kept
        else:
            self._by_project.pop(old.project_id, None)

    def contract_versions(self, project_id: str) -> list[ContractVersion]:
        return list(self._by_project.get(project_id, ()))

    def versions_of(self, project_id: str) -> tuple[ContractVersion, ...]:
        """`contract_versions` without the copy, for the billing core's lookups (one per priced entry)."""
        return self._by_project.get(project_id, ())
