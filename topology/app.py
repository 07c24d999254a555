"""The billing topology's wiring: topics, the reference broadcast table, the stages and the worker loop.

`run_topology(settings, workers=N)` is the entry point of `backbone run topology`: one worker in this
process, or N worker processes in one consumer group, each claiming a free worker slot on this host
(its transactional id and static group membership). What the stages do is in `topology.stages`; how
a batch's outputs, state and offsets commit together is in `backbone.streams.loop`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from backbone.domain.routing import RoutingRules, parse_routing
from backbone.kafka import topics as catalog
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.observability import serve_metrics
from backbone.settings import Settings
from backbone.streams import clients
from backbone.streams.broadcast import BroadcastTable
from backbone.streams.loop import SlotLock, StreamWorker
from backbone.streams.native import limit_malloc_arenas
from topology.reference import ReferenceFollower, ReferenceStore
from topology.stages import BillingStages, TopologyTopics

log = structlog.get_logger(__name__)
DEFAULT_APP_ID = "backbone-topology"
DEFAULT_ROUTING = Path(__file__).with_name("routing.toml")
INTERNAL_PARTITIONS = catalog.TRANSACTIONAL_PARTITIONS


class RoutingFile:
    """The routing rules file, re-read when it changes (checked at most once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = path.stat().st_mtime
        self._checked = time.monotonic()
        self.rules: RoutingRules = parse_routing(path.read_text(), source=str(path))

    def current(self) -> RoutingRules:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                try:
                    self.rules = parse_routing(self.path.read_text(), source=str(self.path))
                    self._mtime = mtime
                    log.info("routing rules reloaded", path=str(self.path))
                except Exception as error:  # keep routing by the last good rules, say why
                    log.error("routing rules not reloaded", path=str(self.path), error=str(error))
        return self.rules


class BillingTopology:
    """One topology worker: its slot, its stages and the loop that runs them."""

    def __init__(
        self,
        settings: Settings,
        *,
        app_id: str = DEFAULT_APP_ID,
        topics: TopologyTopics | None = None,
        routing_path: Path = DEFAULT_ROUTING,
        slot: int | None = None,
    ) -> None:
        limit_malloc_arenas()  # before any Kafka client or RocksDB starts its threads
        self.settings = settings
        self.topics = topics or TopologyTopics()
        self.internal = catalog.internal_topics(app_id, INTERNAL_PARTITIONS)
        serdes = SerdeCache(registry_client(settings.registry.client_config()))
        self.reference = ReferenceStore()
        self.stages = BillingStages(
            self.topics, self.internal, serdes, self.reference, RoutingFile(routing_path).current
        )
        self.lock = SlotLock(settings.runtime.data_dir / "slots", app_id, settings.streams.instance, slot)
        follower = ReferenceFollower(self.reference, serdes, {t.name: t for t in self.topics.reference})
        self.broadcast = BroadcastTable(
            clients.reader(settings.kafka, f"{app_id}-reference"), [t.name for t in self.topics.reference], follower
        )
        self.worker = StreamWorker(
            kafka=settings.kafka,
            streams=settings.streams,
            slot=self.lock.slot,
            stages=self.stages.stages(),
            broadcast=self.broadcast,
            on_assigned=self._catch_up_master_data,
            state_dir=(
                settings.runtime.data_dir / "state" / self.lock.slot.transactional_id
                if settings.streams.state_on_disk
                else None
            ),
        )

    def _catch_up_master_data(self, _tasks: list[tuple[str, int]]) -> None:
        """Newly assigned books may have been priced elsewhere with master data this worker has not read yet."""
        self.broadcast.catch_up()

    def run(self) -> None:
        """Create missing topics, load master data, then process until SIGTERM/SIGINT."""
        apply_topics(
            clients.admin(self.settings.kafka),
            self.topics.all() + self.internal.all(),
            replication_factor=self.settings.kafka.replication_factor,
        )
        self.worker.run()


def run_topology(settings: Settings, workers: int = 1, **options: Any) -> None:
    """`backbone run topology`: one worker in this process, or `workers` worker processes."""
    prefix = options.pop("topic_prefix", None)
    if workers <= 1:
        serve_metrics(settings.runtime.metrics_port)
        topics = TopologyTopics.prefixed(prefix) if prefix else options.pop("topics", None)
        BillingTopology(settings, topics=topics, **options).run()
        return
    options["topic_prefix"] = prefix
    children = [_spawn_worker(settings, index, options) for index in range(workers)]

    def stop_children(*_: Any) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop_children)
    try:
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()
    failed = [child.returncode for child in children if child.returncode not in (0, -signal.SIGTERM)]
    if failed:
        sys.exit(failed[0])


def _spawn_worker(settings: Settings, index: int, options: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if settings.runtime.metrics_port is not None:
        env["BACKBONE_METRICS_PORT"] = str(settings.runtime.metrics_port + index)
    env.setdefault("BACKBONE_KAFKA_BOOTSTRAP_SERVERS", settings.kafka.servers)
    for name, value in settings.registry.client_environment().items():  # URL and credentials
        env.setdefault(name, value)
    args = [sys.executable, "-m", "topology"]
    if options.get("slot_base") is not None:
        args += ["--slot", str(options["slot_base"] + index)]
    for name in ("app_id", "topic_prefix", "routing_path"):
        if options.get(name) is not None:
            args += [f"--{name.replace('_', '-')}", str(options[name])]
    return subprocess.Popen(args, env=env)
