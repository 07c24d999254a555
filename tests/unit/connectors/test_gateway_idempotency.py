"""The gateway's idempotency records (producers/gateway/limits.py): the first answer is given again, a
different body is a conflict, a duplicate of a request in flight waits for it, a transient failure lets
a retry run again, memory is bounded, and the records give the garbage collector nothing to walk."""

from __future__ import annotations

import asyncio
import gc
import hashlib

import pytest

from producers.gateway.limits import ABANDONED, IdempotencyConflict, IdempotencyStore, StoredResponse


def _store(*, max_keys: int = 1000, max_bytes: int = 1 << 20) -> IdempotencyStore:
    return IdempotencyStore(ttl_s=3600, max_keys=max_keys, max_bytes=max_bytes, clock=lambda: 0.0)


def _hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


ACCEPTED = StoredResponse(202, {"accepted": 2, "event_ids": ["id-1", "id-2"]})
REFUSED = StoredResponse(
    422, {"error": "invalid events", "problems": [{"field": "hours", "reason": "bad", "index": 0}]}
)


@pytest.mark.parametrize("answer", [ACCEPTED, REFUSED], ids=["accepted", "refused"])
def test_a_repeated_request_gets_the_first_answer_again(answer: StoredResponse) -> None:
    async def scenario() -> StoredResponse:
        store = _store()
        assert store.begin("key:a", _hash(b"body")) is None
        store.finish("key:a", answer)
        again = store.begin("key:a", _hash(b"body"))
        assert again is not None and again.done()
        return again.result()

    replayed = asyncio.run(scenario())
    assert (replayed.status, replayed.body) == (answer.status, answer.body)


def test_the_same_key_with_another_body_is_a_conflict() -> None:
    store = _store()
    store.begin("key:a", _hash(b"one"))
    with pytest.raises(IdempotencyConflict):
        store.begin("key:a", _hash(b"two"))


def test_duplicates_of_a_request_in_flight_wait_for_its_answer() -> None:
    async def scenario() -> list[StoredResponse]:
        store = _store()
        assert store.begin("key:a", _hash(b"body")) is None
        waiting = [store.begin("key:a", _hash(b"body")) for _ in range(2)]
        assert all(w is not None and not w.done() for w in waiting)
        store.finish("key:a", ACCEPTED)
        return [await w for w in waiting if w is not None]

    assert asyncio.run(scenario()) == [ACCEPTED, ACCEPTED]


def test_a_request_that_failed_transiently_lets_its_duplicates_and_retries_run_again() -> None:
    async def scenario() -> None:
        store = _store()
        store.begin("key:a", _hash(b"body"))
        waiting = store.begin("key:a", _hash(b"body"))
        store.abandon("key:a")
        assert waiting is not None and isinstance(waiting.exception(), ABANDONED)
        assert store.begin("key:a", _hash(b"body")) is None
        assert len(store) == 1

    asyncio.run(scenario())


def test_records_are_bounded_in_number_and_bytes_oldest_first() -> None:
    store = _store(max_keys=3)
    for key in "abcd":
        store.begin(key, _hash(b"body"))
        store.finish(key, ACCEPTED)
    assert len(store) == 3
    assert store.begin("a", _hash(b"other")) is None  # forgotten: no conflict, runs again
    small = _store(max_bytes=1000)
    for key in "abcd":
        small.begin(key, _hash(b"body"))
        small.finish(key, ACCEPTED)
    assert len(small) == 2 and small.bytes <= 1000


def test_answered_records_expire_but_requests_in_flight_do_not() -> None:
    now = [0.0]
    store = IdempotencyStore(ttl_s=10, max_keys=100, clock=lambda: now[0])
    store.begin("in-flight", _hash(b"body"))
    store.begin("answered", _hash(b"body"))
    store.finish("answered", ACCEPTED)
    now[0] = 11.0
    store.begin("later", _hash(b"body"))
    assert len(store) == 3  # the oldest is still in flight, so nothing behind it expires yet
    store.finish("in-flight", ACCEPTED)
    store.begin("later still", _hash(b"body"))
    assert len(store) == 2


def test_answered_records_give_the_garbage_collector_nothing_to_walk() -> None:
    """A full collection walks every tracked object: 100,000 records of tracked objects made each one a
    pause of ~100 ms in the middle of the requests being answered (docs/gateway.md)."""
    store = _store(max_keys=10_000)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5000):
        key = f"webhook:toggl:{i}"
        store.begin(key, _hash(key.encode()))
        store.finish(key, StoredResponse(202, {"accepted": 1, "event_ids": [f"id-{i}"]}))
    gc.collect()
    assert len(gc.get_objects()) - before < 50
