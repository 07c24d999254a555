"""Reference data as the billing core sees it: the latest client, project, worker and contract versions.

The topology keeps one `ReferenceData` per process, filled from the compacted `ref.*` topics, and
passes it to the billing functions; tests build one by hand. Contract versions are indexed by project,
because pricing and re-pricing always start from a project.
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
    _by_project: dict[str, dict[str, ContractVersion]] = field(default_factory=dict)

    @classmethod
    def of(cls, *events: ReferenceEvent) -> ReferenceData:
        data = cls()
        for event in events:
            data.apply(event)
        return data

    def apply(self, event: ReferenceEvent) -> None:
        if isinstance(event, Client):
            self.clients[event.client_id] = event
        elif isinstance(event, Project):
            self.projects[event.project_id] = event
        elif isinstance(event, Worker):
            self.workers[event.worker_id] = event
        else:
            self.forget_contract(event.contract_key)
            self.contracts[event.contract_key] = event
            self._by_project.setdefault(event.project_id, {})[event.contract_key] = event

    def forget_contract(self, contract_key: str) -> None:
        """Drop a contract version (a tombstone on the compacted topic, or a version moving project)."""
        old = self.contracts.pop(contract_key, None)
        if old is not None:
            self._by_project.get(old.project_id, {}).pop(contract_key, None)

    def contract_versions(self, project_id: str) -> list[ContractVersion]:
        return list(self._by_project.get(project_id, {}).values())
