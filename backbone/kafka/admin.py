"""Applying the topic catalog to a cluster: create what is missing, report what drifted.

Applying is idempotent: a second run creates nothing. Drift (a topic with fewer partitions or a
different cleanup policy than the catalog says) is reported, not "fixed" behind the operator's back:
partitions can only grow and a policy change can delete data, so those are decisions for a person.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from backbone.errors import ServiceUnavailableError
from backbone.kafka.topics import ALL_TOPICS, Topic

CHECKED_CONFIGS = ("cleanup.policy", "retention.ms")


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def apply_topics(
    admin: AdminClient, topics: tuple[Topic, ...] = ALL_TOPICS, *, replication_factor: int = 1
) -> ApplyReport:
    """Create the catalog's missing topics and compare the existing ones with the catalog."""
    report = ApplyReport()
    existing = _describe(admin)
    missing = [t for t in topics if t.name not in existing]
    raced = _create(admin, missing, replication_factor)
    if raced:  # created a moment ago (by us or a concurrent apply) but not yet in our metadata
        existing = _describe(admin, wait_for=raced)
    report.created = [t.name for t in missing if t.name not in raced]
    present = [t for t in topics if t.name in existing]
    configs = _configs(admin, [t.name for t in present])
    for topic in present:
        problems = _drift(topic, existing[topic.name], configs.get(topic.name, {}))
        report.drift += problems
        if not problems:
            report.unchanged.append(topic.name)
    return report


def _describe(admin: AdminClient, wait_for: set[str] = frozenset()) -> dict[str, int]:  # type: ignore[assignment]
    deadline = time.monotonic() + 15
    while True:
        try:
            metadata = admin.list_topics(timeout=15)
        except KafkaException as error:
            raise ServiceUnavailableError(
                f"cannot list topics: {error}", hint="is Kafka running? try `backbone status`"
            ) from error
        topics = {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
        if wait_for <= topics.keys() or time.monotonic() > deadline:
            return topics
        time.sleep(0.1)


def _create(admin: AdminClient, topics: list[Topic], replication_factor: int) -> set[str]:
    """Create `topics`; the names that turned out to exist already."""
    if not topics:
        return set()
    new = [NewTopic(t.name, t.partitions, replication_factor, config=t.config()) for t in topics]
    raced = set()
    for name, future in admin.create_topics(new, request_timeout=30).items():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise ServiceUnavailableError(f"cannot create topic {name}: {error}") from error
            raced.add(name)
    return raced


def _configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    result: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=30).items():
        entries = future.result()
        result[resource.name] = {k: entries[k].value for k in CHECKED_CONFIGS if k in entries}
    return result


def _drift(topic: Topic, partitions: int, config: dict[str, str]) -> list[str]:
    problems = []
    if partitions != topic.partitions:
        problems.append(f"{topic.name}: {partitions} partitions, catalog says {topic.partitions}")
    for key, wanted in topic.config().items():
        if key in config and config[key] != wanted:
            problems.append(f"{topic.name}: {key}={config[key]}, catalog says {wanted}")
    return problems
