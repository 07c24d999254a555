"""The runtime's murmur2 is Kafka's: the vectors below are Apache Kafka's own (UtilsTest.testMurmur2)."""

from __future__ import annotations

import pytest

from backbone.streams.partitioner import murmur2, murmur2_partition

JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", list(JAVA_VECTORS), ids=[k.decode()[:12] for k in JAVA_VECTORS])
def test_murmur2_equals_the_java_clients_hash(key: bytes) -> None:
    assert murmur2(key) == JAVA_VECTORS[key] & 0xFFFFFFFF


def test_the_partition_is_the_positive_hash_modulo_the_partition_count() -> None:
    assert murmur2_partition(b"foobar", 6) == (JAVA_VECTORS[b"foobar"] & 0x7FFFFFFF) % 6
    assert {murmur2_partition(f"E-{i}".encode(), 6) for i in range(200)} == set(range(6))
