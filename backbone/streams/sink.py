"""Exactly-once from Kafka into PostgreSQL without Kafka transactions: rows and offsets in one commit.

    on assign:  read next_offset of each assigned partition from <schema>.sink_offsets and assign there
    loop:       consume(batch) → each record's route turns it into rows (or into a dead-letter row)
                → ONE database transaction: every table's rows and the batch's next offsets → commit;
                  an insert-once table's rows are COPied straight into it while its keys are new,
                  otherwise COPied into a staging table, then INSERT ... ON CONFLICT by its key
                  (binary COPY where every column's type allows it: `BinaryCopy`)
    pipeline:   the transaction of batch N runs on a writer thread while batch N+1 is consumed and
                decoded; at most one batch is in flight, and it is finished (committed or failed)
                before the next is handed over, before a rebalance and before the sink stops
    failure:    the database or the registry unreachable → nothing was committed; reconnect, seek
                every assigned partition back to its stored offset, back off, go on
    a record:   one that cannot be decoded or turned into rows → a row of <schema>.dead_letters with
                its raw key, value, headers and the reason; the partition moves on

This is the other half of the reliability promise (docs/stream-runtime.md, and the design's
"consumers/sinks" layer): the consumed position is part of the data, so a crash between the database
commit and anything else loses and repeats nothing, and Kafka's committed offsets are never used.
Rows are keyed by their ids too, so a replay (the stored offsets reset, duplicates published) writes
each id once: an insert-once table keeps its first row, a latest-state table takes a row only from a
later offset of the same partition than the one it holds.

A sink declares `SinkTable`s and one `SinkRoute` per topic; the target schema must hold the tables,
plus `sink_offsets (group_id, topic, partition, next_offset)` and `dead_letters` with
`DEAD_LETTER_COLUMNS` (see consumers/postgres/migrations/0001_init.sql): the runtime creates no
tables of its own except session-local staging tables.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, Histogram
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from backbone.errors import BackboneError, ServiceUnavailableError
from backbone.settings import KafkaSettings, StreamsSettings
from backbone.streams import clients
from backbone.streams.errors import FatalStreamError, Remedy, remedy_for
from backbone.streams.loop import where

log = structlog.get_logger(__name__)
Row = tuple[Any, ...]
OFFSETS_TABLE = "sink_offsets"
DEAD_LETTERS_TABLE = "dead_letters"
MAX_BACKOFF = 5.0
LAG_REPORT_INTERVAL = 5.0
CRASH_EXIT_STATUS = 137
SOURCE_COLUMNS = ("source_topic", "source_partition", "source_offset")
"""Every materialised row says which record it came from; latest-state tables compare offsets by them."""

ROWS_WRITTEN = MetricCounter(
    "backbone_sink_rows_written_total", "Rows inserted or updated (not counting ignored duplicates)", ["sink", "table"]
)
RECORDS_IN = MetricCounter("backbone_sink_records_total", "Records consumed and committed", ["sink", "topic"])
DEAD_LETTERED = MetricCounter("backbone_sink_dead_letters_total", "Records the sink could not store", ["sink", "topic"])
COMMIT_SECONDS = Histogram(
    "backbone_sink_commit_seconds",
    "Time to write one batch's rows and offsets and commit the database transaction",
    ["sink"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECOVERIES = MetricCounter("backbone_sink_recoveries_total", "Batches rolled back and read again", ["sink", "reason"])
LAG = Gauge("backbone_sink_consumer_lag", "Records behind the partition's end", ["sink", "topic", "partition"])


class SinkError(BackboneError):
    """The sink's database does not have what the sink needs (tables, columns, rights)."""

    exit_code = 78


class _KeysTaken(Exception):
    """A COPY straight into `table` met a key the table already holds (a replay): the transaction is rolled
    back and the batch written again with that table's rows through staging and ON CONFLICT."""

    def __init__(self, table: SinkTable) -> None:
        super().__init__(table.name)
        self.table = table


