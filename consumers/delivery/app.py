"""Wiring of `backbone run billing-connector` and `backbone run erp-connector --target NAME`.

Each connector is one `DeliveryWorker` in its own consumer group (`backbone-billing-connector`,
`backbone-erp-connector-<target>`): its topics are created when missing, its worker slot claimed on
this host (the slot is its transactional id, so a restarted connector fences its dead predecessor),
its metrics served on `BACKBONE_METRICS_PORT`, and it runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from backbone.kafka import topics as catalog
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.kafka.topics import Topic
from backbone.observability import serve_metrics
from backbone.settings import Settings
from backbone.streams import clients
from backbone.streams.loop import SlotLock
from consumers.delivery.settings import BillingConnectorSettings, ConnectorSettings, ErpConnectorSettings
from consumers.delivery.systems import BillingEngine, Erp, System
from consumers.delivery.worker import DeliveryTopics, DeliveryWorker

log = structlog.get_logger(__name__)
BILLING_APP_ID = "backbone-billing-connector"
ERP_APP_ID = "backbone-erp-connector"


def prefixed(topic: Topic, prefix: str | None) -> Topic:
    """`topic` (and its DLQ) renamed `<prefix><name>`; unchanged without a prefix."""
    if not prefix:
        return topic
    dlq = replace(topic.dlq, name=f"{prefix}{topic.dlq.name}") if topic.dlq else None
    return replace(topic, name=f"{prefix}{topic.name}", dlq=dlq)


def delivery_topics(
    input_topic: Topic, acks: Topic, app_id: str, prefix: str | None, *, pending: bool
) -> DeliveryTopics:
    """The connector's catalog topics and its own: `<app>-retry` and, for an ERP, `<app>-pending-changelog`."""
    source = prefixed(input_topic, prefix)
    retry = Topic(name=f"{app_id}-retry", event=None, partitions=source.partitions, retention_ms=7 * catalog.DAY_MS)
    changelog = Topic(
        name=f"{app_id}-pending-changelog",
        event=None,
        partitions=source.partitions,
        compacted=True,
        retention_ms=catalog.FOREVER,
    )
    return DeliveryTopics(
        input=source,
        acks=prefixed(acks, prefix),
        exceptions=prefixed(catalog.EXCEPTIONS, prefix),
        retry=retry,
        pending_changelog=changelog if pending else None,
    )


def build_billing_connector(
    settings: Settings, connector: BillingConnectorSettings, slot: int | None = None
) -> DeliveryWorker:
    app_id = connector.app_id or BILLING_APP_ID
    topics = delivery_topics(
        catalog.INVOICE_CANDIDATES, catalog.BILLING_RESPONSES, app_id, connector.topic_prefix, pending=False
    )
    return _build(settings, connector, BillingEngine(), connector.url, topics, app_id, "billing-connector", slot)


def build_erp_connector(
    settings: Settings, connector: ErpConnectorSettings, target: str, url: str | None = None, slot: int | None = None
) -> DeliveryWorker:
    app_id = connector.app_id or f"{ERP_APP_ID}-{target}"
    topics = delivery_topics(
        catalog.POSTING_REQUESTS, catalog.POSTING_ACKS, app_id, connector.topic_prefix, pending=True
    )
    worker = _build(
        settings,
        connector,
        Erp(target),
        url or connector.url_for(target),
        topics,
        app_id,
        f"erp-connector:{target}",
        slot,
        ack_timeout_s=connector.ack_timeout_s,
        ack_timeout_check_s=connector.ack_timeout_check_s,
    )
    return worker


def _build(
    settings: Settings,
    connector: ConnectorSettings,
    system: System,
    url: str,
    topics: DeliveryTopics,
    app_id: str,
    name: str,
    slot: int | None,
    **options: float,
) -> DeliveryWorker:
    apply_topics(clients.admin(settings.kafka), topics.all(), replication_factor=settings.kafka.replication_factor)
    lock = SlotLock(settings.runtime.data_dir / "slots", app_id, settings.streams.instance, slot)
    worker = DeliveryWorker(
        kafka=settings.kafka,
        streams=settings.streams.model_copy(update={"batch_size": connector.batch_size}),
        slot=lock.slot,
        system=system,
        url=url,
        settings=connector,
        topics=topics,
        serdes=SerdeCache(registry_client(settings.registry.client_config())),
        connector=name,
        **options,  # type: ignore[arg-type]
    )
    worker.slot_lock = lock  # type: ignore[attr-defined]  # held for the life of the worker
    log.info(
        "delivery connector starting",
        connector=name,
        url=url,
        input=topics.input.name,
        acks=topics.acks.name,
        retry=topics.retry.name,
        max_in_flight=connector.max_in_flight,
        transactional_id=lock.slot.transactional_id,
    )
    return worker


def run_billing_connector(settings: Settings, connector: BillingConnectorSettings, slot: int | None = None) -> None:
    """`backbone run billing-connector`: invoice candidates to the billing engine, its answers back."""
    serve_metrics(settings.runtime.metrics_port)
    build_billing_connector(settings, connector, slot).run()


def run_erp_connector(
    settings: Settings, connector: ErpConnectorSettings, target: str, url: str | None = None, slot: int | None = None
) -> None:
    """`backbone run erp-connector --target NAME`: that target's posting requests to its ERP, acks back."""
    serve_metrics(settings.runtime.metrics_port)
    build_erp_connector(settings, connector, target, url, slot).run()
