"""A faust table whose changelog writes can be awaited.

faust sends a table's changelog records from a background buffer and, before it commits offsets, flushes
that buffer. The flush is not a guarantee: it returns as soon as the buffer looks empty, even while the
buffer's task is still handing the last record to the producer, and it gives up after 0.1 s without
progress. A `kill -9` just after such a commit loses state of records whose offsets are committed. The
restarted worker then prices the next revision against an older ledger: entries billed twice or short
(seen in `test_kill_9_and_restart_bills_the_same`). `DurableTable.write` hands back the changelog
record's delivery, so `Outbox.deliver` can wait for it before faust acknowledges the source record.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import faust


class DurableTable(faust.Table):  # type: ignore[misc]
    """`faust.Table` plus `write`, which returns the changelog record's delivery."""

    _sending: Awaitable[Any] | None = None

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        self._sending = super().send_changelog(*args, **kwargs)
        return self._sending

    def write(self, key: Any, value: Any) -> Awaitable[Any] | None:
        """Store `value` under `key` (None deletes); the delivery of its changelog record, if one was sent.

        Call it while processing a record: faust writes the changelog to that record's partition.
        """
        self._sending = None
        if value is None:
            if self.get(key) is not None:
                del self[key]
        else:
            self[key] = value
        return self._sending
