"""The sink's binary numeric dumper writes exactly the bytes psycopg's own writes, for every kind of decimal
(scales, signs, zeros, specials, integers), whether the value is new to its COPY or repeated. The COPY that
uses it against a real database is tests/integration/test_sink.py."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.pq import Format

from backbone.streams.sink import RepeatedNumericDumper

NUMERIC = psycopg.postgres.types["numeric"].oid
VALUES = [
    Decimal("150.00"), Decimal("150.0"), Decimal("150"), Decimal("1.5E+2"), Decimal("0"), Decimal("0.0000"),
    Decimal("-0"), Decimal("-0.00"), Decimal("-37.5000"), Decimal("0.0001"), Decimal("1E-30"),
    Decimal("123456789012345678901234567890.123456789"), Decimal("9999.9999"), Decimal("10000"),
    Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), 0, 7, -2**63, 10**40,
]  # fmt: skip


def psycopg_bytes(value: object) -> bytes:
    dumper = psycopg.adapters.get_dumper_by_oid(NUMERIC, Format.BINARY)(type(value))
    return bytes(dumper.dump(value))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v) for v in VALUES])
def test_a_value_is_written_as_psycopg_writes_it_first_time_and_repeated(value: object) -> None:
    dumper = RepeatedNumericDumper(type(value))
    assert bytes(dumper.dump(value)) == psycopg_bytes(value)
    assert bytes(dumper.dump(value)) == psycopg_bytes(value)


def test_equal_decimals_of_different_scales_keep_their_own_scale() -> None:
    # 150.00 == 150.0, but the stored scale (and what `SELECT` shows) differs: the memo must not merge them
    dumper = RepeatedNumericDumper(Decimal)
    for value in VALUES + list(reversed(VALUES)):
        assert bytes(dumper.dump(value)) == psycopg_bytes(value), value


def test_the_copy_of_a_sink_connection_finds_it_by_the_column_type() -> None:
    adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
    adapters.register_dumper(None, RepeatedNumericDumper)
    assert adapters.get_dumper_by_oid(NUMERIC, Format.BINARY) is RepeatedNumericDumper
    assert (
        adapters.get_dumper(Decimal, psycopg.adapt.PyFormat.AUTO) is not RepeatedNumericDumper
    )  # parameters as before


def test_a_decimal_met_again_as_the_same_object_keeps_its_bytes_and_equal_ones_keep_their_own_scale() -> None:
    # the sink's row readers hand every record the same object for the same decimal: found by identity,
    # which must never give an equal decimal of another scale (or an int) the shared one's bytes
    dumper = RepeatedNumericDumper(Decimal)
    shared = Decimal("150.0000")
    for value in [shared, Decimal("150.00"), shared, 150, Decimal("150"), shared, Decimal("1.5E+2"), shared]:
        assert bytes(dumper.dump(value)) == psycopg_bytes(value), value
