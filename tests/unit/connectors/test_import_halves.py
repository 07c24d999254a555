"""A large CSV export validated in two processes gives exactly what one pass gives (`producers.halves`).

Each case imports the same file twice through `backbone import` with a stand-in emitter: once in one pass,
once cut in two (the threshold lowered so a small file is split), and compares the published records byte
for byte, in order, the rejects file and what was printed. The files repeat identity keys across the whole
file, so identical rows sit on both sides of the cut: numbering the second half's rows from one again
would give them the first half's ids, and the records would differ.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result

import producers.halves
from backbone.cli.main import cli
from backbone.kafka.topics import Topic
from producers.importing import inspect_export
from producers.parsing import ReadOptions
from producers.tabular import TablePart, detect_table, line_start_near, table_records

EXPORTED = ["--exported-at", "2024-11-01T00:00:00Z"]
ROWS = 400


class RecordingEmitter:
    """Stands in for `producers.emitter.Emitter`: keeps what `backbone import` publishes from its spools."""

    published: ClassVar[list[tuple[str, bytes, bytes]]] = []
    made: ClassVar[list[str]] = []
    """"emitter", as each is made: with the `forks` fixture, shows what was made before the fork."""

    def __init__(self, settings: object, **_: object) -> None:
        RecordingEmitter.made.append("emitter")

    def ensure_topics(self, topics: Iterable[Topic], timeout: float = 10.0) -> None:
        return None

    def __enter__(self) -> RecordingEmitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def publish_encoded(self, topic: Topic, records: Iterable[Any], progress: object = None) -> SimpleNamespace:
        sent = [(topic.event_type, key, body) for key, body, _ in records]
        RecordingEmitter.published.extend(sent)
        return SimpleNamespace(published=len(sent))


@pytest.fixture(autouse=True)
def emitter(monkeypatch: pytest.MonkeyPatch) -> type[RecordingEmitter]:
    import backbone.settings
    import producers.emitter

    RecordingEmitter.published = []
    RecordingEmitter.made = []
    monkeypatch.setattr(producers.emitter, "Emitter", RecordingEmitter)
    monkeypatch.setattr(backbone.settings, "load_settings", lambda: object())
    return RecordingEmitter


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many second halves were forked (the import module's `SecondHalf`, counted)."""
    import backbone.cli.imports

    made: list[int] = []

    class Counted(producers.halves.SecondHalf):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(1)
            RecordingEmitter.made.append("fork")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(backbone.cli.imports, "SecondHalf", Counted)
    return made


def _toggl(path: Path, bad: dict[int, str]) -> Path:
    """Toggl rows whose (email, start) repeats every 7 rows: every key has rows on both sides of the cut."""
    header = ["User", "Email", "Client", "Project", "Task", "Description", "Billable", "Start date", "Start time"]
    rows = []
    for i in range(ROWS):
        day = bad.get(i, f"2024-03-{i % 7 + 1:02d}")
        rows.append(["Ann", f"ann{i % 7}@example.com", "Acme", "Web", "", "same", "Yes", day, "09:00:00"])
    return _write(
        path, [header, *[[*row, "", "", "1:00:00"] for row in rows]], extra=["End date", "End time", "Duration"]
    )


def _harvest(path: Path, bad: dict[int, tuple[str, str]]) -> Path:
    """Harvest rows in runs of identical rows (the same work, person and notes), a run across the cut;
    `bad` rows have a wrong date (rejected before they are numbered) or wrong hours (after)."""
    header = ["Date", "Client", "Project", "Task", "Notes", "Hours", "Approved?", "First Name", "Last Name"]
    rows = []
    for i in range(ROWS):
        date, hours = bad.get(i, (f"2024-03-{i // 40 % 3 + 1:02d}", "1,5"))
        rows.append([date, "Acme", "Web", "Design", "", hours, "Yes" if i % 2 else "No", "Ann", "Lee"])
    return _write(path, [header, *rows])


