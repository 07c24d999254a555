"""billing-rules.md §1: which revision of an entry counts, as a state machine over entries and decisions."""

import pytest
from domain_builders import approval, entry, reject

from backbone.domain.entries import Outcome, awaiting_approval, billed_revision, new_entry, priced_view, record


def fold(*events):
    state = new_entry("E1")
    changes = []
    for event in events:
        recorded = record(state, event)
        state = recorded.state
        changes += recorded.changes
    return state, changes


E1, E2, E3 = entry(revision=1), entry(revision=2, duration_seconds=7200), entry(revision=3, duration_seconds=60)
A1, A2, A3 = approval(revision=1), approval(revision=2), approval(revision=3)
R1, R2 = reject(revision=1), reject(revision=2)
DEL2 = entry(revision=2, deleted=True)


@pytest.mark.parametrize(
    ("events", "billed"),
    [
        pytest.param([E1], None, id="unapproved-entry-is-not-billed"),
        pytest.param([E1, A1], 1, id="approved-revision-is-billed"),
        pytest.param([A1, E1], 1, id="approval-before-entry-waits-for-it"),
        pytest.param([A1], None, id="approval-alone-bills-nothing"),
        pytest.param([E1, A1, R1], None, id="approve-then-reject-is-rejected"),
        pytest.param([E1, R1, A1], 1, id="reject-then-approve-is-approved"),
        pytest.param([E1, E2, A1, A2], 2, id="highest-approved-revision-wins"),
        pytest.param([E1, A1, E2], 1, id="unapproved-new-revision-leaves-the-approved-one-billed"),
        pytest.param([E1, A1, E2, A2, R2], 1, id="unapproving-the-latest-falls-back-to-an-earlier-approval"),
        pytest.param([E1, A1, A2], 1, id="approval-of-an-unseen-revision-waits"),
        pytest.param([E1, A1, A2, E2], 2, id="waiting-approval-applies-when-its-revision-arrives"),
        pytest.param([E2, E1, A1, A2], 2, id="revisions-arriving-out-of-order"),
        pytest.param([E1, A1, DEL2], None, id="deletion-needs-no-approval-and-zeroes-the-entry"),
        pytest.param([E1, A1, DEL2, E3, A3], None, id="revisions-and-approvals-after-deletion-are-ignored"),
    ],
)
def test_billed_revision(events, billed) -> None:
    state, _ = fold(*events)
    revision = billed_revision(state)
    assert (revision.revision if revision else None) == billed


def test_deletion_is_terminal_and_counts_what_it_ignores() -> None:
    state, _ = fold(E1, A1, DEL2, E3, A3)
    assert state.ignored == 2
    assert priced_view(state) == DEL2
    assert record(state, approval(revision=2)).outcome == Outcome.IGNORED_AFTER_DELETION


def test_duplicate_event_id_changes_nothing() -> None:
    state, _ = fold(E1, A1)
    recorded = record(state, A1)
    assert recorded.outcome == Outcome.DUPLICATE
    assert recorded.state == state and recorded.changes == ()


@pytest.mark.parametrize(
    ("events", "handed_off"),
    [
        pytest.param([E1], [], id="nothing-to-price-before-approval"),
        pytest.param([E1, A1], [("P1", 1)], id="approval-hands-the-revision-to-its-project"),
        pytest.param([E1, A1, approval(revision=1)], [("P1", 1)], id="same-billed-revision-again-hands-off-nothing"),
        pytest.param([E1, A1, R1], [("P1", 1), ("P1", None)], id="unapproval-hands-off-nothing-approved"),
        pytest.param([E1, DEL2], [], id="deleting-an-entry-never-billed-hands-off-nothing"),
        pytest.param([E1, A1, DEL2], [("P1", 1), ("P1", 2)], id="deletion-hands-off-the-deleting-revision"),
        pytest.param(
            [E1, A1, entry(revision=2, project_id="P2"), A2],
            [("P1", 1), ("P1", None), ("P2", 2)],
            id="entry-moving-project-withdraws-from-the-old-book",
        ),
    ],
)
def test_hand_off_to_the_project_book(events, handed_off) -> None:
    _, changes = fold(*events)
    assert [(c.project_id, c.entry.revision if c.entry else None) for c in changes] == handed_off


def test_changes_are_numbered_per_entry_in_the_order_they_are_handed_off() -> None:
    state, changes = fold(E1, A1, entry(revision=2, project_id="P2"), A2, R2)
    assert [(c.project_id, c.sequence) for c in changes] == [("P1", 1), ("P1", 2), ("P2", 3), ("P2", 4), ("P1", 5)]
    assert state.handed_off == 5


def test_correlation_id_defaults_to_the_time_entry_id() -> None:
    _, changes = fold(E1, A1)
    assert changes[0].correlation_id == "E1"
    _, changes = fold(entry(correlation_id="corr-9"), A1)
    assert changes[0].correlation_id == "corr-9"


@pytest.mark.parametrize(
    ("events", "waiting"),
    [
        pytest.param([E1], 1, id="new-entry-waits"),
        pytest.param([E1, A1], None, id="decided-entry-does-not-wait"),
        pytest.param([E1, A1, E2], 2, id="new-revision-waits-again"),
        pytest.param([E1, DEL2], None, id="deleted-entry-does-not-wait"),
    ],
)
def test_entries_waiting_for_approval(events, waiting) -> None:
    state, _ = fold(*events)
    pending = awaiting_approval(state)
    assert (pending.revision if pending else None) == waiting
