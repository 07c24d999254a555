"""The billing topology on the real broker: the candidates' net amount per entry equals the pure core's.

A firm of 220 entries raising every entry exception kind, with amendments, un-approvals, deletions,
a late worker, a retroactive contract amendment, a terminated contract and a poison record, is run
through 1 worker, through 3 workers, and through a worker killed with SIGKILL and restarted. Rejected
ERP acknowledgments and billing responses open exceptions that later acceptances resolve.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from topology_harness import (
    Harness,
    cap_of,
    expected_costs,
    expected_open_blocks,
    expected_worth,
    net_per_entry,
    net_postings,
    output_id,
    scenario,
)

from backbone.domain.models import BillingResponse, ExceptionKind, ExceptionStatus, PostingAck
from tests.support import unique_name, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTRY_KINDS = {
    ExceptionKind.UNKNOWN_WORKER,
    ExceptionKind.UNKNOWN_PROJECT,
    ExceptionKind.PROJECT_NOT_ACTIVE,
    ExceptionKind.NO_CONTRACT,
    ExceptionKind.MISSING_TAX_CODE,
    ExceptionKind.NO_RATE,
    ExceptionKind.CAP_EXCEEDED,
}


@pytest.fixture
def harness(settings):
    harness = Harness(settings, unique_name("topo") + ".")
    yield harness
    harness.stop_all()


def expected_nets(events, capped: str = "P-CAP"):
    """Uncapped worth per entry outside the capped project, its entries, and their capped total."""
    worth, reference = expected_worth(events)
    capped_entries = {e.time_entry_id for e in events if e.event_type == "time-entry" and e.project_id == capped}
    uncapped = {k: v for k, v in worth.items() if v and k not in capped_entries}
    cap = cap_of(reference, capped)
    capped_total = min(cap, sum((worth[k] for k in capped_entries), Decimal(0)))
    return uncapped, capped_entries, capped_total


def reconciled(harness, uncapped, capped_entries, capped_total):
    harness.check_alive()
    nets = net_per_entry(harness.candidates())
    mine = {k: v for k, v in nets.items() if k not in capped_entries}
    capped = sum((v for k, v in nets.items() if k in capped_entries), Decimal(0))
    return mine == uncapped and capped == capped_total


def output_problems(harness, events) -> list[str]:
    """What is wrong with the outputs, read as a read_committed consumer sees them (empty when right)."""
    t = harness.topics
    views = {
        topic.name: harness.committed_view(topic) for topic in (t.invoice_candidates, t.posting_requests, t.exceptions)
    }
    problems = []
    for name, view in views.items():
        twice = [i for i, n in Counter(map(output_id, view)).items() if n > 1]
        if twice:
            problems.append(f"{name}: {len(twice)} output ids twice in the read_committed view, e.g. {twice[:3]}")
    candidates, postings, exceptions = views.values()
    if net_postings(postings, "REVENUE") != net_per_entry(candidates):
        problems.append("REVENUE postings per entry differ from the invoice candidates")
    if net_postings(postings, "COST") != expected_costs(events):
        problems.append("COST postings per entry differ from the entries' costs")
    latest = {(e.kind, e.subject_id): e for e in exceptions}
    blocks = expected_open_blocks(events)
    for (kind, entry_id), exception in latest.items():
        wanted = blocks.get(entry_id)
        if kind == ExceptionKind.CAP_EXCEEDED or kind not in ENTRY_KINDS:
            continue
        if wanted is None or wanted[0] != kind:
            if exception.status != ExceptionStatus.RESOLVED:
                problems.append(f"{kind} of {entry_id} is {exception.status}, expected RESOLVED")
        elif exception.status != ExceptionStatus.OPEN or (
            wanted[1] is not None and exception.amount_at_risk != wanted[1]
        ):
            problems.append(
                f"{kind} of {entry_id}: {exception.status} {exception.amount_at_risk}, expected OPEN {wanted[1]}"
            )
    missing = [k for k, (kind, _) in blocks.items() if (kind, k) not in latest]
    if missing:
        problems.append(f"entries blocked without an exception: {missing[:5]}")
    return problems


def capped_totals_hold(harness, events, capped_entries) -> bool:
    """billed ≤ cap, and billed + amount at risk = what the capped project's entries are worth uncapped."""
    worth, _ = expected_worth(events)
    nets = net_per_entry(harness.candidates())
    billed = sum((nets.get(k, Decimal(0)) for k in capped_entries), Decimal(0))
    latest = {(e.kind, e.subject_id): e for e in harness.read(harness.topics.exceptions).values()}
    at_risk = sum(
        (e.amount_at_risk or Decimal(0))
        for (kind, k), e in latest.items()
        if kind == ExceptionKind.CAP_EXCEEDED and k in capped_entries and e.status == ExceptionStatus.OPEN
    )
    return billed + at_risk == sum((worth[k] for k in capped_entries), Decimal(0))


