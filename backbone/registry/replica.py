"""One registry instance's view of the log: state that follows the topic, and the leader's write path.

`SchemaStore` tails the log in a thread of its own and applies every committed record in log order,
the leader's own writes included, so the state of every instance (leader or follower) is a prefix of
the same history. `position` is the offset up to which the state is complete; `wait_for(offset)` and
`sync()` wait for it, which is how a follower reads its own forwarded writes and how a new leader
catches up before it decides anything.

Writes (`write(decide)`) run only on the leader, one at a time: `decide` sees a state that holds the
whole log (every earlier leader's records, since `claim_leadership` read up to the end after fencing
them, and this leader's own, since each write waits until its records are applied), turns the request
into records, and the records are committed in one Kafka transaction. A leader that was fenced learns
it from the failed commit and answers 503 (retryable); nothing of that write is ever read.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import structlog

from backbone.errors import BackboneError, ServiceUnavailableError
from backbone.registry.store import Record, RegistryError, RegistryState

T = TypeVar("T")
log = structlog.get_logger("backbone.registry")


class RecordLog(Protocol):
    """What the store needs of its log (`log.KafkaLog`; tests use a list in memory)."""

    def ensure_topic(self) -> None: ...
    def read(self, timeout: float) -> tuple[list[tuple[int, Record]], int | None]: ...
    def end_offset(self) -> int: ...
    def claim(self) -> None: ...
    def append(self, records: list[Record]) -> int: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


class FencedError(BackboneError):
    """Another instance claimed the log: this one is no longer the leader, its write was not applied."""


def not_leader(detail: str) -> RegistryError:
    """Confluent's "unknown leader" (50004), as 503 so that clients retry it."""
    return RegistryError(503, 50004, f"No leader can take this write now ({detail}); retry shortly.")


class SchemaStore:
    """The state of one instance, kept up to date from the log; the write path when it leads."""

    def __init__(self, log: RecordLog, *, url: str = "", write_timeout: float = 15.0) -> None:
        self.state = RegistryState()
        self.url = url.rstrip("/")
        self._log = log
        self._write_timeout = write_timeout
        self._applied = threading.Condition()
        self._position = 0
        self._records = 0
        self._write_lock = threading.Lock()
        self._leading = False
        self._term = 0  # bumped by every election and deposition, so a stale claim never promotes
        self._written = 0  # the log offset after this instance's last write
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        # In a copy of the caller's context, so its log lines carry the same bound fields (process name).
        context = contextvars.copy_context()
        self._tailer = threading.Thread(target=context.run, args=(self._tail,), name="registry-tail", daemon=True)

    # -- following the log ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> int:
        """Create the topic if needed, start tailing, and return once the state holds the whole log."""
        self._log.ensure_topic()
        end = self._log.end_offset()
        self._tailer.start()
        if not self.wait_for(end, timeout):
            raise ServiceUnavailableError(
                f"Timed out replaying the registry topic at offset {self._position} of {end}",
                hint="Check that the Kafka broker is healthy.",
            )
        return self._records

    def _tail(self) -> None:
        while not self._stopping.is_set():
            try:
                records, position = self._log.read(0.2)
            except BackboneError as e:
                self._failure = e
                log.error("registry_tail_failed", error=str(e))
                time.sleep(1.0)  # a broker hiccup: read again, the state just lags meanwhile
                continue
            if position is None:
                continue
            with self._applied:
                for _offset, (key, value) in records:
                    self.state.apply(key, value)
                self._records += len(records)
                self._position = max(self._position, position)
                self._applied.notify_all()

    @property
    def position(self) -> int:
        return self._position

    def wait_for(self, offset: int, timeout: float) -> bool:
        """Wait until the state holds every record before `offset`; False after `timeout` seconds."""
        with self._applied:
            return self._applied.wait_for(lambda: self._position >= offset, timeout)

    def sync(self, timeout: float = 5.0) -> bool:
        """Catch up with everything committed to the log so far (read-your-writes on a follower)."""
        return self.wait_for(self._log.end_offset(), timeout)

    # -- leading ----------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def leader_url(self) -> str | None:
        leader = self.state.leader
        return str(leader["url"]).rstrip("/") if leader and leader.get("url") else None

    def claim_leadership(self, *, retry_until: Callable[[], bool] = lambda: True) -> bool:
        """Fence earlier leaders, read the log to its end, then announce this instance as the leader.

        Tried again (every second) while `retry_until()` holds and the term has not changed; True once
        this instance leads.
        """
        self._term += 1
        term = self._term
        while not self._stopping.is_set() and term == self._term:
            try:
                return self._claim(term)
            except BackboneError as e:
                log.warning("registry_claim_failed", error=str(e))
            if not retry_until():
                return False
            time.sleep(1.0)  # Kafka could not take the claim; the election still names us: try again
        return False

    def _claim(self, term: int) -> bool:
        with self._write_lock:
            self._log.claim()  # from here on, no earlier leader can commit anything
            end = self._log.end_offset()
            if not self.wait_for(end, self._write_timeout):
                raise ServiceUnavailableError(f"could not read the registry log to its end ({end})")
            if term != self._term:
                self._log.release()
                return False
            since = datetime.now(UTC).isoformat()
            self._written = self._log.append([({"kind": "LEADER"}, {"url": self.url, "since": since})])
            if not self.wait_for(self._written, self._write_timeout):
                raise ServiceUnavailableError("the leader record was written but not read back")
            self._leading = term == self._term
        if self._leading:
            log.info("registry_leading", url=self.url, position=self._position)
        return self._leading

    def resign(self, reason: str) -> None:
        """Stop taking writes at once. A write in flight either commits before a new leader claims the log
        (and that leader reads it) or fails its commit; both are safe."""
        self._term += 1
        if self._leading:
            log.info("registry_following", reason=reason)
        self._leading = False

    def write(self, decide: Callable[[RegistryState], tuple[T, list[Record]]]) -> T:
        """Decide on the complete state, commit the records, return once this instance has applied them."""
        with self._write_lock:
            if not self._leading:
                raise not_leader("this instance is not the leader")
            if not self.wait_for(self._written, self._write_timeout):
                raise not_leader("this leader has not read back its previous write yet")
            result, records = decide(self.state)
            if not records:
                return result
            try:
                self._written = self._log.append(records)
            except FencedError as e:
                self.resign("fenced by a newer leader")
                raise not_leader("another instance took over the lead") from e
            except ServiceUnavailableError as e:
                raise RegistryError(503, 50001, f"Error in the backend data store: {e}") from e
            if not self.wait_for(self._written, self._write_timeout):
                raise RegistryError(503, 50002, "The write was stored but not yet read back; retry to see it.")
            return result

    def close(self) -> None:
        self.resign("stopping")
        self._stopping.set()
        if self._tailer.is_alive():
            self._tailer.join(timeout=5)
        self._log.close()
