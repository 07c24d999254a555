"""The delivery connector's loop: a batch of records delivered concurrently over HTTP, then acknowledged
in one Kafka transaction with the consumed offsets.

    consume a batch (input topic + the connector's retry topic, read_committed)
    decode; skip what is not for this system; dead-letter what cannot be decoded
    deliver concurrently (at most `max_in_flight` requests), one time entry's records in order,
        each with bounded in-line retries (tenacity: backoff + jitter, Retry-After honoured),
        behind the system's circuit breaker
    in one transaction: the acknowledgments, retry-topic and dead-letter records, the pending-posting
        store's changes, POSTING_ACK_TIMEOUT exceptions, and the offsets of the records they answer

The HTTP call is not part of the transaction, so it is made *at least once*; the system's idempotency
key (candidate id / posting id) makes a repeated call return the first document, and the
acknowledgment is published *exactly once* because it commits with the offset of the record it
answers (docs/delivery.md). A record that fails in line goes to the retry topic (`<app>-retry`, same
partition number, a not-before time) and after `retry_rounds` passes to the input's DLQ, so one bad
record never holds its partition. While the circuit is open nothing is called: the record and the
rest of its partition are sought back and the partition paused until the probe is due, so an outage
burns no retries and loses nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
import structlog
from confluent_kafka import Message, TopicPartition
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from backbone.domain.feedback import PendingPosting, ack_timeout
from backbone.domain.models import Event, PostingRequest
from backbone.kafka.serde import DecodeError, SerdeCache
from backbone.kafka.topics import Topic
from backbone.settings import KafkaSettings, StreamsSettings
from backbone.streams import clients
from backbone.streams import metrics as stream_metrics
from backbone.streams.loop import Stage, StreamWorker, WorkerSlot, where
from backbone.streams.partitioner import murmur2_partition
from backbone.streams.state import StoreSpec
from consumers.delivery import metrics
from consumers.delivery.http import Answer, CannotReach, HttpClient, NoAnswerInTime
from consumers.delivery.policy import (
    SYSTEMIC_STATUSES,
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    Judgement,
    RetryAfterOrBackoff,
    TransientFailure,
    Verdict,
    classify,
)
from consumers.delivery.settings import ConnectorSettings
from consumers.delivery.systems import System, record_id, sequence_key

log = structlog.get_logger(__name__)

ROUND = "backbone.retry.round"
NOT_BEFORE = "backbone.retry.not-before"
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = (
    "backbone.retry.origin-topic",
    "backbone.retry.origin-partition",
    "backbone.retry.origin-offset",
)
PENDING_STORE = "pending"


@dataclass(frozen=True)
class DeliveryTopics:
    """The topics one connector reads and writes (tests give them a prefix)."""

    input: Topic
    acks: Topic
    exceptions: Topic
    retry: Topic
    pending_changelog: Topic | None = None

    def all(self) -> tuple[Topic, ...]:
        own = (self.input, self.acks, self.exceptions, self.retry)
        extra = (self.pending_changelog,) if self.pending_changelog else ()
        return own + extra + tuple(t.dlq for t in own if t.dlq)


class Fate(Enum):
    """What becomes of one consumed record."""

    SKIPPED = "skipped"
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    RETRY_TOPIC = "retry_topic"
    DEAD_LETTERED = "dead_lettered"
    POSTPONED = "postponed"
    UNDECODABLE = "undecodable"


@dataclass
class Work:
    """One consumed record in a batch, what it carries, and (after delivery) its fate."""

    message: Message
    event: Event | None
    from_retry: bool
    round: int = 0
    not_before: float = 0.0
    fate: Fate | None = None
    ack: Event | None = None
    error: str = ""
    error_class: str = ""
    until: float = 0.0
    """For POSTPONED: when (monotonic) its partition may be read again."""
    tried_at: float = 0.0
    """When (monotonic) its first attempt began: its retries' time budget counts from there."""
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def partition_key(self) -> tuple[str, int]:
        topic, partition, _ = where(self.message)
        return topic, partition