class _BinaryRefused(Exception):
    """psycopg could not write a value of `table` in binary (its dumper is chosen by the column's type, a
    text COPY's by the value's): the transaction is rolled back and the table written as text from now on."""

    def __init__(self, table: SinkTable) -> None:
        super().__init__(table.name)
        self.table = table


# --- what a sink declares -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: looked up for every row of a batch
class SinkTable:
    """A target table: its columns (in row order) and the key rows are idempotent by.

    `latest=False`: the first row of a key is kept and later ones ignored (facts, history).
    `latest=True`: the row from the latest record wins: a stored row is replaced only by one from a
    higher offset of the same partition (or another partition), so replaying old records never
    rolls a state back. Latest tables need the `SOURCE_COLUMNS`.
    """

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    latest: bool = False

    def __post_init__(self) -> None:
        missing = [c for c in self.key + (SOURCE_COLUMNS if self.latest else ()) if c not in self.columns]
        if missing:
            raise ValueError(f"table {self.name}: key or source columns {missing} are not among its columns")
        # Looked up for every row of every batch: positions found once (a tuple even for one column).
        positions = [self.columns.index(c) for c in self.key]
        getter = operator.itemgetter(*positions)
        key_of = getter if len(positions) > 1 else (lambda row: (getter(row),))
        object.__setattr__(self, "_key_of", key_of)

    def key_of(self, row: Row) -> Row:
        return self._key_of(row)  # type: ignore[attr-defined, no-any-return]


@dataclass(frozen=True)
class SinkRoute:
    """A topic and what its records become: (table, row) pairs. Raising means "dead-letter the record";
    raising `ServiceUnavailableError` means "not the record's fault: roll back and read it again"."""

    topic: str
    rows: Callable[[Message], list[tuple[SinkTable, Row]]]
    tables: tuple[SinkTable, ...]


DEAD_LETTER_COLUMNS = (
    *SOURCE_COLUMNS,
    "record_key",
    "record_value",
    "headers",
    "error_topic",
    "error_partition",
    "error_offset",
    "error_class",
    "error_message",
    "error_processor",
    "error_at",
    "correlation_id",
)
DEAD_LETTER_TABLE = SinkTable(DEAD_LETTERS_TABLE, DEAD_LETTER_COLUMNS, SOURCE_COLUMNS)


def dead_letter_row(message: Message, error: BaseException | None = None, processor: str = "") -> Row:
    """The dead-letter row of `message`.

    With `error`, the sink itself could not store the record. Without, `message` is a record of a
    `<topic>.dlq` topic and its `backbone.error.*` headers (backbone.streams.loop.dead_letter_headers)
    say where it came from and why.
    """
    topic, partition, offset = where(message)
    raw: list[tuple[str, bytes | None]] = message.headers() or []  # type: ignore[assignment]
    headers = [(_text(name), _text((value or b"").decode("utf-8", errors="replace"))) for name, value in raw]
    named = dict(headers)
    if error is not None:
        error_class = getattr(error, "error_class", None) or type(error).__name__
        cause: tuple[Any, ...] = (topic, partition, offset, error_class, _text(str(error)[:2000]), processor, _now())
    else:
        cause = (
            named.get("backbone.error.topic"),
            _int_or_none(named.get("backbone.error.partition")),
            _int_or_none(named.get("backbone.error.offset")),
            named.get("backbone.error.class"),
            named.get("backbone.error.message"),
            named.get("backbone.error.processor"),
            _instant_or_none(named.get("backbone.error.at")),
        )
    return (topic, partition, offset, message.key(), message.value(), json.dumps(headers), *cause,
            named.get("correlation_id") or None)  # fmt: skip


def _text(text: str) -> str:
    """`text` as PostgreSQL stores it: text and jsonb refuse NUL characters, which a dead letter may carry."""
    return text.replace("\x00", "\ufffd")


