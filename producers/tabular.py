"""Reading tabular exports as they arrive: any encoding, any of three separators, or an .xlsx workbook.

A firm's export may be UTF-8 with or without a byte-order mark, UTF-16 (Excel's "Unicode text"), or a
legacy code page such as cp1252; it may separate fields with commas, semicolons (European Excel) or
tabs; it may be a workbook. `detect_table` works out which, streaming the file once in binary: a BOM
decides; a file that decodes as UTF-8 is UTF-8; a file with no valid UTF-8 multi-byte sequence at all
(or with NUL bytes: UTF-16 without a BOM) is legacy and charset-normalizer names its encoding from the
first 64 KiB; a UTF-8 file with a stray byte stays UTF-8, so the byte is reported with its line number
instead of being read as mojibake. The separator is the one that
splits the header into the most columns.

`table_records` streams `(line, values)` pairs (line 1 is the header; a workbook's line is its row
number) with constant memory, raising `UndecodableError` at the first byte the encoding cannot read.
Given a `TablePart`, it streams the header and then only the records of a byte range, with the line
numbers they have in the whole file: a large export is validated in two processes, each reading half
(`producers.halves`), and `line_start_near` finds where a text export can be cut.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

CHUNK = 64 * 1024
DETECTION_SAMPLE = 64 * 1024
DELIMITERS = (",", ";", "\t")
LINE_END = re.compile(r"\r\n|\r|\n")
_OTHER_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""What `str.splitlines` also ends a line at, which `LINE_END` does not."""
XLSX_SUFFIXES = {".xlsx", ".xlsm"}
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls and other pre-2007 Office files
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Single-byte Western code pages charset-normalizer cannot tell apart on a few names; Windows' own wins.
PREFERRED_LEGACY = "cp1252"


class ExportReadError(ValueError):
    """The file cannot be read as a table at all; `line` is where, when known."""

    def __init__(self, reason: str, *, line: int | None = None, field: str = "(file)") -> None:
        super().__init__(reason)
        self.line = line
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}" if self.line else self.reason


class UndecodableError(ExportReadError):
    """A byte the file's encoding cannot decode."""


@dataclass(frozen=True)
class TableFormat:
    """How an export's bytes become rows: a workbook, or text in `encoding` after `bom` bytes."""

    kind: Literal["csv", "xlsx"] = "csv"
    encoding: str = "utf-8"
    bom: int = 0
    delimiter: str = ","
    detected_encoding: bool = False

    def describe(self) -> str:
        if self.kind == "xlsx":
            return "an .xlsx workbook (first sheet)"
        separator = {",": "comma", ";": "semicolon", "\t": "tab"}[self.delimiter]
        how = " (detected; pass --encoding NAME if names look wrong)" if self.detected_encoding else ""
        return f"{self.encoding}{how}, {separator}-separated"


def detect_table(path: Path, encoding: str | None = None) -> TableFormat:
    """The format of the export at `path`; `encoding` (a Python codec name) overrides detection."""
    with open(path, "rb") as handle:
        head = handle.read(DETECTION_SAMPLE)
    if path.suffix.lower() in XLSX_SUFFIXES or head.startswith(ZIP_MAGIC):
        return TableFormat(kind="xlsx")
    if head.startswith(OLE_MAGIC):
        raise ExportReadError("is an old binary Excel workbook (.xls); save it as .xlsx or CSV and import that")
    codec, bom, detected = _encoding(path, head, encoding)
    return TableFormat(encoding=codec, bom=bom, delimiter=_delimiter(head[bom:], codec), detected_encoding=detected)


def _encoding(path: Path, head: bytes, given: str | None) -> tuple[str, int, bool]:
    bom_codec, bom = next(((name, len(mark)) for mark, name in BOMS if head.startswith(mark)), (None, 0))
    if given is not None:
        codec = _codec_name(given)
        compatible = bom_codec is not None and codecs.lookup(bom_codec).name == codecs.lookup(codec).name
        return (codec, bom if compatible else 0, False)
    if bom_codec is not None:
        return bom_codec, bom, False
    if b"\x00" not in head and _is_utf8(path):  # NULs without a BOM: UTF-16/32, left to detection
        return "utf-8", 0, False
    return _legacy_encoding(head), 0, True