class PendingCodec:
    """A `PendingPosting` as a JSON changelog value."""

    def encode(self, value: PendingPosting) -> bytes:
        return orjson.dumps(
            {
                "posting_id": value.posting_id,
                "erp_target": value.erp_target,
                "project_id": value.project_id,
                "amount": str(value.amount),
                "currency": value.currency,
                "correlation_id": value.correlation_id,
                "requested_at": value.requested_at.isoformat(),
                "timeout_s": value.timeout_s,
                "raised_at": value.raised_at.isoformat() if value.raised_at else None,
            }
        )

    def decode(self, data: bytes) -> PendingPosting:
        raw = orjson.loads(data)
        raised = raw.get("raised_at")
        return PendingPosting(
            posting_id=raw["posting_id"],
            erp_target=raw["erp_target"],
            project_id=raw["project_id"],
            amount=Decimal(raw["amount"]),
            currency=raw["currency"],
            correlation_id=raw.get("correlation_id"),
            requested_at=datetime.fromisoformat(raw["requested_at"]),
            timeout_s=float(raw["timeout_s"]),
            raised_at=datetime.fromisoformat(raised) if raised else None,
        )


class DeliveryWorker(StreamWorker):
    """A StreamWorker whose batch is delivered to one system before its outputs join the transaction."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        streams: StreamsSettings,
        slot: WorkerSlot,
        system: System,
        url: str,
        settings: ConnectorSettings,
        topics: DeliveryTopics,
        serdes: SerdeCache,
        connector: str,
        ack_timeout_s: float | None = None,
        ack_timeout_check_s: float = 1.0,
    ) -> None:
        self.system = system
        self.url = url
        self.config = settings
        self.topics = topics
        self.serdes = serdes
        self.connector = connector
        self.ack_timeout_s = ack_timeout_s
        self.ack_timeout_check_s = ack_timeout_check_s
        stores: tuple[StoreSpec, ...] = ()
        if ack_timeout_s is not None and topics.pending_changelog is not None:
            stores = (StoreSpec(PENDING_STORE, topics.pending_changelog.name, PendingCodec()),)
        stage = Stage("deliver", (topics.input.name, topics.retry.name), _never_called, stores)
        super().__init__(kafka=kafka, streams=streams, slot=slot, stages=[stage])
        self._loop = asyncio.new_event_loop()
        self._retry_stop = stop_after_attempt(settings.max_attempts) | stop_after_delay(settings.attempt_budget_s)
        self._retry_wait = RetryAfterOrBackoff(
            wait_exponential_jitter(
                initial=settings.backoff_initial_s, max=settings.backoff_max_s, jitter=settings.backoff_jitter_s
            ),
            cap=settings.retry_after_cap_s,
        )
        self._http: HttpClient | None = None
        self.breaker = CircuitBreaker(
            system.name,
            failure_threshold=settings.breaker_failures,
            reset_timeout=settings.breaker_reset_s,
            on_change=self._breaker_moved,
        )
        self._paused: dict[tuple[str, int], float] = {}
        self._parked: dict[str, deque[str]] = {}
        """Sequence key -> ids of its records in the retry topic, oldest first (keeps a time entry's order)."""
        self._scanned = 0.0
        metrics.BREAKER_STATE.labels(connector, system.name).set(0)
        labels = (connector, system.name)  # the per-request series' children, looked up once
        self._calls_out = 0
        """Requests in flight now (read by the in-flight gauge when scraped)."""
        metrics.IN_FLIGHT.labels(*labels).set_function(lambda: self._calls_out)
        self._latency = metrics.LATENCY.labels(*labels)
        self._requests = {
            outcome: metrics.REQUESTS.labels(*labels, outcome)
            for outcome in ("timeout", "connection", *(verdict.value for verdict in Verdict))
        }
        self._fates = {fate: metrics.RECORDS.labels(connector, fate.value) for fate in Fate}

    # --- the batch ----------------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        self._resume_due()
        self._scan_ack_timeouts()
        works = self._plan(messages)
        if not works:
            return
        deliverable = [w for w in works if w.fate is None]
        if deliverable:
            # no transaction stays open while calls are out: a slow system must not outlast its timeout
            self.commit()
            self._loop.run_until_complete(self._deliver_all(deliverable))
        if not self._in_transaction:
            self._begin()
        self._settle(works)

    def _plan(self, messages: list[Message]) -> list[Work]:
        """Decode each record; decide at once what needs no call (skip, dead letter, not due yet)."""
        works: list[Work] = []
        now = time.time()
        for message in messages:
            consume_error = message.error()
            if consume_error is not None:
                clients.check_consumed(consume_error, app=self.app)
                continue
            from_retry = message.topic() == self.topics.retry.name
            headers: list[tuple[str, bytes]] = list(message.headers() or [])  # type: ignore[arg-type]
            work = Work(message, None, from_retry, headers=headers)
            works.append(work)
            if from_retry:
                work.round = int(_header(work.headers, ROUND) or 0)
                work.not_before = int(_header(work.headers, NOT_BEFORE) or 0) / 1000
            try:
                work.event = self.serdes.for_topic(self.topics.input).decode(message)
            except DecodeError as error:
                work.fate, work.error, work.error_class = Fate.UNDECODABLE, str(error), error.error_class
                continue
            if not self.system.wants(work.event):
                work.fate = Fate.SKIPPED
            elif from_retry and work.not_before > now:
                work.fate, work.until = Fate.POSTPONED, time.monotonic() + (work.not_before - now)
        return works

    async def _deliver_all(self, works: list[Work]) -> None:
        """Each time entry's records in order, `max_in_flight` entries at a time.

        A fixed pool of that many coroutines takes the entries one after another (a task per record
        was a tenth of the connector's CPU). A record whose first attempt fails continues, with the
        rest of its entry, in a task of its own, so its backoff never holds a place of the pool; every
        request still takes one of the client's `max_in_flight` slots, which bounds what is in flight."""
        if self._http is None:
            self._open_http()
        sequences: dict[str, list[Work]] = {}
        for work in works:
            sequences.setdefault(sequence_key(work.event), []).append(work)  # type: ignore[arg-type]
        pending = deque(sequences.items())
        retrying: list[asyncio.Task[None]] = []
        pool = min(self.config.max_in_flight, len(pending))
        await asyncio.gather(*(self._take_sequences(pending, retrying) for _ in range(pool)))
        if retrying:
            await asyncio.gather(*retrying)

    async def _take_sequences(self, pending: deque[tuple[str, list[Work]]], retrying: list[asyncio.Task[None]]) -> None:
        """One place of the pool: deliver entries until none is left; hand a failing one to a task of its own."""

        def hand_over(rest: Coroutine[Any, Any, None]) -> None:
            retrying.append(asyncio.ensure_future(rest))

        while pending:
            key, works = pending.popleft()
            await self._deliver_sequence(key, works, hand_over=hand_over)

    async def _deliver_sequence(
        self,
        key: str,
        works: list[Work],
        *,
        queue: list[str] | None = None,
        failed: TransientFailure | None = None,
        hand_over: Callable[[Coroutine[Any, Any, None]], None] | None = None,
    ) -> None:
        """One time entry's records, in order; once one waits (retry topic, open circuit) the rest follow it.

        With `hand_over`, a record whose first attempt fails is not retried here: the rest of the entry
        (from that record, with its failure and the entry's queue) is handed over, to go on elsewhere."""
        held: Work | None = None
        if queue is None:
            queue = list(self._parked.get(key, ()))
        """Ids of this entry's records in the retry topic, oldest first: only the oldest may be delivered."""
        for index, work in enumerate(works):
            rid = record_id(work.event)  # type: ignore[arg-type]
            if held is not None:
                self._follow(work, held)
            elif queue and queue[0] != rid:
                self._follow(work, None)
            else:
                first_failure = await self._deliver(work, failed if index == 0 else None, retry=hand_over is None)
                if first_failure is not None and hand_over is not None:
                    hand_over(self._deliver_sequence(key, works[index:], queue=queue, failed=first_failure))
                    return
                if queue and work.fate in (Fate.ACKNOWLEDGED, Fate.REJECTED):
                    queue.pop(0)
            if work.fate in (Fate.RETRY_TOPIC, Fate.POSTPONED):
                held = held or work

    def _follow(self, work: Work, leader: Work | None) -> None:
        """Keep behind an earlier record of the same entry: wait with it, or queue behind it in the retry topic."""
        if leader is not None and leader.fate is Fate.POSTPONED:
            work.fate, work.until = Fate.POSTPONED, leader.until
        else:
            work.fate, work.error, work.error_class = Fate.RETRY_TOPIC, "behind an earlier record", "Ordering"
            work.round = max(work.round - 1, 0)  # following is not a failed attempt of its own
            work.not_before = 0.0

    async def _deliver(
        self, work: Work, failed: TransientFailure | None = None, *, retry: bool = True
    ) -> TransientFailure | None:
        """Call the system for `work` and settle its fate; with `retry` off, a failed first attempt is
        returned instead (its retries go on elsewhere, `_deliver(work, failed)` taking them up)."""
        event = work.event
        assert event is not None
        try:
            if failed is not None:
                judgement, body = await self._retry(event, failed, work.tried_at)
            else:
                work.tried_at = time.monotonic()
                try:
                    judgement, body = await self._attempt(event)
                except TransientFailure as error:
                    if not retry:
                        return error
                    judgement, body = await self._retry(event, error, work.tried_at)
        except BreakerOpen:
            work.fate, work.until = Fate.POSTPONED, self._breaker_resume_at()
            return None
        except TransientFailure as error:
            work.fate, work.error, work.error_class = Fate.RETRY_TOPIC, str(error), "TransientFailure"
            return None
        work.ack = self.system.acknowledgment(event, judgement, body)
        work.fate = Fate.ACKNOWLEDGED if judgement.verdict is Verdict.ACCEPTED else Fate.REJECTED
        if work.fate is Fate.REJECTED:
            log.warning(
                "the system refused a record; acknowledged as REJECTED",
                correlation_id=event.correlation_id,
                record_id=record_id(event),
                system=self.system.name,
                code=judgement.code,
                reason=(judgement.message or "")[:300],
            )
        return None

    async def _retry(self, event: Event, first: TransientFailure, tried_at: float) -> tuple[Judgement, Any]:
        """The attempts after a failed first one, by tenacity (backoff with jitter, Retry-After honoured).

        Only a failure pays for tenacity: the first attempt is made without it (tenacity's per-call
        state was an eighth of the connector's CPU). Its failure is given to tenacity as attempt 1,
        and the time budget counts from when it began, so the attempts, waits and budget are those of
        one tenacity loop around every attempt."""
        retrying = AsyncRetrying(  # per call (it holds the call's state); its stop and wait are shared
            stop=self._retry_stop,
            wait=self._retry_wait,
            retry=retry_if_exception_type(TransientFailure),
            reraise=True,
            before_sleep=self._count_retry,
        )
        async for attempt in retrying:
            with attempt:
                state = attempt.retry_state  # type: ignore[attr-defined]
                if state.attempt_number == 1:
                    state.start_time = tried_at
                    raise first  # the attempt already made: its outcome, not another call
                return await self._attempt(event)
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover - reraise=True

    def _count_retry(self, state: RetryCallState) -> None:
        metrics.RETRIES.labels(self.connector, self.system.name).inc()

    async def _attempt(self, event: Event) -> tuple[Judgement, Any]:
        """One HTTP call behind the breaker; TransientFailure when worth another try."""
        assert self._http is not None
        call = self.system.call(event)
        subject = record_id(event)
        async with self._http.slot():
            await self.breaker.enter()
            self._calls_out += 1
            started = time.perf_counter()
            try:
                answer = await self._http.post_json(call.path, call.body, call.headers)
            except NoAnswerInTime as error:
                self.breaker.failed(subject)
                self._requests["timeout"].inc()
                raise TransientFailure(f"no answer within {self.config.request_timeout_s}s") from error
            except CannotReach as error:
                self.breaker.failed(subject)
                self._requests["connection"].inc()
                raise TransientFailure(str(error)) from error
            except BaseException:
                self.breaker.failed(
                    subject, systemic=False
                )  # cancelled or unexpected: never leave a half-open probe unanswered
                raise
            finally:
                self._calls_out -= 1
                self._latency.observe(time.perf_counter() - started)
        return self._judge(answer, subject)

    def _judge(self, answer: Answer, subject: str) -> tuple[Judgement, Any]:
        """What the answer means; TransientFailure (after telling the breaker) when worth another try."""
        body = answer.json()
        code, message = self.system.error_of(body)
        judgement = classify(answer.status, code, message, answer.headers.get("retry-after"))
        self._requests[judgement.verdict.value].inc()
        if judgement.verdict is Verdict.TRANSIENT:
            systemic = answer.status in SYSTEMIC_STATUSES
            self.breaker.failed(subject, systemic=systemic)
            raise TransientFailure(
                f"HTTP {answer.status} {code or ''} {message or ''}".strip(),
                judgement.retry_after,
                systemic=systemic,
            )
        self.breaker.succeeded()
        return judgement, body

    # --- into the transaction -----------------------------------------------------------------------------

    def _settle(self, works: list[Work]) -> None:
        """Produce each record's outputs in consumption order; a postponed record and the rest of its
        partition are not settled: the partition is sought back to it and paused."""
        blocked: dict[tuple[str, int], Work] = {}
        for work in works:
            tp = work.partition_key
            if tp in blocked:
                continue
            if work.fate is Fate.POSTPONED:
                blocked[tp] = work
                self._note_pending(work)
                continue
            self._note_pending(work)
            self._apply(work)
            topic, partition, offset = where(work.message)
            self._positions[(topic, partition)] = offset + 1
            self._records_in[topic] += 1
            self._uncommitted += 1
            if work.fate is not None:
                self._fates[work.fate].inc()
        for (topic, partition), work in blocked.items():
            self._postpone(topic, partition, work)

    def _apply(self, work: Work) -> None:
        if work.fate in (Fate.ACKNOWLEDGED, Fate.REJECTED):
            self._acknowledge(work)
        elif work.fate is Fate.RETRY_TOPIC:
            self._requeue(work)
        elif work.fate is Fate.UNDECODABLE:
            self._dead_letter(work)

    def _acknowledge(self, work: Work) -> None:
        ack = work.ack
        assert ack is not None and work.event is not None
        self._produce_event(self.topics.acks, ack)
        self._unpark(work)
        self._resolve_pending(work)

    def _requeue(self, work: Work) -> None:
        event = work.event
        assert event is not None
        next_round = work.round + 1
        if next_round > self.config.retry_rounds:
            work.fate = Fate.DEAD_LETTERED
            self._dead_letter(work)
            self._unpark(work)
            return
        delay = self.config.retry_delay_s * (2 ** (next_round - 1)) if work.error_class != "Ordering" else 0.0
        not_before = int((time.time() + delay) * 1000)
        topic, partition, offset = where(work.message)
        headers = [(k, v) for k, v in work.headers if not k.startswith(("backbone.retry.r", "backbone.retry.n"))]
        if not work.from_retry:
            headers += [
                (ORIGIN_TOPIC, topic.encode()),
                (ORIGIN_PARTITION, str(partition).encode()),
                (ORIGIN_OFFSET, str(offset).encode()),
            ]
        headers += [(ROUND, str(next_round).encode()), (NOT_BEFORE, str(not_before).encode())]
        self.produce(
            self.topics.retry.name, work.message.value(), key=work.message.key(), headers=headers, partition=partition
        )
        rid = record_id(event)
        queue = self._parked.setdefault(sequence_key(event), deque())
        if rid in queue:
            queue.remove(rid)
        queue.append(rid)
        if work.error_class != "Ordering":
            log.warning(
                "delivery failed; record sent to the retry topic",
                correlation_id=event.correlation_id,
                record_id=rid,
                round=next_round,
                retry_in_s=round(delay, 1),
                error=work.error[:300],
            )

    def _dead_letter(self, work: Work) -> None:
        topic, partition, offset = where(work.message)
        origin = (
            _header(work.headers, ORIGIN_TOPIC) or topic,
            _header(work.headers, ORIGIN_PARTITION) or str(partition),
            _header(work.headers, ORIGIN_OFFSET) or str(offset),
        )
        headers = [(k, v) for k, v in work.headers if not k.startswith(("backbone.retry.", "backbone.error."))]
        headers += [
            ("backbone.error.topic", origin[0].encode()),
            ("backbone.error.partition", origin[1].encode()),
            ("backbone.error.offset", origin[2].encode()),
            ("backbone.error.class", (work.error_class or "DeliveryFailed").encode()),
            ("backbone.error.message", work.error[:2000].encode()),
            ("backbone.error.processor", f"{self.app}.deliver".encode()),
            ("backbone.error.at", datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()),
        ]
        assert self.topics.input.dlq is not None
        self.produce(self.topics.input.dlq.name, work.message.value(), key=work.message.key(), headers=headers)
        stream_metrics.DEAD_LETTERS.labels(self.app, origin[0]).inc()
        log.error(
            "record dead-lettered",
            correlation_id=work.event.correlation_id if work.event else _header(work.headers, "correlation_id"),
            topic=origin[0],
            partition=origin[1],
            offset=origin[2],
            error_class=work.error_class,
            error=work.error[:300],
        )

    def _unpark(self, work: Work) -> None:
        if work.event is None:
            return
        key, rid = sequence_key(work.event), record_id(work.event)
        queue = self._parked.get(key)
        if queue is not None and rid in queue:
            queue.remove(rid)
            if not queue:
                del self._parked[key]

    def _postpone(self, topic: str, partition: int, work: Work) -> None:
        tp = TopicPartition(topic, partition, where(work.message)[2])
        self.consumer.seek(tp)
        self.consumer.pause([TopicPartition(topic, partition)])
        self._paused[(topic, partition)] = work.until
        self._fates[Fate.POSTPONED].inc()

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, until in self._paused.items() if until <= now]
        if not due:
            return
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        self.consumer.resume([TopicPartition(t, p) for t, p in due if (t, p) in assigned])
        for tp in due:
            del self._paused[tp]

    def _breaker_resume_at(self) -> float:
        """Monotonic time at which a partition waiting for the open circuit is read again (its probe)."""
        return max(self.breaker.retry_at, time.monotonic() + 0.05)

    def _breaker_moved(self, old: BreakerState, new: BreakerState) -> None:
        metrics.BREAKER_STATE.labels(self.connector, self.system.name).set(new.value)
        metrics.BREAKER_TRANSITIONS.labels(self.connector, self.system.name, new.name.lower()).inc()
        level = log.warning if new is BreakerState.OPEN else log.info
        level("circuit breaker moved", system=self.system.name, old=old.name, new=new.name, url=self.url)

    # --- pending postings and POSTING_ACK_TIMEOUT ---------------------------------------------------------

    def _pending(self, partition: int) -> Any:
        if self.ack_timeout_s is None:
            return None
        try:
            return self.context.store(PENDING_STORE, partition)
        except KeyError:
            return None

    def _note_pending(self, work: Work) -> None:
        """A posting this connector must acknowledge: remembered (from its record's time) until it is."""
        event = work.event
        if not isinstance(event, PostingRequest) or work.fate in (Fate.SKIPPED, Fate.UNDECODABLE):
            return
        store = self._pending(where(work.message)[1])
        if store is None or store.get(event.posting_id) is not None or work.fate in (Fate.ACKNOWLEDGED, Fate.REJECTED):
            return
        kind, stamp = work.message.timestamp()
        requested = datetime.fromtimestamp(stamp / 1000, UTC) if kind else datetime.now(UTC)
        store.put(
            event.posting_id,
            PendingPosting(
                posting_id=event.posting_id,
                erp_target=event.erp_target,
                project_id=event.project_id,
                amount=event.amount,
                currency=event.currency,
                correlation_id=event.correlation_id,
                requested_at=requested,
                timeout_s=float(self.ack_timeout_s or 0),
            ),
        )

    def _resolve_pending(self, work: Work) -> None:
        """The posting is acknowledged: forget it, and resolve its POSTING_ACK_TIMEOUT if one was raised."""
        event = work.event
        store = self._pending(where(work.message)[1])
        if not isinstance(event, PostingRequest) or store is None:
            return
        pending: PendingPosting | None = store.get(event.posting_id)
        if pending is None:
            return
        store.delete(event.posting_id)
        if pending.raised_at is not None:
            self._produce_event(self.topics.exceptions, ack_timeout(pending, at=datetime.now(UTC), resolved=True))
            metrics.ACK_TIMEOUTS.labels(self.connector, "RESOLVED").inc()

    def _scan_ack_timeouts(self) -> None:
        """Raise POSTING_ACK_TIMEOUT for every pending posting older than the timeout (once each)."""
        if self.ack_timeout_s is None or time.monotonic() - self._scanned < self.ack_timeout_check_s:
            return
        self._scanned = time.monotonic()
        now = datetime.now(UTC)
        total = 0
        for name, partition in self.stores.held():
            store = self.context.store(name, partition)
            total += len(store)
            late = [
                p
                for _, p in store.items()
                if p.raised_at is None and (now - p.requested_at).total_seconds() >= p.timeout_s
            ]
            for pending in late:
                if not self._in_transaction:
                    self._begin()
                raised = replace(pending, raised_at=now)
                store.put(pending.posting_id, raised)
                self._produce_event(self.topics.exceptions, ack_timeout(raised, at=now, resolved=False))
                metrics.ACK_TIMEOUTS.labels(self.connector, "OPEN").inc()
                log.warning(
                    "posting not acknowledged in time; POSTING_ACK_TIMEOUT raised",
                    correlation_id=pending.correlation_id,
                    posting_id=pending.posting_id,
                    erp_target=pending.erp_target,
                    waited_s=round((now - pending.requested_at).total_seconds(), 1),
                )
        metrics.PENDING.labels(self.connector).set(total)

    # --- plumbing -----------------------------------------------------------------------------------------

    def _produce_event(self, topic: Topic, event: Event) -> None:
        key = event.key.encode()
        self.produce(
            topic.name,
            self.serdes.for_topic(topic).encode_value(event),
            key=key,
            headers=[
                ("event_type", event.event_type.encode()),
                ("correlation_id", (event.correlation_id or "").encode()),
                ("source_system", event.source_system.encode()),
            ],
            partition=murmur2_partition(key, topic.partitions),
        )

    def _open_http(self) -> None:
        c = self.config
        headers = {"User-Agent": f"backbone-{self.connector}"}
        if c.api_key is not None:
            headers["Authorization"] = f"Bearer {c.api_key.get_secret_value()}"
        self._http = HttpClient(self.url, c.max_in_flight, timeout=c.request_timeout_s, headers=headers)

    def _abort(self) -> None:
        super()._abort()
        self._parked.clear()  # records are read again from the committed offsets; their order with them

    def _close(self) -> None:
        super()._close()
        if self._http is not None:
            self._loop.run_until_complete(self._http.aclose())
        self._loop.close()


def _never_called(message: Message, context: Any) -> None:  # pragma: no cover - _process replaces it
    raise AssertionError("the delivery worker processes whole batches")


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode(errors="replace")
    return None
