"""A worker caps glibc's malloc arenas before its C threads start (backbone/streams/native.py)."""

from __future__ import annotations

import platform

import pytest

from backbone.streams.native import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the cap is glibc's mallopt; elsewhere it is a no-op")
def test_the_arena_cap_is_accepted_by_glibc() -> None:
    assert limit_malloc_arenas(2) is True
