"""A worker caps glibc's malloc arenas before its C threads start (backbone/streams/native.py); where the C
library is not glibc there is no such cap and the call says so instead of failing."""

from __future__ import annotations

import platform

from backbone.streams.native import limit_malloc_arenas


def test_the_arena_cap_is_set_exactly_where_the_c_library_is_glibc() -> None:
    assert limit_malloc_arenas(2) is (platform.libc_ver()[0] == "glibc")
