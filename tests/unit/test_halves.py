"""The two halves' protocol (`backbone.cli.halves`): the child validates, reports, and follows up only on an order.

These fork real child processes; what they validate is trivial (counting lines), what matters is what
comes back across the pipes: the outcome, the follow-up's result, and every way the child can fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import pytest

from backbone.cli import halves


def count_lines(part: IO[bytes], spool: IO[bytes], rejects: Path | None, before: int) -> halves.HalfOutcome:
    count = 0
    while line := part.readline():
        spool.write(line)
        count += 1
    return halves.HalfOutcome(valid=count, shown=[f"lines before: {before}"])


def spool_size(order: dict[str, Any]) -> int:
    """The follow-up: what the child spooled, seen through its own descriptor as `emit` reads it."""
    with open(f"/proc/self/fd/{order['spool']}", "rb") as spool:
        return len(spool.read()) * order["times"]


def failing(order: Any) -> int:
    raise RuntimeError(f"could not follow {order}")


def vanishing(order: Any) -> int:
    os._exit(3)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"first\n" * 5 + b"second\n" * 4)
    return path


def second_half(source: Path, follow_up: halves.FollowUp | None) -> tuple[IO[bytes], halves.SecondHalf]:
    handle = source.open("rb")
    return handle, halves.SecondHalf(handle, 30, 5, count_lines, keep_rejects=False, follow_up=follow_up)


def test_the_child_follows_up_on_the_order_and_its_result_comes_back(source: Path) -> None:
    handle, second = second_half(source, spool_size)
    with handle:
        outcome = second.outcome()
        assert (outcome.valid, outcome.shown, outcome.error) == (4, ["lines before: 5"], None)
        second.order({"spool": second.spool.fileno(), "times": 2})
        result = second.result()
        second.close()
    assert (result.value, result.error) == (2 * len(b"second\n" * 4), None)


def test_without_an_order_the_child_leaves_and_close_returns_at_once(source: Path) -> None:
    handle, second = second_half(source, spool_size)
    with handle:
        assert second.outcome().valid == 4
        second.order(None)
        second.close()


def test_a_follow_up_that_raises_comes_back_as_the_error(source: Path) -> None:
    handle, second = second_half(source, failing)
    with handle:
        second.outcome()
        second.order("the order")
        result = second.result()
        second.close()
    assert result.value is None and str(result.error) == "could not follow the order"


def test_a_child_that_dies_while_following_up_is_an_error_with_its_exit_status(source: Path) -> None:
    handle, second = second_half(source, vanishing)
    with handle:
        second.outcome()
        second.order("the order")
        result = second.result()
        second.close()
    assert isinstance(result.error, RuntimeError)
    assert str(result.error) == f"the second process stopped (exit status {3 << 8})"


def test_a_half_made_without_a_follow_up_takes_no_order(source: Path) -> None:
    handle, second = second_half(source, None)
    with handle:
        assert second.outcome().valid == 4
        with pytest.raises(RuntimeError, match="without a follow-up"):
            second.order("the order")
        second.close()
