"""Leader election through a Kafka consumer group: the member that holds partition 0 of the store topic leads.

Every instance joins the group `backbone-registry.<topic>` subscribed to the registry's one-partition
topic, so the group coordinator assigns that partition to exactly one live member at a time. The
cooperative-sticky assignor keeps it where it is when another instance joins (no needless change of
leader when a follower restarts). When the holder stops cleanly it leaves the group and another member
is assigned within a rebalance (about a second); when it dies, after the session timeout
(`BACKBONE_SCHEMA_REGISTRY_SESSION_TIMEOUT_MS`, 6 s by default, the broker's minimum).

The group only says who *should* lead. Safety does not rest on it: a member that was assigned the
partition claims the log (`SchemaStore.claim_leadership`), which fences every earlier writer through
the transactional producer's epoch. A member that lost the partition while paused cannot write once
the new leader has claimed. See docs/schema-registry.md for the failure modes.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from collections.abc import Callable

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from backbone.settings import KafkaSettings

log = structlog.get_logger("backbone.registry")


class LeaderElection:
    """A group member on the store topic; calls `on_elected` / `on_deposed` from its own thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        on_elected: Callable[[], None],
        on_deposed: Callable[[str], None],
        session_timeout_ms: int = 6_000,
    ) -> None:
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._stopping = threading.Event()
        self.holds_partition = False
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"backbone-registry.{topic}",
                "client.id": f"backbone-registry-{uuid.uuid4().hex[:8]}",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",  # the member reads nothing; it only holds the partition
            }
        )
        self._topic = topic
        # Log lines of the election's threads carry the fields bound where it was made (process name).
        self._context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=self._context.run, args=(self._run,), name="registry-election", daemon=True
        )

    def start(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consumer.poll(0.5)  # serves the rebalance callbacks; records are ignored
            except KafkaException as e:
                log.warning("registry_election_poll_failed", error=str(e))

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(p.partition == 0 for p in partitions):
            self.holds_partition = True
            log.info("registry_elected")
            # Claiming reads the whole log: not on this thread, which must keep polling the group.
            context = self._context.copy()
            threading.Thread(target=context.run, args=(self._on_elected,), name="registry-claim", daemon=True).start()

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "partition revoked")

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "group membership lost")

    def _drop(self, partitions: list[TopicPartition], reason: str) -> None:
        if any(p.partition == 0 for p in partitions):
            self.holds_partition = False
            self._on_deposed(reason)

    def close(self) -> None:
        """Leave the group, so another instance is elected at once instead of after the session timeout."""
        self._stopping.set()
        self._thread.join(timeout=5)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as e:
            log.warning("registry_election_close_failed", error=str(e))
