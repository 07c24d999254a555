"""The gateway's delivery hand-off: one report callable per request, counted on the event loop, whatever
thread librdkafka's reports arrive on (producers/gateway/incoming.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from starlette.types import Message

from producers.emitter import DeliveryError
from producers.gateway.incoming import Deliveries, Incoming


def _report_from_thread(reports: object, errors: list[object]) -> None:
    """Call `reports` as librdkafka's polling thread would: on another thread, one call per record."""

    def poll() -> None:
        for error in errors:
            reports(error, None)  # type: ignore[operator]

    thread = threading.Thread(target=poll)
    thread.start()
    thread.join()


def test_the_request_waits_for_every_record_of_its_batch() -> None:
    async def scenario() -> list[str]:
        deliveries = Deliveries(asyncio.get_running_loop())
        reports = deliveries.expect(3)
        seen: list[str] = []
        waiting = asyncio.ensure_future(deliveries.wait(reports, timeout_s=10))
        _report_from_thread(reports, [None, None])
        await asyncio.sleep(0)  # let the loop settle the two reports that arrived
        seen.append("done" if waiting.done() else "waiting after 2 of 3")
        _report_from_thread(reports, [None])
        await asyncio.wait_for(waiting, timeout=10)
        seen.append("done")
        return seen

    assert asyncio.run(scenario()) == ["waiting after 2 of 3", "done"]


def test_one_refused_record_fails_the_request_with_its_reason() -> None:
    async def scenario() -> None:
        deliveries = Deliveries(asyncio.get_running_loop())
        reports = deliveries.expect(2)
        _report_from_thread(reports, [None, "Broker: Message size too large"])
        await deliveries.wait(reports, timeout_s=10)

    with pytest.raises(DeliveryError, match="Message size too large"):
        asyncio.run(scenario())


def test_a_late_batch_times_out_and_still_settles_for_a_retry_that_waits() -> None:
    async def scenario() -> str:
        deliveries = Deliveries(asyncio.get_running_loop())
        reports = deliveries.expect(1)
        with pytest.raises(TimeoutError):
            await deliveries.wait(reports, timeout_s=0.01)
        later = asyncio.ensure_future(reports.settled())
        _report_from_thread(reports, [None])
        await asyncio.wait_for(later, timeout=10)
        return "settled"

    assert asyncio.run(scenario()) == "settled"


def test_reports_that_all_arrived_before_the_wait_return_at_once() -> None:
    async def scenario() -> None:
        deliveries = Deliveries(asyncio.get_running_loop())
        reports = deliveries.expect(1)
        reports(None, None)
        await asyncio.sleep(0)
        await asyncio.wait_for(deliveries.wait(reports, timeout_s=10), timeout=1)

    asyncio.run(scenario())


def test_a_body_from_a_server_other_than_uvicorns_httptools_is_read_under_the_deadline() -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "headers": [], "client": ("127.0.0.1", 1)}
    assert Incoming(scope, receive).body_buffered() is False


def test_the_loop_serves_the_reports_by_polling_while_any_is_due_and_then_stops() -> None:
    async def scenario() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        polls: list[int] = []
        held: list[object] = []

        def poll(timeout: float) -> int:
            """librdkafka's poll(0): the report is ready on the third call, served on this thread."""
            assert timeout == 0 and threading.get_ident() == loop_thread
            polls.append(len(polls))
            if len(polls) == 3:
                held.pop()(None, None)  # type: ignore[operator]
                return 1
            return 0

        loop_thread = threading.get_ident()
        deliveries = Deliveries(loop, poll)
        reports = deliveries.expect(1)
        held.append(reports)
        await deliveries.wait(reports, timeout_s=10)
        return len(polls), deliveries.polling  # nothing due: no further poll is scheduled

    assert asyncio.run(scenario()) == (3, False)


def test_reports_of_records_that_could_not_be_produced_are_not_polled_for() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        polls: list[float] = []
        deliveries = Deliveries(loop, lambda timeout: polls.append(timeout) or 0)
        reports = deliveries.expect(2)
        deliveries.forget(reports)  # the producer refused the batch before the first record
        deadline = loop.time() + 10
        while deliveries.polling and loop.time() < deadline:
            await asyncio.sleep(0)
        return len(polls)

    assert asyncio.run(scenario()) == 1  # the poll already scheduled, then no more