def _codec_name(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        raise ExportReadError(
            f"--encoding {name!r} is not an encoding Python knows (try utf-8, cp1252, latin-1)"
        ) from None
    return name


def _is_utf8(path: Path) -> bool:
    """True unless the file has invalid UTF-8 and no valid multi-byte UTF-8 sequence (a legacy file)."""
    valid_multibyte = invalid = False
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.isascii():
                continue
            try:
                raw.decode("utf-8")
                valid_multibyte = True
            except UnicodeDecodeError:
                invalid = True
            if valid_multibyte:
                return True  # UTF-8 (a stray byte is reported with its line when the file is read)
    return not invalid


def _legacy_encoding(head: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is None:
        raise ExportReadError("cannot tell the file's encoding; pass --encoding NAME (e.g. cp1252 or latin-1)")
    if PREFERRED_LEGACY in best.could_be_from_charset:
        return PREFERRED_LEGACY
    return str(best.encoding)


def _delimiter(head: bytes, codec: str) -> str:
    text = head.decode(codec, errors="replace")
    header = LINE_END.split(text, maxsplit=1)[0]
    counts = {d: len(next(csv.reader([header], delimiter=d), [])) for d in DELIMITERS}
    return max(DELIMITERS, key=lambda d: (counts[d], d == ","))


# --- streaming records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TablePart:
    """The records one of two processes reads of a CSV export: the header, then those from byte `start`
    (0: the first after the header) up to byte `end` (None: the file's end); `lines_before` counts the
    lines before `start`, so each record keeps the line number it has in the whole file."""

    start: int = 0
    end: int | None = None
    lines_before: int = 0


def table_records(path: Path, table: TableFormat, part: TablePart | None = None) -> Iterator[tuple[int, list[str]]]:
    """`(line, values)` for every record of the export (of `part` of it), the header first."""
    if table.kind == "xlsx":
        if part is not None:
            raise ValueError("a workbook is read whole, not in parts")
        yield from _xlsx_records(path)
        return
    if part is None or not part.start:
        yield from _csv_records(path, table, table.bom, part.end if part else None, 0)
        return
    with contextlib.closing(_csv_records(path, table, table.bom, None, 0)) as whole:
        header = next(whole, None)
    if header is not None:
        yield header
        yield from _csv_records(path, table, part.start, part.end, part.lines_before)


def _csv_records(
    path: Path, table: TableFormat, start: int, end: int | None, lines_before: int
) -> Generator[tuple[int, list[str]], None, None]:
    with open(path, "rb") as handle:
        handle.seek(start)
        source: _Readable = handle if end is None else _Bounded(handle, end - start)
        lines = decoded_lines(source, table.encoding, first_line=lines_before + 1)
        reader = csv.reader(lines, delimiter=table.delimiter, strict=False)
        first = lines_before + 1
        try:
            for record in reader:
                yield first, record
                first = lines_before + reader.line_num + 1
        except csv.Error as error:
            raise ExportReadError(f"is not readable CSV: {error}", line=first, field="(row)") from None


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Bounded:
    """The next `size` bytes of a binary file (what follows is another process's to read)."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle, self._left = handle, size

    def read(self, size: int) -> bytes:
        piece = self._handle.read(min(size, self._left)) if self._left > 0 else b""
        self._left -= len(piece)
        return piece


SPLITTABLE_ENCODINGS = frozenset({"utf-8", "ascii", "cp1252", "iso8859-1", "iso8859-15"})
"""Encodings in which the bytes 0x0A and 0x0D are only ever line ends (a cut at one is a line start)."""


def line_start_near(path: Path, table: TableFormat, fraction: float = 0.5) -> tuple[int, int] | None:
    """(offset, lines before it): the start of the first line after `fraction` of a text export's bytes,
    and how many lines (as `decoded_lines` counts them) precede it. None for a workbook, an encoding whose
    line ends are not single bytes, or a file with no line feed after that point."""
    if table.kind != "csv" or codecs.lookup(table.encoding).name not in SPLITTABLE_ENCODINGS:
        return None
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(table.bom, int(size * fraction)))
        while (piece := handle.read(CHUNK)) and b"\n" not in piece:
            pass
        if not piece:
            return None
        offset = handle.tell() - len(piece) + piece.index(b"\n") + 1
        if offset >= size:
            return None
        handle.seek(table.bom)
        return offset, _line_ends_before(_Bounded(handle, offset - table.bom))


def _line_ends_before(source: _Readable) -> int:
    """Line ends (`\\r\\n`, `\\r`, `\\n`) in `source`, a pair split between two chunks counted once."""
    ends, last = 0, b""
    while chunk := source.read(CHUNK):
        ends += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
        if last == b"\r" and chunk[:1] == b"\n":
            ends -= 1
        last = chunk[-1:]
    return ends


def decoded_lines(handle: _Readable, encoding: str, first_line: int = 1) -> Iterator[str]:
    """The text lines (ends kept) of a binary stream, decoding incrementally: constant memory.

    Lines end with `\r\n`, `\n` or a lone `\r` (Excel for Mac's "CSV (Macintosh)"). An undecodable
    byte raises `UndecodableError` naming its line, counted from `first_line` (the stream's first).
    """
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    pending, line = "", first_line
    while True:
        chunk = handle.read(CHUNK)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            raise _undecodable(error, encoding, line + _line_ends(pending)) from None
        complete, pending = _split_lines(pending + text, final=not chunk)
        line += len(complete)
        yield from complete
        if not chunk:
            break
    if pending:
        yield pending


def _split_lines(text: str, *, final: bool) -> tuple[list[str], str]:
    """The complete lines of `text` and the rest, which waits for the next chunk."""
    if not _OTHER_BREAKS.search(text):  # then `splitlines` ends lines where `LINE_END` does, in C
        lines = text.splitlines(keepends=True)
        last = lines[-1] if lines else "\n"
        # an unended line waits, and so does one ended by "\r": the "\n" of a "\r\n" may be in the next chunk
        waits = not last.endswith(("\n", "\r")) or (last.endswith("\r") and not final)
        return (lines[:-1], last) if waits else (lines, "")
    lines, start = [], 0
    for end in LINE_END.finditer(text):
        if end.group() == "\r" and end.end() == len(text) and not final:
            break  # the "\n" of a "\r\n" may be in the next chunk
        lines.append(text[start : end.end()])
        start = end.end()
    return lines, text[start:]


def _line_ends(text: str) -> int:
    return len(LINE_END.findall(text))


def _undecodable(error: UnicodeDecodeError, encoding: str, line: int) -> UndecodableError:
    before = error.object[: error.start]
    with contextlib.suppress(UnicodeDecodeError):  # the line counted so far is then close enough
        line += _line_ends(before.decode(encoding))
    byte = error.object[error.start : error.start + 1].hex()
    return UndecodableError(
        f"byte 0x{byte} cannot be decoded as {encoding}; nothing was imported. "
        f"Pass --encoding NAME with the export's encoding (e.g. cp1252), or fix the byte",
        line=line,
        field="(encoding)",
    )


def _xlsx_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises zipfile, KeyError and its own errors for bad files
        raise ExportReadError(f"cannot be read as an .xlsx workbook: {error}") from None
    try:
        sheet = workbook.worksheets[0]
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, [cell_text(value) for value in row]
    finally:
        workbook.close()


def cell_text(value: object) -> str:
    """A workbook cell as the text a CSV export would hold (numbers exact, dates ISO)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, float):
        # Through the shortest repr, never binary arithmetic: 1.35 stays 1.35.
        return format(Decimal(repr(value)), "f")
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return str(value)