def _now() -> datetime:
    return datetime.now(UTC)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _instant_or_none(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def plain(value: Any) -> Any:
    """A model field as PostgreSQL takes it: enums by their value, everything else as it is."""
    return value.value if isinstance(value, Enum) else value


# --- one batch --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """What one consume() returned, as rows per record, and the next offset of every partition in it."""

    records: list[tuple[Message, list[tuple[SinkTable, Row]]]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def topics(self) -> Counter[str]:
        """Records per topic (for the metrics), counted when asked: on the writer thread, not the consuming one."""
        return Counter(message.topic() or "" for message, _ in self.records)

    def by_table(self) -> dict[SinkTable, list[Row]]:
        """Rows per table, one per key: the first for insert-once tables, the last for latest tables."""
        tables: dict[SinkTable, dict[Row, Row]] = {}
        for _, rows in self.records:
            for table, row in rows:
                keyed = tables.get(table)
                if keyed is None:
                    keyed = tables[table] = {}
                key = table.key_of(row)
                if table.latest or key not in keyed:
                    keyed[key] = row
        return {table: list(keyed.values()) for table, keyed in tables.items()}


class Statements:
    """The SQL of one schema's tables, built once."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def target(self, table: str) -> sql.Composable:
        return sql.Identifier(self.schema, table)

    @staticmethod
    def stage(table: SinkTable) -> sql.Composable:
        return sql.Identifier(f"sink_stage_{table.name}")

    def create_stage(self, table: SinkTable) -> sql.Composed:
        # Session-local working tables, emptied at every commit; the real tables come from migrations.
        return sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
            self.stage(table), self.target(table.name)
        )

    def copy_stage(self, table: SinkTable, *, binary: bool = False) -> sql.Composed:
        return _copy_from(self.stage(table), table, binary)

    def copy_target(self, table: SinkTable, *, binary: bool = False) -> sql.Composed:
        return _copy_from(self.target(table.name), table, binary)

    def column_types(self) -> sql.Composed:
        return sql.SQL(
            "SELECT c.relname, a.attname, a.atttypid::int FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = {} AND c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        ).format(sql.Literal(self.schema))

    def insert_from_stage(self, table: SinkTable) -> sql.Composed:
        return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} {}").format(
            self.target(table.name),
            _columns(table.columns),
            _columns(table.columns),
            self.stage(table),
            self.on_conflict(table),
        )

    def insert_values(self, table: SinkTable) -> sql.Composed:
        return sql.SQL("INSERT INTO {} ({}) VALUES ({}) {}").format(
            self.target(table.name),
            _columns(table.columns),
            sql.SQL(", ").join(sql.Placeholder() * len(table.columns)),
            self.on_conflict(table),
        )

    def on_conflict(self, table: SinkTable) -> sql.Composed:
        key = _columns(table.key)
        if not table.latest:
            return sql.SQL("ON CONFLICT ({}) DO NOTHING").format(key)
        stored = sql.Identifier(table.name)
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in table.columns
            if c not in table.key
        )
        newer = sql.SQL(
            "({s}.source_topic, {s}.source_partition) IS DISTINCT FROM"
            " (EXCLUDED.source_topic, EXCLUDED.source_partition) OR {s}.source_offset < EXCLUDED.source_offset"
        ).format(s=stored)
        return sql.SQL("ON CONFLICT ({}) DO UPDATE SET {} WHERE {}").format(key, updates, newer)

    def stored_offsets(self) -> sql.Composed:
        return sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE group_id = %s AND topic = ANY(%s)").format(
            self.target(OFFSETS_TABLE)
        )

    def save_offset(self) -> sql.Composed:
        # Forward only: a member that lost its partitions and commits late cannot move one back.
        return sql.SQL(
            "INSERT INTO {t} (group_id, topic, partition, next_offset) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
            "updated_at = now() WHERE {t}.next_offset < EXCLUDED.next_offset"
        ).format(t=self.target(OFFSETS_TABLE))


def _columns(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _copy_from(target: sql.Composable, table: SinkTable, binary: bool) -> sql.Composed:
    options = sql.SQL(" (FORMAT BINARY)" if binary else "")
    return sql.SQL("COPY {} ({}) FROM STDIN{}").format(target, _columns(table.columns), options)


# --- binary COPY ------------------------------------------------------------------------------------------

_BINARY_TYPES = {
    psycopg.postgres.types[name].oid: psycopg.postgres.types[as_name].oid
    for name, as_name in {
        "text": "text", "bpchar": "text", "varchar": "text", "int4": "int4", "int8": "int8", "numeric": "numeric",
        "date": "date", "timestamptz": "timestamptz", "bool": "bool", "bytea": "bytea",
    }.items()
}  # fmt: skip
"""Column types a binary COPY writes, and the type whose binary dumper writes them (char and varchar
take text's bytes). Anything else (jsonb's binary form is not its text) keeps the table on text COPY."""

_INT_RANGES = {psycopg.postgres.types["int4"].oid: 2**31, psycopg.postgres.types["int8"].oid: 2**63}


@dataclass(frozen=True)
class BinaryCopy:
    """How a table's rows go into a binary COPY, which costs psycopg about a third less CPU per row than
    text (dates, instants and decimals are not formatted as text) and PostgreSQL a little less.

    A binary dumper is chosen by the column's type, not the value's, and psycopg's int4 one wraps 2**31
    around to -2**31 where a text COPY has PostgreSQL refuse it (a `DataError`: the record becomes a
    dead letter). So a batch goes binary only when every integer column's values fit (`takes`: a min and
    a max per column, at C speed); otherwise it goes as text and PostgreSQL judges it."""

    types: tuple[int, ...]
    ranges: tuple[tuple[Callable[[Row], Any], int], ...]
    """(the column's value, 2**(bits - 1)) of every integer column."""

    @classmethod
    def of(cls, columns: Sequence[str], types: dict[str, int]) -> BinaryCopy | None:
        """The binary COPY of `columns` whose PostgreSQL types are `types`, or None if one is not binary-safe."""
        if any(types.get(column) not in _BINARY_TYPES for column in columns):
            return None
        ranges = tuple(
            (operator.itemgetter(i), _INT_RANGES[types[c]]) for i, c in enumerate(columns) if types[c] in _INT_RANGES
        )
        return cls(tuple(_BINARY_TYPES[types[column]] for column in columns), ranges)

    def takes(self, rows: list[Row]) -> bool:
        try:
            return all(
                -bound <= min(map(value, rows)) and max(map(value, rows)) < bound for value, bound in self.ranges
            )
        except (TypeError, ValueError):  # a null, a value that is not an integer, no rows: text COPY
            return False


class RepeatedNumericDumper(Dumper):
    """numeric in a binary COPY, each distinct decimal converted once per COPY. psycopg's own binary
    dumper spends ~1.5 µs on a decimal (its digits as a tuple of ints, then base 10,000): with three per
    invoice candidate, over half of the writer thread's formatting. Rates, discount percentages and
    amounts repeat within a batch, so a value's bytes are looked up by its text (which tells `150.00` from
    `150.0`, as the stored scale does) and written as psycopg wrote them the first time: the same bytes
    (tests/unit/test_sink_numeric.py), and a value that never repeats costs about what it did. Used only by
    the sink connection's binary COPYs (found by the column's type after `set_types`); a dumper lives as
    long as its COPY, so its memo holds one batch."""

    format = Format.BINARY
    oid = psycopg.postgres.types["numeric"].oid

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        dumper = psycopg.adapters.get_dumper_by_oid(self.oid, Format.BINARY)
        self._dump_once = dumper(cls, context).dump
        self._memo: dict[str, Any] = {}
        self._seen: dict[int, tuple[Decimal, Any]] = {}
        """By identity: the sink's row readers give every record the same object for the same decimal
        (`compile_row_reader`), so most values are found without being turned into text (~0.3 us each).
        Each entry holds its decimal, so no other object can take its id while the memo lives."""

    def dump(self, obj: Any) -> Any:
        seen = self._seen.get(id(obj))
        if seen is not None:
            return seen[1]
        if type(obj) is not Decimal:  # an int (or a subclass): as psycopg writes it
            return self._dump_once(obj)
        text = str(obj)
        dumped = self._memo.get(text)
        if dumped is None:
            dumped = self._memo[text] = self._dump_once(obj)
        self._seen[id(obj)] = (obj, dumped)
        return dumped


# --- the worker -------------------------------------------------------------------------------------------


class SinkWorker:
    """One sink process: a read_committed group consumer, one PostgreSQL connection and the batch loop."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        streams: StreamsSettings,
        conninfo: str,
        schema: str,
        group_id: str,
        routes: Iterable[SinkRoute],
        batch_size: int = 5_000,
        poll_timeout: float = 0.2,
        name: str = "sink",
        crash_after_commit: int | None = None,
    ) -> None:
        self.name = name
        self.group_id = group_id
        self.conninfo = conninfo
        self.routes = {route.topic: route for route in routes}
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.crash_after_commit = crash_after_commit
        """Test hook: the process exits with status 137 right after this many database commits."""
        self.sql = Statements(schema)
        self.consumer = clients.group_consumer(kafka, streams, group_id)
        self._conn: psycopg.Connection | None = None
        self._tables = {DEAD_LETTER_TABLE, *(table for route in self.routes.values() for table in route.tables)}
        self._direct = {table for table in self._tables if not table.latest}
        """Insert-once tables whose keys were new in the last batch written to them: their next rows are
        COPied straight into them (the writer thread's; `_write` keeps it)."""
        self._binary: dict[SinkTable, BinaryCopy | None] = {}
        """Per table, how its rows go into a binary COPY (None: text COPY); read at every connect."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-writer")
        self._pending: Future[None] | None = None
        """The batch whose transaction runs on the writer thread (at most one)."""
        self._stop = threading.Event()
        self._rewind_needed = False
        self._callback_error: BaseException | None = None
        self._backoff = 0.0
        self._lag_reported = 0.0
        self.commits = 0
        self.records = 0
        """Database commits and records committed by this process (the log's last line says them too)."""
        self.recoveries = 0

    # --- running ---------------------------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> None:
        """Write batches until `stop()` (or SIGTERM/SIGINT); the batch in hand is committed first."""
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        try:
            self._connection()  # fail early on a missing table or an unreachable database
            self.consumer.subscribe(
                list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            log.info(
                "sink started", sink=self.name, group_id=self.group_id, schema=self.sql.schema, topics=len(self.routes)
            )
            while not self._stop.is_set():
                self.step()
            self._drain()
        finally:
            self._close()
        log.info("sink stopped", sink=self.name, commits=self.commits, records=self.records)

    def stop(self) -> None:
        self._stop.set()

    @property
    def direct_tables(self) -> frozenset[str]:
        """The insert-once tables whose next rows are COPied straight into them (the others go through
        staging and ON CONFLICT)."""
        return frozenset(table.name for table in frozenset(self._direct))  # copied at once: the writer changes it

    def step(self) -> None:
        """One batch: consume and turn into rows while the previous batch commits, then hand it over
        to the writer thread (rows and offsets in one transaction)."""
        try:
            if self._rewind_needed:
                self._rewind()
            messages = self.consumer.consume(self.batch_size, self.poll_timeout)
            self._raise_callback_error()
            if self._rewind_needed:  # an assignment without readable offsets: read it again from them
                return
            batch = self._collect(messages)
            self._finish_pending()  # when the previous batch failed, this one is read again too
            if batch.positions:
                self._pending = self._writer.submit(self._commit, batch)
        except (psycopg.OperationalError, ServiceUnavailableError, KafkaException) as error:
            self._recover(error)
        except psycopg.errors.ProgrammingError as error:  # a missing column or right: no retry fixes it
            raise SinkError(
                f"sink {self.name}: schema {self.sql.schema} does not take its rows ({error})",
                hint="apply the sink's migrations, or check the database user's rights",
            ) from error
        self._report_lag()

    # --- records to rows -------------------------------------------------------------------------------

    def _collect(self, messages: list[Message]) -> Batch:
        # On the consuming thread, the sink's longest path: one pass, names bound once (this loop runs
        # for every record; the topics' counts are left to the writer thread, see `Batch.topics`).
        batch = Batch()
        records, positions, rows = batch.records, batch.positions, self._rows
        for message in messages:
            error = message.error()
            if error is not None:
                clients.check_consumed(error, sink=self.name)
                continue
            records.append((message, rows(message)))
            positions[(message.topic(), message.partition())] = message.offset() + 1  # type: ignore[index, operator]
        return batch

    def _rows(self, message: Message) -> list[tuple[SinkTable, Row]]:
        try:
            return self.routes[message.topic() or ""].rows(message)
        except ServiceUnavailableError:
            raise
        except Exception as error:  # the record's own fault: dead-letter it, the partition moves on
            return [self._dead_letter(message, error)]

    def _dead_letter(self, message: Message, error: BaseException) -> tuple[SinkTable, Row]:
        row = dead_letter_row(message, error, self.name)
        log.error(
            "record dead-lettered",
            sink=self.name,
            correlation_id=row[-1],
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            error_class=row[DEAD_LETTER_COLUMNS.index("error_class")],
            error=str(error)[:500],
        )
        DEAD_LETTERED.labels(self.name, message.topic()).inc()
        return DEAD_LETTER_TABLE, row

    # --- the batch in flight -------------------------------------------------------------------------------

    def _finish_pending(self) -> None:
        """Wait for the batch in flight; its failure is raised here (and the caller recovers)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
            self._backoff = 0.0

    def _settle(self) -> None:
        """Finish the batch in flight where nothing may be raised (rebalance callbacks): a failure is
        kept for the next step, which recovers from it."""
        try:
            self._finish_pending()
        except Exception as error:
            self._callback_error = self._callback_error or error

    def _drain(self) -> None:
        """Finish the batch in flight before the connection is dropped or the sink stops; a failed one
        needs nothing more (its offsets were not stored, so its records are read again)."""
        try:
            self._finish_pending()
        except Exception as error:
            log.warning("the batch in flight was not committed; it is read again", sink=self.name, error=str(error))

    # --- writing --------------------------------------------------------------------------------------------

    def _commit(self, batch: Batch) -> None:
        """On the writer thread: one batch's rows and offsets in one database transaction."""
        started = time.monotonic()
        try:
            written = self._write(batch)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as error:
            log.warning("batch refused by the database; writing it record by record", sink=self.name, error=str(error))
            written = self._write_one_by_one(batch)
        seconds = time.monotonic() - started
        COMMIT_SECONDS.labels(self.name).observe(seconds)
        for table, count in written.items():
            ROWS_WRITTEN.labels(self.name, table).inc(count)
        for topic, count in batch.topics.items():
            RECORDS_IN.labels(self.name, topic).inc(count)
        self.commits += 1
        self.records += len(batch.records)
        log.debug(
            "batch committed", sink=self.name, records=len(batch.records), rows=written, seconds=round(seconds, 4)
        )
        if self.crash_after_commit is not None and self.commits >= self.crash_after_commit:
            log.warning(
                "crashing on purpose after a commit (test hook)",
                sink=self.name,
                commits=self.commits,
                records=self.records,
            )
            os._exit(CRASH_EXIT_STATUS)

    def _write(self, batch: Batch) -> dict[str, int]:
        """Every table's rows and the offsets in one transaction. Once a direct COPY meets a stored key,
        the transaction is rolled back and written again with that table through staging."""
        by_table = batch.by_table()
        while True:
            try:
                return self._write_tables(by_table, batch.positions)
            except _KeysTaken as taken:
                self._direct.discard(taken.table)
                log.info(
                    "keys already stored; writing the table through staging", sink=self.name, table=taken.table.name
                )
            except _BinaryRefused as refused:
                self._binary[refused.table] = None
                log.warning(
                    "a value does not go into a binary COPY; writing the table as text",
                    sink=self.name,
                    table=refused.table.name,
                    error=str(refused.__cause__),
                )

    def _write_tables(
        self, by_table: dict[SinkTable, list[Row]], positions: dict[tuple[str, int], int]
    ) -> dict[str, int]:
        conn = self._connection()
        written: dict[str, int] = {}
        with conn.transaction():
            for table, rows in by_table.items():
                if table in self._direct:
                    written[table.name] = self._copy_new(conn, table, rows)
                else:
                    written[table.name] = self._upsert(conn, table, rows)
            self._save_offsets(conn, positions)
        return written

    def _copy_new(self, conn: psycopg.Connection, table: SinkTable, rows: list[Row]) -> int:
        """COPY straight into an insert-once table: as fast as PostgreSQL stores rows, while no key is stored
        yet (the usual case: the offsets stored with the rows say where the last batch ended)."""
        types = self._binary_types_of(table, rows)
        try:
            self._copy(conn, table, self.sql.copy_target(table, binary=types is not None), rows, types)
        except psycopg.errors.UniqueViolation as error:
            raise _KeysTaken(table) from error
        return len(rows)

    def _upsert(self, conn: psycopg.Connection, table: SinkTable, rows: list[Row]) -> int:
        """COPY into the table's staging table, then INSERT ... ON CONFLICT by its key. An insert-once table
        goes back to direct COPY once a batch of its rows held no stored key (the replay is over)."""
        types = self._binary_types_of(table, rows)
        self._copy(conn, table, self.sql.copy_stage(table, binary=types is not None), rows, types)
        with conn.cursor() as cursor:
            cursor.execute(self.sql.insert_from_stage(table))
            inserted = max(cursor.rowcount, 0)
        if not table.latest and inserted == len(rows):
            self._direct.add(table)
        return inserted

    def _binary_types_of(self, table: SinkTable, rows: list[Row]) -> tuple[int, ...] | None:
        binary = self._binary.get(table)
        return binary.types if binary is not None and binary.takes(rows) else None

    @staticmethod
    def _copy(
        conn: psycopg.Connection,
        table: SinkTable,
        statement: sql.Composed,
        rows: list[Row],
        types: tuple[int, ...] | None,
    ) -> None:
        try:
            with conn.cursor() as cursor, cursor.copy(statement) as copy:
                if types is not None:
                    copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except (TypeError, ValueError, AttributeError, OverflowError) as error:
            if types is None:
                raise
            raise _BinaryRefused(table) from error

    def _write_one_by_one(self, batch: Batch) -> dict[str, int]:
        """The slow path after the database refused a batch: each record in a savepoint; a record whose
        rows the database refuses becomes a dead letter (with the database's reason) instead."""
        conn = self._connection()
        written: Counter[str] = Counter()
        with conn.transaction():
            for message, rows in batch.records:
                try:
                    with conn.transaction():
                        written.update(self._insert(conn, rows))
                except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as error:
                    written.update(self._insert(conn, [self._dead_letter(message, error)]))
            self._save_offsets(conn, batch.positions)
        return dict(written)

    def _insert(self, conn: psycopg.Connection, rows: list[tuple[SinkTable, Row]]) -> Counter[str]:
        written: Counter[str] = Counter()
        with conn.cursor() as cursor:
            for table, row in rows:
                cursor.execute(self.sql.insert_values(table), row)
                written[table.name] += max(cursor.rowcount, 0)
        return written

    def _save_offsets(self, conn: psycopg.Connection, positions: dict[tuple[str, int], int]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(
                self.sql.save_offset(), [(self.group_id, t, p, o) for (t, p), o in sorted(positions.items())]
            )

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset of every partition this group has written, from the database."""
        conn = self._connection()
        with conn.transaction():
            rows = conn.execute(self.sql.stored_offsets(), (self.group_id, list(self.routes))).fetchall()
        return {(topic, int(partition)): int(offset) for topic, partition, offset in rows}

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=False, application_name=f"backbone-{self.name}")
            conn.adapters.register_dumper(None, RepeatedNumericDumper)  # binary COPY with set_types only
        except psycopg.OperationalError as error:
            raise ServiceUnavailableError(
                f"sink {self.name}: PostgreSQL is not reachable ({error})",
                hint="start it with `backbone up` or set BACKBONE_POSTGRES_DSN",
            ) from error
        try:
            with conn.transaction():
                for table in sorted(self._tables, key=lambda t: t.name):
                    conn.execute(self.sql.create_stage(table))
                conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(self.sql.target(OFFSETS_TABLE)))
                self._binary = self._binary_types(conn)
        except psycopg.errors.UndefinedTable as error:
            conn.close()
            raise SinkError(
                f"sink {self.name}: schema {self.sql.schema} lacks a table ({error})",
                hint="apply the sink's migrations (`backbone up`, or the sink applies them at start)",
            ) from error
        return conn

    def _binary_types(self, conn: psycopg.Connection) -> dict[SinkTable, BinaryCopy | None]:
        found = conn.execute(self.sql.column_types(), ([t.name for t in self._tables],)).fetchall()
        types: dict[str, dict[str, int]] = {}
        for table, column, oid in found:
            types.setdefault(table, {})[column] = oid
        return {table: BinaryCopy.of(table.columns, types.get(table.name, {})) for table in self._tables}

    # --- rebalances and recovery ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Start every assigned partition at the offset stored with its rows (the beginning when none)."""
        self._settle()
        try:
            stored = self.stored_offsets()
        except Exception as error:  # the database is down: read from anywhere, but rewind before writing
            log.warning("stored offsets unreadable; rewinding before the first write", sink=self.name, error=str(error))
            stored = {}
            self._rewind_needed = True
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info(
            "partitions assigned",
            sink=self.name,
            offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in partitions if tp.offset >= 0},
            from_beginning=sum(1 for tp in partitions if tp.offset < 0),
        )

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # The batch in flight commits (its offsets stored) before the next owner reads them.
        self._settle()
        log.info("partitions revoked", sink=self.name, partitions=len(partitions))

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._settle()
        log.warning("partitions lost", sink=self.name, partitions=len(partitions))

    def _rewind(self) -> None:
        """Seek every assigned partition back to the offset stored with its rows."""
        assignment = self.consumer.assignment()
        stored = self.stored_offsets()
        for tp in assignment:
            self.consumer.seek(
                TopicPartition(tp.topic, tp.partition, stored.get((tp.topic, tp.partition), OFFSET_BEGINNING))
            )
        self._rewind_needed = False
        log.info("rewound to the stored offsets", sink=self.name, partitions=len(assignment))

    def _recover(self, error: BaseException) -> None:
        if isinstance(error, KafkaException) and remedy_for(error) is Remedy.FATAL:
            log.critical("fatal Kafka error; the sink stops", sink=self.name, error=str(error))
            raise FatalStreamError(f"sink {self.name} stopped: {error}") from error
        reason = type(error).__name__
        log.warning(
            "batch rolled back; reading again from the stored offsets", sink=self.name, reason=reason, error=str(error)
        )
        RECOVERIES.labels(self.name, reason).inc()
        self.recoveries += 1
        self._drain()
        self._callback_error = None  # superseded: everything uncommitted is read again
        if isinstance(error, psycopg.Error | ServiceUnavailableError) and self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        self._rewind_needed = True
        self._backoff = min(MAX_BACKOFF, max(0.05, self._backoff * 2))
        self._stop.wait(self._backoff)

    def _raise_callback_error(self) -> None:
        error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_reported < LAG_REPORT_INTERVAL:
            return
        self._lag_reported = now
        for topic, partition, behind in clients.lag(self.consumer):
            LAG.labels(self.name, topic, str(partition)).set(behind)

    def _close(self) -> None:
        self._drain()
        self._writer.shutdown(wait=True)
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