def _clockify(path: Path, bad: dict[int, str]) -> Path:
    header = ["Project", "Client", "Description", "User", "Email", "Start Date", "Start Time", "Duration (h)"]
    rows = []
    for i in range(ROWS):
        start = bad.get(i, f"03/{i % 5 + 1:02d}/2024")
        rows.append(["Web", "Acme", "", "Ann", "ann@example.com", start, "01:00 PM", "01:30:00"])
    return _write(path, [header, *rows])


def _write(path: Path, rows: list[list[str]], extra: list[str] | None = None) -> Path:
    if extra:
        rows = [[*rows[0], *extra], *rows[1:]]
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _both_ways(monkeypatch: pytest.MonkeyPatch, args: list[str], rejects: Path | None = None) -> list[Any]:
    """(exit code, stderr, published records, rejects file) of one pass and of two halves."""
    outcomes = []
    for threshold in (1 << 40, 1):
        monkeypatch.setattr(producers.halves, "PARALLEL_BYTES", threshold)
        RecordingEmitter.published = []
        result: Result = CliRunner().invoke(cli, ["import", *args, *EXPORTED])
        written = rejects.read_bytes() if rejects is not None and rejects.exists() else None
        stderr = re.sub(r"\([\d,]+/s\)", "(rate)", result.stderr)  # the publishing rate is the one difference
        outcomes.append((result.exit_code, stderr, list(RecordingEmitter.published), written))
        if rejects is not None:
            rejects.unlink(missing_ok=True)
    return outcomes


CLEAN = {
    "toggl-same-start-on-both-sides": lambda tmp: ["toggl", str(_toggl(tmp / "t.csv", {}))],
    "harvest-identical-rows-across-the-cut": lambda tmp: ["harvest", str(_harvest(tmp / "h.csv", {}))],
    "clockify-same-start-on-both-sides": lambda tmp: [
        "clockify",
        str(_clockify(tmp / "c.csv", {})),
        "--date-order",
        "MDY",
    ],
}


