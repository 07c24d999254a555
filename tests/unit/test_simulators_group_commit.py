"""The simulators' group commit: requests that arrive together share one write, each gets its own answer
after it; one refused or failing request does not fail the others; an unreachable database fails the
whole batch; requests with one `apart_by` key never share a write. A fake writer records the batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
import pytest

from consumers.simulators.group_commit import GroupCommit


class Recorder:
    """A writer that answers each request with its double, refuses negatives alone and can break."""

    def __init__(self, *, fails_on: int | None = None, unreachable: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fails_on, self.unreachable = fails_on, unreachable

    async def write(self, requests: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(requests))
        await asyncio.sleep(0)  # a commit takes a turn of the loop, at least
        if self.unreachable:
            raise psycopg.OperationalError("connection refused")
        if self.fails_on in requests:
            raise RuntimeError("the database refused the batch")
        return [ValueError(f"{r} refused") if r < 0 else 2 * r for r in requests]


async def _submit_all(commit: GroupCommit[int, int], requests: list[int]) -> list[int | BaseException]:
    return await asyncio.gather(*(commit.submit(r) for r in requests), return_exceptions=True)


def test_requests_arriving_together_share_one_write_and_each_gets_its_own_answer() -> None:
    writer = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(writer.write, window_s=0.01)

    answers = asyncio.run(_submit_all(commit, [1, 2, 3, -4]))

    assert answers[:3] == [2, 4, 6]
    assert isinstance(answers[3], ValueError)
    assert writer.batches == [[1, 2, 3, -4]]


def test_a_batch_holds_at_most_max_batch_requests() -> None:
    writer = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(writer.write, window_s=0.01, max_batch=2)

    answers = asyncio.run(_submit_all(commit, [1, 2, 3, 4, 5]))

    assert answers == [2, 4, 6, 8, 10]
    assert writer.batches == [[1, 2], [3, 4], [5]]


def test_a_request_the_database_refuses_fails_alone_after_the_batch_is_written_again_one_by_one() -> None:
    writer = Recorder(fails_on=2)
    commit: GroupCommit[int, int] = GroupCommit(writer.write, window_s=0.01)

    answers = asyncio.run(_submit_all(commit, [1, 2, 3]))

    assert answers[0] == 2 and answers[2] == 6
    assert isinstance(answers[1], RuntimeError)
    assert writer.batches == [[1, 2, 3], [1], [2], [3]]


def test_an_unreachable_database_fails_the_whole_batch_without_retrying_it() -> None:
    writer = Recorder(unreachable=True)
    commit: GroupCommit[int, int] = GroupCommit(writer.write, window_s=0.01)

    answers = asyncio.run(_submit_all(commit, [1, 2]))

    assert all(isinstance(a, psycopg.OperationalError) for a in answers)
    assert writer.batches == [[1, 2]]


def test_requests_with_one_apart_by_key_are_written_in_successive_batches_in_arrival_order() -> None:
    writer = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(writer.write, window_s=0.01, apart_by=lambda r: r % 10)

    answers = asyncio.run(_submit_all(commit, [1, 11, 2, 21]))

    assert answers == [2, 22, 4, 42]
    assert writer.batches == [[1, 2], [11], [21]]


@pytest.mark.parametrize("window_s", [0.0, 0.005], ids=["no-window", "window"])
def test_a_lone_request_is_written_and_answered(window_s: float) -> None:
    writer = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(writer.write, window_s=window_s)

    assert asyncio.run(commit.submit(7)) == 14
    assert writer.batches == [[7]]
