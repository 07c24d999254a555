"""The delivery connectors against the real broker, PostgreSQL and the simulators over HTTP on loopback.

End to end (entries → topology → connectors → simulators → acknowledgments) with sums that agree to the
cent; the billing engine down for a window; the same candidate twice; a connector killed with SIGKILL
mid-batch; a poisoned record that goes through the retry topic to the DLQ while the rest moves; a line
the billing engine refuses (no tax code) as an OPEN BILLING_REJECTED exception, billed again and
resolved once the contract is corrected; POSTING_ACK_TIMEOUT raised while an ERP is down and resolved
when its ack comes.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from delivery_harness import Processes, minor
from topology_harness import Harness, expected_worth, net_per_entry, net_postings, scenario

from backbone.domain.models import (
    BillingResponse,
    BillingStatus,
    BusinessException,
    Event,
    ExceptionKind,
    ExceptionStatus,
    InvoiceCandidate,
    PostingAck,
    PostingRequest,
    PostingStatus,
)
from backbone.kafka.topics import Topic
from tests.support import unique_name, wait_until
from tests.unit.domain import domain_builders as build

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def harness(settings):
    harness = Harness(settings, unique_name("dlv") + ".")
    yield harness
    harness.stop_all()


@pytest.fixture
def processes(settings, postgres_conninfo):
    processes = Processes(settings, postgres_conninfo)
    yield processes
    processes.close()


def candidate(index: int, *, prefix: str = "cand", project: str | None = None, **change: Any) -> InvoiceCandidate:
    fields: dict[str, Any] = {
        "occurred_at": AT,
        "source_system": "test",
        "correlation_id": f"TE-{prefix}-{index}",
        "candidate_id": f"{prefix}-{index}",
        "kind": "TIME",
        "time_entry_id": f"TE-{prefix}-{index}",
        "revision": 1,
        "project_id": project or f"P-{index % 12}",
        "client_id": f"C-{index % 5}",
        "worker_id": "W-1",
        "work_date": date(2026, 11, 1 + index % 28),
        "contract_id": "K-1",
        "contract_version": 1,
        "billable_minutes": 60 + index,
        "hourly_rate": Decimal("150.00"),
        "discount_percent": Decimal("0"),
        "amount": Decimal(60 + index) * Decimal("2.50"),
        "currency": "EUR",
        "tax_code": "VAT20",
    }
    return InvoiceCandidate(**(fields | change))


def publish(harness: Harness, topic: Topic, events: list[Event]) -> None:
    serde = harness.serdes.for_topic(topic)
    for event in events:
        harness.producer.produce(topic.name, key=event.key.encode(), value=serde.encode_value(event))
    assert harness.producer.flush(30) == 0


def responses(harness: Harness) -> list[BillingResponse]:
    return harness.committed_view(harness.topics.billing_responses)  # type: ignore[return-value]


def acks(harness: Harness) -> list[PostingAck]:
    return harness.committed_view(harness.topics.posting_acks)  # type: ignore[return-value]


def answered(harness: Harness, processes: Processes, ids: set[str]) -> bool:
    processes.check_alive()
    return ids <= {r.candidate_id for r in responses(harness)}


def one_each(ids: list[str]) -> list[str]:
    """Ids that occur more than once (empty when each occurs once)."""
    return [i for i, n in Counter(ids).items() if n > 1]


# --- end to end ---------------------------------------------------------------------------------------


def test_every_approved_entry_reaches_the_billing_engine_and_its_erp_once_and_the_sums_agree(
    harness, processes, postgres_conninfo
):
    first, later, _ = scenario(seed=11, count=50)
    events = first + later
    billing = processes.billing_sim()
    legacy, cloud = processes.erp_sim(), processes.erp_sim()
    prefix = harness.prefix
    harness.publish(events)
    harness.start_worker()
    processes.billing_connector(prefix, billing.url)
    processes.erp_connector(prefix, "legacy-erp", legacy.url)
    processes.erp_connector(prefix, "cloud-erp", cloud.url)
    read_model = unique_name("sink").replace("-", "_")
    processes.sink(prefix, read_model)

    worth, _ = expected_worth(events)
    capped = {e.time_entry_id for e in events if e.event_type == "time-entry" and e.project_id == "P-CAP"}
    wanted = {k: v for k, v in worth.items() if v and k not in capped}

    def delivered() -> bool:
        processes.check_alive()
        harness.check_alive()
        nets = {k: v for k, v in net_per_entry(harness.candidates()).items() if k not in capped}
        if nets != wanted:
            return False
        candidates = {c.candidate_id for c in harness.candidates()}
        postings = {p.posting_id for p in harness.read(harness.topics.posting_requests).values()}
        answered_ = {r.candidate_id for r in responses(harness)}
        acked = {a.posting_id for a in acks(harness)}
        return candidates <= answered_ and postings <= acked

    wait_until(delivered, timeout=240, interval=1.0, message="every candidate answered and every posting acked")

    candidates: list[InvoiceCandidate] = harness.committed_view(harness.topics.invoice_candidates)  # type: ignore[assignment]
    postings: list[PostingRequest] = harness.committed_view(harness.topics.posting_requests)  # type: ignore[assignment]
    items = billing.invoice_items()
    # one billing document per candidate, and the engine's sum is the topology's to the cent
    assert sorted(i["metadata"]["candidate_id"] for i in items) == sorted(c.candidate_id for c in candidates)
    assert sum(i["amount"] for i in items) == sum(minor(c.amount) for c in candidates)
    # one ERP document per posting, in the ERP its routing names, with the same sums
    for target, simulator in (("legacy-erp", legacy), ("cloud-erp", cloud)):
        mine = [p for p in postings if p.erp_target == target]
        lines = simulator.journal_lines()
        assert sorted(line["externalId"] for line in lines) == sorted(p.posting_id for p in mine), target
        for kind in ("REVENUE", "COST"):
            documents = sum(Decimal(line["amount"]) for line in lines if line["type"] == kind)
            assert documents == sum(p.amount for p in mine if p.posting_type == kind), (target, kind)
    assert sum(net_postings(postings, "REVENUE").values()) == sum(c.amount for c in candidates)
    # each answer published exactly once, all accepted
    answers, posted = responses(harness), acks(harness)
    assert not one_each([r.candidate_id for r in answers]) and not one_each([a.posting_id for a in posted])
    assert {r.status for r in answers} == {BillingStatus.ACCEPTED}
    assert {a.status for a in posted} == {PostingStatus.POSTED}
    # the read model holds the same: one row per candidate and answer, and the same money
    billed = sum(minor(c.amount) for c in candidates)

    def read_model_caught_up() -> tuple[Any, ...] | None:
        with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM {read_model}.invoice_candidates),"
                f" (SELECT coalesce(sum(amount), 0) FROM {read_model}.invoice_candidates),"
                f" (SELECT count(*) FROM {read_model}.billing_responses WHERE status = 'ACCEPTED'),"
                f" (SELECT count(*) FROM {read_model}.posting_acks WHERE status = 'POSTED')"
            ).fetchone()
        wanted_row = (len(candidates), Decimal(billed) / 100, len(candidates), len(postings))
        return row if row is not None and tuple(row) == wanted_row else None

    wait_until(read_model_caught_up, timeout=120, interval=1.0, message="the sink holds every candidate and answer")


# --- failures -------------------------------------------------------------------------------------------


def test_billing_engine_down_for_a_window_loses_and_doubles_nothing_and_the_breaker_opens_and_closes(
    harness, processes
):
    billing, erp = processes.billing_sim(), processes.erp_sim()
    billing_connector = processes.billing_connector(harness.prefix, billing.url)
    processes.erp_connector(harness.prefix, "legacy-erp", erp.url)
    before = [candidate(i, prefix="before") for i in range(30)]
    publish(harness, harness.topics.invoice_candidates, before)
    wait_until(lambda: answered(harness, processes, {c.candidate_id for c in before}), timeout=90)

    billing.faults(outage_s=6)
    during = [candidate(i, prefix="during") for i in range(60)]
    publish(harness, harness.topics.invoice_candidates, during)
    postings = [posting(i) for i in range(20)]
    publish(harness, harness.topics.posting_requests, postings)
    # while the engine is down the ERP's postings keep moving, and the breaker opens
    wait_until(lambda: {p.posting_id for p in postings} <= {a.posting_id for a in acks(harness)}, timeout=60)
    wait_until(
        lambda: billing_connector.metric("backbone_delivery_breaker_transitions_total", to="open") >= 1,
        timeout=30,
        message="the billing breaker opened",
    )

    wait_until(lambda: answered(harness, processes, {c.candidate_id for c in during}), timeout=120)
    assert billing_connector.metric("backbone_delivery_breaker_transitions_total", to="closed") >= 1
    items = billing.invoice_items()
    everything = before + during
    assert sorted(i["metadata"]["candidate_id"] for i in items) == sorted(c.candidate_id for c in everything)
    assert sum(i["amount"] for i in items) == sum(minor(c.amount) for c in everything)
    answers = responses(harness)
    assert not one_each([r.candidate_id for r in answers])
    assert {r.status for r in answers} == {BillingStatus.ACCEPTED}
    assert harness.dead_letters(harness.topics.invoice_candidates) == []


def test_the_same_candidate_delivered_twice_makes_one_billing_document(harness, processes):
    billing = processes.billing_sim()
    processes.billing_connector(harness.prefix, billing.url)
    twice = candidate(1, prefix="twice")
    publish(harness, harness.topics.invoice_candidates, [twice, twice])
    wait_until(lambda: len([r for r in responses(harness) if r.candidate_id == twice.candidate_id]) == 2, timeout=60)
    publish(harness, harness.topics.invoice_candidates, [twice])  # replayed later, after its first answer
    wait_until(lambda: len([r for r in responses(harness) if r.candidate_id == twice.candidate_id]) == 3, timeout=60)

    items = billing.invoice_items()
    assert [i["metadata"]["candidate_id"] for i in items] == [twice.candidate_id]
    assert {r.invoice_id for r in responses(harness)} == {items[0]["invoice"]}


def test_a_connector_killed_with_sigkill_mid_batch_leaves_one_document_and_one_answer_per_candidate(harness, processes):
    billing = processes.billing_sim("--latency-ms", "20")
    connector = processes.billing_connector(harness.prefix, billing.url, max_in_flight="8", batch_size="64")
    many = [candidate(i, prefix="kill") for i in range(300)]
    publish(harness, harness.topics.invoice_candidates, many)
    wait_until(lambda: len(billing.invoice_items()) >= 40, timeout=90, message="the connector is mid-way")
    connector.kill()
    delivered_before_restart = len(billing.invoice_items())
    assert delivered_before_restart < len(many), "the kill came too late to test anything"
    connector.start()

    wait_until(lambda: answered(harness, processes, {c.candidate_id for c in many}), timeout=180)
    items = billing.invoice_items()
    assert sorted(i["metadata"]["candidate_id"] for i in items) == sorted(c.candidate_id for c in many)
    assert not one_each([r.candidate_id for r in responses(harness)])  # exactly once, despite the kill


def test_a_record_that_keeps_failing_goes_through_the_retry_topic_to_the_dlq_while_the_rest_moves(harness, processes):
    billing = processes.billing_sim("--poison", "poison-0")
    processes.billing_connector(harness.prefix, billing.url, retry_rounds="2")
    # the engine fails (500) on every request about this one candidate, and only on those
    poisoned = candidate(0, prefix="poison")
    others = [candidate(i, prefix="fine", project=poisoned.project_id) for i in range(1, 40)]
    publish(harness, harness.topics.invoice_candidates, [poisoned, *others])

    wait_until(lambda: answered(harness, processes, {c.candidate_id for c in others}), timeout=60)
    dead = wait_until(lambda: harness.dead_letters(harness.topics.invoice_candidates), timeout=60)
    headers = dict(dead[0].headers())
    assert dead[0].key() == poisoned.key.encode()
    assert headers["backbone.error.topic"].decode() == harness.topics.invoice_candidates.name
    assert headers["backbone.error.class"] == b"TransientFailure"
    assert b"HTTP 500" in headers["backbone.error.message"]
    assert {
        "backbone.error.offset",
        "backbone.error.partition",
        "backbone.error.at",
        "backbone.error.processor",
    } <= set(headers)
    assert poisoned.candidate_id not in {r.candidate_id for r in responses(harness)}


def test_a_line_without_a_tax_code_is_refused_then_billed_again_once_the_contract_is_corrected(harness, processes):
    billing = processes.billing_sim()
    processes.billing_connector(harness.prefix, billing.url)
    harness.start_worker()
    # K1's tax code is blank: present for the core (it is not empty), missing for the billing engine
    untaxed = build.entry(time_entry_id="E-notax", duration_seconds=3725)  # 62 min at 150/h = 155.00
    taxed = build.entry(time_entry_id="E-taxed", project_id="P2")
    harness.publish(
        [
            build.client(),
            build.project(),
            build.project(project_id="P2"),
            build.worker(),
            build.contract(tax_code=" "),
            build.contract(contract_id="K2", project_id="P2"),
            untaxed,
            build.approval(time_entry_id="E-notax"),
            taxed,
            build.approval(time_entry_id="E-taxed"),
        ]
    )

    def rejection(status: ExceptionStatus) -> BusinessException | None:
        for exception in harness.read(harness.topics.exceptions).values():
            assert isinstance(exception, BusinessException)
            if (exception.kind, exception.status) == (ExceptionKind.BILLING_REJECTED, status):
                return exception
        return None

    def lines_of(entry_id: str) -> list[InvoiceCandidate]:
        return [c for c in harness.candidates() if c.time_entry_id == entry_id]

    opened = wait_until(lambda: rejection(ExceptionStatus.OPEN), timeout=90, message="BILLING_REJECTED is raised")
    [refused] = lines_of("E-notax")
    assert (opened.subject_id, opened.amount_at_risk, opened.currency, opened.project_id) == (
        refused.candidate_id,
        Decimal("155.00"),
        "EUR",
        "P1",
    )
    assert "tax_code_missing" in opened.details
    answer = next(r for r in responses(harness) if r.candidate_id == refused.candidate_id)
    assert (answer.status, answer.reason_code) == (BillingStatus.REJECTED, "tax_code_missing")

    def revenue_lines(entry_id: str) -> list[Decimal]:
        postings = harness.read(harness.topics.posting_requests).values()
        return [p.amount for p in postings if (p.time_entry_id, p.posting_type) == (entry_id, "REVENUE")]  # type: ignore[attr-defined]

    def revenue_of(entry_id: str) -> Decimal:
        return sum(revenue_lines(entry_id), Decimal(0))

    # the book learnt it: the refused line is not billed (its revenue reversed), and nothing is re-sent
    wait_until(
        lambda: sorted(revenue_lines("E-notax")) == [Decimal("-155.00"), Decimal("155.00")],
        timeout=60,
        message="the refused line's revenue is reversed",
    )
    assert [c.candidate_id for c in lines_of("E-notax")] == [refused.candidate_id]

    harness.publish([build.contract(tax_code="VAT20")])  # the correction of the same version
    resolved = wait_until(lambda: rejection(ExceptionStatus.RESOLVED), timeout=90, message="BILLING_REJECTED resolves")
    refused_, again = lines_of("E-notax")
    assert refused_ == refused and again.candidate_id != refused.candidate_id
    assert (again.kind, again.amount, again.tax_code) == ("TIME", Decimal("155.00"), "VAT20")
    assert (resolved.exception_id, resolved.opened_at) == (opened.exception_id, opened.opened_at)
    assert again.candidate_id in resolved.details

    everything = {c.candidate_id for c in harness.candidates()}
    wait_until(lambda: answered(harness, processes, everything), timeout=90, message="every line answered")
    accepted = {r.candidate_id for r in responses(harness) if r.status == BillingStatus.ACCEPTED}
    assert accepted == everything - {refused.candidate_id}
    assert not one_each([r.candidate_id for r in responses(harness)])
    # one document per accepted line, and the engine, the candidates it took and the revenue agree to the cent
    items = billing.invoice_items()
    assert sorted(i["metadata"]["candidate_id"] for i in items) == sorted(accepted)
    taken = [c for c in harness.candidates() if c.candidate_id in accepted]
    assert sum(i["amount"] for i in items) == sum(minor(c.amount) for c in taken) == minor(Decimal("305.00"))
    assert {e: revenue_of(e) for e in ("E-notax", "E-taxed")} == {
        "E-notax": Decimal("155.00"),
        "E-taxed": Decimal("150.00"),
    }


def test_a_posting_without_an_acknowledgment_raises_posting_ack_timeout_until_its_ack_comes(harness, processes):
    erp = processes.erp_sim()
    processes.erp_connector(harness.prefix, "legacy-erp", erp.url, ack_timeout_s="2", ack_timeout_check_s="0.2")
    prompt = posting(0)
    publish(harness, harness.topics.posting_requests, [prompt])
    wait_until(lambda: prompt.posting_id in {a.posting_id for a in acks(harness)}, timeout=60, message="connector up")
    erp.faults(outage_s=12)
    late = posting(1)
    publish(harness, harness.topics.posting_requests, [late])

    def timeout_of(status: ExceptionStatus) -> BusinessException | None:
        for exception in harness.read(harness.topics.exceptions).values():
            if (exception.kind, exception.subject_id, exception.status) == (
                ExceptionKind.POSTING_ACK_TIMEOUT,
                late.posting_id,
                status,
            ):
                return exception  # type: ignore[return-value]
        return None

    opened = wait_until(lambda: timeout_of(ExceptionStatus.OPEN), timeout=60, message="POSTING_ACK_TIMEOUT opens")
    assert (opened.amount_at_risk, opened.currency, opened.project_id) == (late.amount, "EUR", late.project_id)
    assert late.posting_id not in {a.posting_id for a in acks(harness)}
    resolved = wait_until(lambda: timeout_of(ExceptionStatus.RESOLVED), timeout=90, message="it resolves")
    assert resolved.exception_id == opened.exception_id and resolved.opened_at == opened.opened_at
    assert [a.status for a in acks(harness) if a.posting_id == late.posting_id] == [PostingStatus.POSTED]


def posting(index: int) -> PostingRequest:
    return PostingRequest(
        occurred_at=AT,
        source_system="test",
        correlation_id=f"TE-post-{index}",
        posting_id=f"post-{unique_name('p')}-{index}",
        posting_type="REVENUE",
        time_entry_id=f"TE-post-{index}",
        revision=1,
        project_id=f"P-{index % 4}",
        worker_id="W-1",
        work_date=date(2026, 11, 3),
        amount=Decimal("375.00") + index,
        currency="EUR",
        erp_target="legacy-erp",
    )
