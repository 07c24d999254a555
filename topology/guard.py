"""Every stage processes each offset of each partition it is assigned, in order (faust 0.15.3 drops some).

`PartitionGuard` is the plumbing between faust and the topology's stages; the stages only handle records.
It keeps a `Continuity` per worker and:
  * makes faust's stream queues `NeverFullQueue`s, so its conductor never drops a record into a full one;
  * runs each record of a stage through `each`: re-deliveries are skipped, a hole's records are read from
    the broker (`HoleReader`) and handled first;
  * commits `Continuity`'s offsets instead of faust's, which can step over a record faust dropped;
  * every `STALL_CHECK_S`, has faust fetch again a partition of an idle stage that sits behind its end
    (dropped records with no later record to reveal the hole), and warns of partitions paused outside a
    rebalance.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from mode.utils.queues import ThrowableQueue

from backbone.settings import KafkaSettings
from topology import metrics
from topology.continuity import Continuity, Verdict
from topology.holes import HoleEvent, HoleReader

log = structlog.get_logger(__name__)
EXIT_STAGE_FAILED = 70
"""Exit status when a stage failed outside a record's own processing (EX_SOFTWARE: see the critical log)."""
STALL_CHECK_S = 2.0
"""How long a stage may be idle before its partitions are compared with their ends (`refetch_stalled`)."""

Process = Callable[[Any], Awaitable[None]]
"""Handle one record (a faust event or a `HoleEvent`) until its outputs and state are durable."""