def check_outputs(harness, events, capped_entries) -> None:
    problems: list[str] = []

    def right() -> bool:
        problems[:] = output_problems(harness, events)
        return not problems and capped_totals_hold(harness, events, capped_entries)

    try:
        wait_until(right, timeout=60, interval=1.0, message="postings, exceptions and ids consistent")
    except AssertionError:
        raise AssertionError(f"outputs wrong: {problems or 'cap totals do not add up'}") from None
    dead = {topic.name: len(harness.dead_letters(topic)) for topic in harness.topics.all() if topic.dlq}
    assert {name: n for name, n in dead.items() if n} == {harness.topics.time_entries.name: 1}


def wait_reconciled(harness, uncapped, capped_entries, capped_total, *, timeout: float) -> None:
    """Wait until every entry's net billed amount is right; on failure, show the wrong entries' candidates."""
    try:
        wait_until(
            lambda: reconciled(harness, uncapped, capped_entries, capped_total),
            timeout=timeout,
            interval=1.0,
            message="net amount per entry equals the pure core's",
        )
    except AssertionError:
        nets = net_per_entry(harness.candidates())
        wrong = {
            k: (nets.get(k), uncapped.get(k))
            for k in set(nets) | set(uncapped)
            if k not in capped_entries and nets.get(k) != uncapped.get(k)
        }
        history = {
            k: [
                (c.kind, c.revision, c.contract_version, c.amount, c.candidate_id[:8])
                for c in harness.candidates()
                if c.time_entry_id == k
            ]
            for k in sorted(wrong)[:5]
        }
        raise AssertionError(
            f"{len(wrong)} entries billed wrong (billed, expected): {sorted(wrong.items())[:20]}; "
            f"their candidates (kind, revision, contract version, amount, id): {history}"
        ) from None


def run_scenario(harness, workers: int, kill_after_first: bool = False) -> None:
    first, later, _ = scenario()
    uncapped, capped_entries, capped_total = expected_nets(first + later)
    harness.publish(first)
    harness.publish_raw(harness.topics.time_entries, b"E-POISON", b"\x00\x00\x00\x00\x07 not avro at all")
    for _ in range(workers):
        harness.start_worker()
    if kill_after_first:
        wait_until(lambda: len(harness.candidates()) > 20, timeout=120, message="first candidates")
        harness.kill(harness.workers[0])
        harness.start_worker()
    harness.publish(later)
    if kill_after_first:
        harness.kill(harness.workers[-1])
        harness.start_worker()
    wait_reconciled(harness, uncapped, capped_entries, capped_total, timeout=180)
    wait_until(
        lambda: {e.kind for e in harness.read(harness.topics.exceptions).values()} >= ENTRY_KINDS,
        timeout=60,
        message="every entry exception kind raised",
    )
    check_outputs(harness, first + later, capped_entries)
    [poison] = harness.dead_letters(harness.topics.time_entries)
    headers = dict(poison.headers())
    assert headers["backbone.error.topic"] == harness.topics.time_entries.name.encode()
    assert {
        "backbone.error.partition",
        "backbone.error.offset",
        "backbone.error.class",
        "backbone.error.message",
        "backbone.error.processor",
        "backbone.error.at",
    } <= set(headers)


def test_one_worker_bills_what_the_pure_core_bills(harness) -> None:
    run_scenario(harness, workers=1)


def test_three_workers_bill_the_same(harness) -> None:
    run_scenario(harness, workers=3)


@pytest.mark.chaos
def test_kill_9_and_restart_bills_the_same(harness) -> None:
    run_scenario(harness, workers=1, kill_after_first=True)


