"""billing-rules.md §3 (which contract version) and §4 (which rate), and the cap of §8."""

from datetime import date
from decimal import Decimal

import pytest
from domain_builders import contract, line

from backbone.domain.rating import contract_cap, resolve_rate, select_contract_version, specificity

OCT, NOV = date(2026, 10, 15), date(2026, 11, 15)
V1 = contract(version=1, effective_from=date(2026, 1, 1), default_hourly_rate=Decimal("100"))
AMENDMENT = contract(version=2, effective_from=date(2026, 11, 1), default_hourly_rate=Decimal("120"))


@pytest.mark.parametrize(
    ("versions", "work_date", "expected"),
    [
        pytest.param([V1], OCT, 1, id="single-open-ended-version-covers"),
        pytest.param([V1, AMENDMENT], NOV, 2, id="amendment-from-november-prices-november"),
        pytest.param([V1, AMENDMENT], OCT, 1, id="amendment-from-november-leaves-october-alone"),
        pytest.param([AMENDMENT, V1], NOV, 2, id="highest-version-wins-whatever-the-order"),
        pytest.param(
            [V1.model_copy(update={"status": "TERMINATED"})], OCT, None, id="terminated-version-covers-nothing"
        ),
        pytest.param(
            [V1.model_copy(update={"effective_to": date(2026, 10, 15)})], OCT, 1, id="effective-to-is-inclusive"
        ),
        pytest.param(
            [V1.model_copy(update={"effective_to": date(2026, 10, 14)})],
            OCT,
            None,
            id="after-effective-to-is-uncovered",
        ),
        pytest.param([AMENDMENT], OCT, None, id="before-effective-from-is-uncovered"),
        pytest.param([], OCT, None, id="no-versions-no-contract"),
        pytest.param(
            [V1, AMENDMENT.model_copy(update={"status": "TERMINATED"})],
            NOV,
            1,
            id="terminated-amendment-falls-back-to-older-version",
        ),
    ],
)
def test_highest_active_version_covering_the_work_date_applies(versions, work_date, expected) -> None:
    chosen = select_contract_version(versions, work_date)
    assert (chosen.version if chosen else None) == expected


CARD = (
    line("100"),  # 0: matches anything, score 0
    line("110", role="consultant"),  # 1: score 1
    line("120", task_id="T1"),  # 2: score 2
    line("130", role="consultant", task_id="T1"),  # 3: score 3
    line("140", worker_id="W1"),  # 4: score 4
    line("150", worker_id="W1", task_id="T1"),  # 5: score 6
    line("160", worker_id="W1", role="consultant", task_id="T1"),  # 6: score 7
)


@pytest.mark.parametrize(
    ("card", "worker_id", "role", "task_id", "rate"),
    [
        pytest.param(CARD, "W1", "consultant", "T1", "160", id="worker+task+role-scores-7-wins"),
        pytest.param(CARD[:6], "W1", "consultant", "T1", "150", id="worker+task-scores-6"),
        pytest.param(CARD[:5], "W1", "consultant", "T1", "140", id="worker-alone-4-beats-task+role-3"),
        pytest.param(CARD[:4], "W1", "consultant", "T1", "130", id="task+role-3-beats-task-2"),
        pytest.param(CARD[:3], "W1", "consultant", "T1", "120", id="task-2-beats-role-1"),
        pytest.param(CARD[:2], "W1", "consultant", "T1", "110", id="role-1-beats-catch-all-0"),
        pytest.param(CARD, "W2", "manager", "T9", "100", id="unset-selectors-match-anything"),
        pytest.param(CARD, "W2", "consultant", None, "110", id="line-with-task-needs-that-task"),
        pytest.param(
            (line("90", role="consultant"), line("95", role="consultant")),
            "W1",
            "consultant",
            None,
            "90",
            id="equal-scores-earlier-line-wins",
        ),
        pytest.param(
            (line("90", task_id="T1"), line("95", role="manager")),
            "W1",
            "consultant",
            "T2",
            "150",
            id="no-matching-line-falls-back-to-default-rate",
        ),
    ],
)
def test_most_specific_matching_line_sets_the_rate(card, worker_id, role, task_id, rate) -> None:
    version = contract(rate_card=card, default_hourly_rate=Decimal("150"))
    assert resolve_rate(version, worker_id, role, task_id) == Decimal(rate)


def test_no_matching_line_and_no_default_rate_is_no_rate() -> None:
    version = contract(rate_card=(line("90", worker_id="W9"),), default_hourly_rate=None)
    assert resolve_rate(version, "W1", "consultant", None) is None


@pytest.mark.parametrize(
    ("line_", "score"),
    [
        (line("1"), 0),
        (line("1", role="r"), 1),
        (line("1", task_id="t"), 2),
        (line("1", worker_id="w"), 4),
        (line("1", worker_id="w", role="r", task_id="t"), 7),
    ],
    ids=["none-0", "role-1", "task-2", "worker-4", "all-7"],
)
def test_specificity_score_is_4_worker_2_task_1_role(line_, score) -> None:
    assert specificity(line_) == score


def test_cap_is_the_not_to_exceed_of_the_highest_version() -> None:
    versions = [
        contract(version=1, not_to_exceed=Decimal("1000")),
        contract(version=3, not_to_exceed=Decimal("5000")),
        contract(version=2, not_to_exceed=Decimal("100")),
        contract(contract_id="K2", version=9),
    ]
    assert contract_cap(versions, "K1") == Decimal("5000")
    assert contract_cap(versions, "K2") is None