class PartitionGuard:
    """Offsets processed in order per partition, for every stage of one faust app."""

    def __init__(self, app: Any, kafka: KafkaSettings) -> None:
        self.app = app
        self.continuity = Continuity()
        self.holes = HoleReader(kafka, group_id=app.conf.id)
        self.stage_of: dict[str, str] = {}
        """The stage that consumes each source topic (`watch`)."""
        self._active: dict[str, float] = {}
        """When each stage last processed a record (monotonic seconds)."""
        never_full_queues(app)
        app.timer(STALL_CHECK_S)(self.refetch_stalled)
        app.timer(5.0)(self.report_paused)

    def watch(self, stage: str, topics: list[str]) -> None:
        self.stage_of.update(dict.fromkeys(topics, stage))

    async def each(self, stream: Any, process: Process, stage: str) -> None:
        """Run `process` for every offset of every partition of `stream`, in order; exit the worker if it fails."""
        self._guard_commits()
        try:
            async for event in stream.events():
                tp, offset = event.message.tp, event.message.offset
                if self.continuity.next_offset(tp) is None:
                    self.continuity.start(tp, await self._start_offset(tp))
                verdict = self.continuity.verdict(tp, offset)
                if verdict is Verdict.REDELIVERED:
                    continue
                if verdict is Verdict.HOLE:
                    for missed in await self._read_hole(tp, offset, stage):
                        await self._done_after(process, missed, tp, stage)
                await self._done_after(process, event, tp, stage)
        except Exception as error:  # a crashed faust agent stops its stage but not the worker: stop the worker
            log.critical(
                "stage failed; exiting so that a restart processes its records again",
                stage=stage,
                error=str(error),
                trace="".join(traceback.format_exception(error))[-4000:],
                hint="check the broker and the registry (`backbone status`), then restart the topology",
            )
            os._exit(EXIT_STAGE_FAILED)

    async def _done_after(self, process: Process, event: Any, tp: Any, stage: str) -> None:
        await process(event)
        self.continuity.done(tp, event.message.offset)
        self._active[stage] = time.monotonic()

    def forget(self) -> None:
        """After a rebalance faust seeks every partition back to its committed offset."""
        self.continuity.forget()

    def close(self) -> None:
        self.holes.close()

    async def _start_offset(self, tp: Any) -> int:
        """Where a newly assigned partition's processing starts: its committed offset, else its first record.

        faust hands over records before it has read the committed offsets, so they are asked of the broker.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.holes.start_offset, tp.topic, tp.partition)

    async def _read_hole(self, tp: Any, offset: int, stage: str) -> list[HoleEvent]:
        start = self.continuity.next_offset(tp)
        assert start is not None
        loop = asyncio.get_running_loop()
        missed = await loop.run_in_executor(None, self.holes.read, tp.topic, tp.partition, start, offset)
        if missed:
            metrics.RECOVERED.labels(stage).inc(len(missed))
            log.warning(
                "records faust skipped were read from the broker",
                stage=stage,
                topic=tp.topic,
                partition=tp.partition,
                records=len(missed),
                first_offset=missed[0].message.offset,
                last_offset=missed[-1].message.offset,
            )
        return missed

    def _guard_commits(self) -> None:
        """Commit `Continuity`'s offsets, not faust's (which can step over a record faust dropped)."""
        consumer = self.app.consumer
        if getattr(consumer, "_backbone_guarded", False):
            return
        faust_new_offset = consumer._new_offset

        def new_offset(tp: Any) -> int | None:
            faust_new_offset(tp)  # keeps faust's own lists of acknowledged offsets from growing
            committed = consumer._committed_offset[tp]
            return self.continuity.committable(tp, committed if committed is None or committed >= 0 else None)

        consumer._new_offset = new_offset
        consumer._backbone_guarded = True

    async def refetch_stalled(self) -> None:
        """Have faust fetch again records it dropped at a partition's end, where no later record shows the hole.

        A partition of an idle stage (nothing processed for `STALL_CHECK_S`) whose next unprocessed offset is
        below its end on the broker holds records faust never handed over: they are fetched again (a seek).
        Only transaction markers in between means the partition is done up to its end.
        """
        if self.app.rebalancing or not self.app.flow_control.is_active():
            return
        consumer, now = self.app.consumer, time.monotonic()
        loop = asyncio.get_running_loop()
        for tp in consumer.assignment():
            stage = self.stage_of.get(tp.topic)
            if stage is None or now - self._active.get(stage, 0.0) < STALL_CHECK_S:
                continue
            if self.continuity.next_offset(tp) is None:
                self.continuity.start(tp, await self._start_offset(tp))
            next_offset = self.continuity.next_offset(tp)
            assert next_offset is not None
            try:
                first, end = await loop.run_in_executor(
                    None, self.holes.first_to_end, tp.topic, tp.partition, next_offset
                )
            except Exception as error:  # the next check tries again
                log.warning("could not compare a partition with its end", topic=tp.topic, error=str(error))
                continue
            if self.continuity.next_offset(tp) != next_offset:
                continue  # the stage moved on meanwhile
            if first is not None:
                log.warning(
                    "idle stage behind its partition's end; fetching the records again",
                    stage=stage,
                    topic=tp.topic,
                    partition=tp.partition,
                    first_offset=first,
                    end_offset=end,
                )
                metrics.REFETCHED.labels(stage).inc(end - first)
                self._active[stage] = now  # give the refetch time before the next check
                await consumer.seek(tp, next_offset)
            elif end > next_offset:
                self.continuity.done(tp, end - 1)  # only transaction markers were left

    async def report_paused(self) -> None:
        """Warn about assigned partitions faust has paused outside a rebalance (held back: not fetched at all)."""
        if self.app.rebalancing or self.app.in_recovery:
            return
        consumer = self.app.consumer
        paused = sorted(f"{tp.topic}/{tp.partition}" for tp in consumer._paused_partitions if tp.topic in self.stage_of)
        if paused:
            log.warning("partitions paused outside a rebalance", partitions=paused)


class NeverFullQueue(ThrowableQueue):  # type: ignore[misc]
    """A stream's queue that never reports itself full, so faust's conductor never drops a record into it.

    Fetching stays bounded: above 80 % of `maxsize` the queue's pressure callbacks take the partition
    out of the fetcher until the stream has drained it (faust's own mechanism); only the records of the
    fetch already in memory go past `maxsize`.
    """

    def full(self) -> bool:
        return False


def never_full_queues(app: Any) -> None:
    """Make every stream queue of the faust `app` a `NeverFullQueue` (call before any channel is read)."""

    def queue(maxsize: int | None = None, *, clear_on_resume: bool = False) -> NeverFullQueue:
        return NeverFullQueue(maxsize=maxsize, flow_control=app.flow_control, clear_on_resume=clear_on_resume)

    app.FlowControlQueue = queue