@pytest.mark.chaos
def test_kill_9_five_times_under_load_and_workers_joining_and_leaving(harness) -> None:
    """Workers are killed at random moments while input keeps arriving; one joins, one leaves."""
    rnd = random.Random(11)
    first, later, _ = scenario(seed=13, count=900)
    uncapped, capped_entries, capped_total = expected_nets(first + later)
    harness.publish_raw(harness.topics.time_entries, b"E-POISON", b"\x00\x00\x00\x00\x07 not avro at all")
    live = [harness.start_worker(), harness.start_worker()]
    events = first + later
    chunks = [events[i : i + 150] for i in range(0, len(events), 150)]
    kills = sorted(rnd.sample(range(1, len(chunks)), 5))
    for index, chunk in enumerate(chunks):
        harness.publish(chunk)
        if index in kills:
            seen = len(harness.committed_view(harness.topics.invoice_candidates))
            wait_until(
                lambda seen=seen: len(harness.committed_view(harness.topics.invoice_candidates)) > seen,
                timeout=120,
                message="progress before the next kill",
            )
            victim = live.pop(rnd.randrange(len(live)))
            harness.kill(victim)
            live.append(harness.start_worker())
        if index == len(chunks) // 2:
            live.append(harness.start_worker())  # a worker joins mid-stream
    leaving = live.pop(0)
    leaving.terminate()  # and one leaves
    assert leaving.wait(timeout=60) == 0
    leaving.killed = True
    wait_reconciled(harness, uncapped, capped_entries, capped_total, timeout=240)
    check_outputs(harness, events, capped_entries)


def test_rejections_open_exceptions_that_later_acceptances_resolve(harness) -> None:
    at = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    later = at + timedelta(hours=1)
    env = {"source_system": "erp-sim", "correlation_id": "corr-7"}

    def ack(posting_id: str, status: str, when: datetime) -> PostingAck:
        rejected = status == "REJECTED"
        return PostingAck(
            **env,
            occurred_at=when,
            posting_id=posting_id,
            erp_target="erp-eu",
            status=status,
            error_code="GL-404" if rejected else None,
            error_message="unknown GL account" if rejected else None,
            erp_document_id=None if rejected else f"DOC-{posting_id}",
        )

    def response(status: str, when: datetime) -> BillingResponse:
        rejected = status == "REJECTED"
        return BillingResponse(
            **env,
            occurred_at=when,
            candidate_id="C-1",
            status=status,
            reason_code="NO-VAT-ID" if rejected else None,
            invoice_id=None if rejected else "INV-1",
        )

    harness.publish([ack("PR-1", "REJECTED", at), ack("PR-2", "REJECTED", at), response("REJECTED", at)])
    harness.start_worker()
    # PR-2 is rejected twice before it posts: the repeat must not open a second exception
    harness.publish([ack("PR-1", "POSTED", later), ack("PR-2", "REJECTED", later), response("ACCEPTED", later)])
    harness.publish([ack("PR-2", "POSTED", later + timedelta(hours=1))])

    def exceptions():
        return list(harness.read(harness.topics.exceptions).values())

    wait_until(
        lambda: sum(e.status == ExceptionStatus.RESOLVED for e in exceptions()) >= 3,
        timeout=120,
        message="three rejections resolved",
    )
    harness.check_alive()
    seen = sorted((e.subject_id, e.kind, e.status) for e in exceptions())
    assert seen == [
        ("C-1", ExceptionKind.BILLING_REJECTED, ExceptionStatus.OPEN),
        ("C-1", ExceptionKind.BILLING_REJECTED, ExceptionStatus.RESOLVED),
        ("PR-1", ExceptionKind.POSTING_REJECTED, ExceptionStatus.OPEN),
        ("PR-1", ExceptionKind.POSTING_REJECTED, ExceptionStatus.RESOLVED),
        ("PR-2", ExceptionKind.POSTING_REJECTED, ExceptionStatus.OPEN),
        ("PR-2", ExceptionKind.POSTING_REJECTED, ExceptionStatus.RESOLVED),
    ]
    resolved = {e.subject_id: e for e in exceptions() if e.status == ExceptionStatus.RESOLVED}
    assert {e.opened_at for e in resolved.values()} == {at}  # the rejection's time, kept until resolution
    assert {e.correlation_id for e in exceptions()} == {"corr-7"}
    assert "GL-404" in next(e.details for e in exceptions() if e.subject_id == "PR-1")
