"""The order `Outbox` makes durable: outputs acknowledged first, then state and changelog."""

from __future__ import annotations

import asyncio
from typing import Any

from topology.outbox import Outbox


class FakeTopic:
    """A faust topic whose deliveries the test acknowledges by hand."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(self, **message: Any) -> asyncio.Future[None]:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


class FakeTable:
    """A faust table as the outbox uses it: every write and delete also goes to its changelog."""

    def __init__(self, name: str, data: dict[str, Any] | None = None) -> None:
        self.name = name
        self.data = dict(data or {})
        self.changelog: list[tuple[str, Any]] = []

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.changelog.append((key, value))

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.changelog.append((key, None))


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
