"""The order `Outbox` makes durable: outputs acknowledged first, then state and its changelog records."""

from __future__ import annotations

import asyncio
from typing import Any

from topology.outbox import Outbox


async def _yield_until(condition: Any, turns: int = 100) -> None:
    """Let the event loop run other tasks until `condition()` holds or `turns` turns have passed (no timed wait)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)


class FakeTopic:
    """A faust topic whose deliveries the test acknowledges by hand."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(self, **message: Any) -> asyncio.Future[None]:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


class FakeTable:
    """A `DurableTable` as the outbox uses it: a write or delete sends a changelog record the test acknowledges."""

    def __init__(self, name: str, data: dict[str, Any] | None = None, acknowledged: bool = True) -> None:
        self.name = name
        self.data = dict(data or {})
        self.changelog: list[tuple[str, Any]] = []
        self.deliveries: list[asyncio.Future[None]] = []
        self.acknowledged = acknowledged

    def get(self, key: str) -> Any:
        return self.data.get(key)

    async def write(self, key: str, value: Any) -> None:
        if value is None:
            if key not in self.data:
                return
            del self.data[key]
        else:
            self.data[key] = value
        self.changelog.append((key, value))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.acknowledged:
            delivery.set_result(None)
        self.deliveries.append(delivery)
        await delivery


def test_state_is_written_only_after_every_output_is_acknowledged() -> None:
    async def scenario() -> None:
        topic, table, outbox = FakeTopic(), FakeTable("entries"), Outbox()
        await outbox.send(topic, key=b"P1", value=b"candidate")
        await outbox.send(topic, key=b"P2", value=b"posting")
        outbox.put(table, "E1", "billed")
        delivering = asyncio.ensure_future(outbox.deliver())
        topic.deliveries[0].set_result(None)
        await asyncio.sleep(0)  # let deliver run as far as it can
        assert not delivering.done() and table.data == {} and table.changelog == []
        topic.deliveries[1].set_result(None)
        await delivering
        assert table.data == {"E1": "billed"}
        assert table.changelog == [("E1", "billed")]

    asyncio.run(scenario())


def test_a_refused_output_leaves_the_state_unwritten() -> None:
    async def scenario() -> None:
        topic, table, outbox = FakeTopic(), FakeTable("ledgers", {"E1": "before"}), Outbox()
        await outbox.send(topic, value=b"candidate")
        outbox.put(table, "E1", "after")
        topic.deliveries[0].set_exception(RuntimeError("broker down"))
        try:
            await outbox.deliver()
        except RuntimeError:
            pass
        else:
            raise AssertionError("a failed delivery must not pass silently")
        assert table.data == {"E1": "before"} and table.changelog == []

    asyncio.run(scenario())


def test_reads_see_the_batch_and_none_deletes() -> None:
    async def scenario() -> None:
        table, outbox = FakeTable("rejections", {"K1": "opened", "K2": "opened"}), Outbox()
        outbox.put(table, "K1", None)
        outbox.put(table, "K3", "new")
        outbox.put(table, "K4", None)  # deleting what is not there writes nothing
        assert (outbox.get(table, "K1"), outbox.get(table, "K2"), outbox.get(table, "K3")) == (None, "opened", "new")
        await outbox.deliver()
        assert table.data == {"K2": "opened", "K3": "new"}
        assert table.changelog == [("K1", None), ("K3", "new")]

    asyncio.run(scenario())


def test_deliver_returns_only_once_the_changelog_records_are_acknowledged() -> None:
    """faust may commit the source offset as soon as `deliver` returns: the state must be durable by then."""

    async def scenario() -> None:
        topic, table, outbox = FakeTopic(), FakeTable("ledgers", acknowledged=False), Outbox()
        await outbox.send(topic, value=b"candidate")
        outbox.put(table, "P1\x1fE1", "billed")
        outbox.put(table, "P1\x1fE2", "billed")
        delivering = asyncio.ensure_future(outbox.deliver())
        topic.deliveries[0].set_result(None)
        await _yield_until(lambda: len(table.deliveries) == 2)
        assert table.changelog == [("P1\x1fE1", "billed"), ("P1\x1fE2", "billed")]
        table.deliveries[0].set_result(None)
        await _yield_until(lambda: delivering.done(), turns=20)
        assert not delivering.done()
        table.deliveries[1].set_result(None)
        await delivering

    asyncio.run(scenario())


def test_a_refused_changelog_record_fails_the_delivery() -> None:
    async def scenario() -> None:
        table, outbox = FakeTable("entries", acknowledged=False), Outbox()
        outbox.put(table, "E1", "billed")
        delivering = asyncio.ensure_future(outbox.deliver())
        await _yield_until(lambda: bool(table.deliveries))
        table.deliveries[0].set_exception(RuntimeError("not enough replicas"))
        try:
            await delivering
        except RuntimeError:
            pass
        else:
            raise AssertionError("a refused changelog record must stop the worker before its offset is committed")

    asyncio.run(scenario())