@pytest.mark.parametrize("make", CLEAN.values(), ids=CLEAN.keys())
def test_identical_rows_across_the_cut_are_numbered_as_in_one_pass(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    one_pass, in_halves = _both_ways(monkeypatch, make(tmp_path))
    assert forks == [1], "the file was not validated in two halves"
    assert one_pass[0] == 0, one_pass[1]
    assert in_halves == one_pass
    entries = [key for event_type, key, _ in one_pass[2] if event_type == "time-entry"]
    assert len(entries) == ROWS and len(set(entries)) == ROWS  # every identical row its own id


def test_rejected_rows_in_each_half_are_listed_as_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    """A bad date (rejected before numbering) and bad hours (after) in each half, amid identical rows."""
    bad = {30: ("2024-02-30", "1"), 41: ("2024-03-01", "lots"), 300: ("not a date", "1"), 333: ("2024-03-02", "-1")}
    source = _harvest(tmp_path / "h.csv", bad)
    rejects = tmp_path / "rejects.jsonl"
    args = ["harvest", str(source), "--skip-invalid", "--rejects", str(rejects)]
    one_pass, in_halves = _both_ways(monkeypatch, args, rejects)
    assert forks == [1]
    assert in_halves == one_pass
    assert one_pass[0] == 0, one_pass[1]
    lines = [line.split(b",")[0] for line in (one_pass[3] or b"").splitlines()]
    assert lines == [b'{"line":32', b'{"line":43', b'{"line":302', b'{"line":335']


def test_a_refused_file_lists_both_halves_problems_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    source = _toggl(tmp_path / "t.csv", {5: "2024-13-01", 390: "yesterday"})
    one_pass, in_halves = _both_ways(monkeypatch, ["toggl", str(source)])
    assert forks == [1]
    assert in_halves == one_pass
    assert one_pass[0] == 2
    assert [line.split(":")[0] for line in one_pass[1].splitlines() if line.startswith("line")] == [
        "line 7",
        "line 392",
    ]
    assert one_pass[2] == []


def test_a_small_file_stays_in_one_process(tmp_path: Path, forks: list[int]) -> None:
    result = CliRunner().invoke(cli, ["import", "toggl", str(_toggl(tmp_path / "t.csv", {})), *EXPORTED])
    assert result.exit_code == 0, result.stderr
    assert forks == []
    assert RecordingEmitter.made == ["emitter"]  # connected before the file is read, as ever


def test_the_producer_is_made_after_the_fork_so_the_child_inherits_no_threads_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    monkeypatch.setattr(producers.halves, "PARALLEL_BYTES", 1)
    result = CliRunner().invoke(cli, ["import", "toggl", str(_toggl(tmp_path / "t.csv", {})), *EXPORTED])
    assert result.exit_code == 0, result.stderr
    assert RecordingEmitter.made == ["fork", "emitter"]


# --- where a file is cut ---------------------------------------------------------------------------


def test_the_cut_is_a_line_start_and_each_half_keeps_the_files_line_numbers(tmp_path: Path) -> None:
    source = tmp_path / "crlf.csv"
    source.write_bytes(b"\xef\xbb\xbfa,b\r\n" + b"".join(b"%d,x\r\n" % i for i in range(1, 100)))
    table = detect_table(source)
    offset, before = line_start_near(source, table) or (0, 0)
    whole = list(table_records(source, table))
    first = list(table_records(source, table, TablePart(end=offset)))
    second = list(table_records(source, table, TablePart(start=offset, lines_before=before)))
    assert source.read_bytes()[offset - 2 : offset] == b"\r\n"
    assert first + second[1:] == whole
    assert second[0] == whole[0]  # the header, read again
    assert second[1][0] == before + 1 and len(second) > 10


def test_a_quoted_field_across_the_middle_keeps_the_file_in_one_pass(tmp_path: Path) -> None:
    source = tmp_path / "quoted.csv"
    note = "\n".join(["a long note"] * 200)
    rows = [["User", "Email", "Start date", "Start time", "Duration", "Description"]]
    rows += [["Ann", "a@x", "2024-03-01", "09:00", "1:00:00", note if i == 5 else "n"] for i in range(10)]
    _write(source, rows)
    options = ReadOptions(exported_at=datetime(2024, 11, 1, tzinfo=UTC))
    assert line_start_near(source, detect_table(source)) is not None  # a line starts after the middle...
    assert inspect_export(source, options, "toggl", halves=True).halves is None  # ...but no record does


def test_an_encoding_with_two_byte_line_ends_is_not_cut(tmp_path: Path) -> None:
    source = tmp_path / "utf16.csv"
    source.write_text("User,Email\n" + "Ann,a@x\n" * 50, encoding="utf-16")
    assert line_start_near(source, detect_table(source)) is None


def test_what_fails_in_the_second_half_is_reported_and_nothing_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    """The child's error crosses the fork as it was raised: the file is refused with its problems."""
    import producers.toggl
    from producers.importing import RefusedExportError

    read_toggl = producers.toggl.read_toggl

    def failing_after_the_cut(path: Path, options: ReadOptions, mapper: Any) -> Any:
        if options.part is not None and options.part.start:
            problem = "line 301: (encoding): byte 0xff cannot be decoded as utf-8"
            raise RefusedExportError("the file cannot be read; nothing was published", problems=[problem])
        return read_toggl(path, options, mapper)

    monkeypatch.setattr(producers.toggl, "read_toggl", failing_after_the_cut)
    monkeypatch.setattr(producers.halves, "PARALLEL_BYTES", 1)
    result = CliRunner().invoke(cli, ["import", "toggl", str(_toggl(tmp_path / "t.csv", {})), *EXPORTED])
    assert forks == [1]
    assert result.exit_code == 2, result.stderr
    assert "line 301: (encoding): byte 0xff" in result.stderr
    assert "nothing was published" in result.stderr
    assert RecordingEmitter.published == []
