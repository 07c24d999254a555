"""Kafka's default key partitioner (murmur2, as the Java clients and librdkafka's `murmur2_random` use).

A processor that must find a key's partition itself (to keep an entry's state in one place whatever
partitioner its producers used, or to send a command to a project's partition) computes it the way
every Java client and backbone's own producers do, so the answer is the same everywhere.
"""

from __future__ import annotations

import functools
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{count}I").unpack_from for count in range(64)]
"""Unpackers of 0..63 little-endian 4-byte words: keys up to 255 bytes (longer ones build theirs)."""


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of `data`, bit for bit as `org.apache.kafka.common.utils.Utils.murmur2`.

    The 4-byte words are unpacked at once (`struct`) rather than assembled byte by byte: 36% less time
    for an 8-byte key, 40% for a 36-byte one (docs/benchmarks.md, "Eighth session")."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    for k in _WORDS[words](data) if words < len(_WORDS) else struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    remaining = length & 3
    if remaining:
        tail = words << 2
        if remaining == 3:
            h ^= data[tail + 2] << 16
        if remaining >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


@functools.lru_cache(maxsize=65_536)
def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
