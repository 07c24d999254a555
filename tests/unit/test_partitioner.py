"""The runtime's murmur2 is Kafka's: the vectors below are Apache Kafka's own (UtilsTest.testMurmur2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _murmur2_byte_by_byte(data: bytes) -> int:
    """Kafka's Utils.murmur2 transcribed literally (each word assembled from its bytes)."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    for i in range(0, len(data) & ~3, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, remaining = len(data) & ~3, len(data) & 3
    if remaining == 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining >= 1:
        h = ((h ^ data[tail]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


@given(st.binary(max_size=600))
def test_the_word_at_a_time_hash_is_the_byte_by_byte_one(key: bytes) -> None:
    """Keys of every length, past the 255 bytes the precompiled unpackers cover."""
    assert murmur2(key) == _murmur2_byte_by_byte(key)
