"""How much native (C) memory a worker keeps: glibc's malloc arenas.

glibc gives a thread that allocates while the others hold the lock an arena of its own, up to eight per
core, each growing in 64 MiB heaps that are rarely given back. A worker's C threads allocate a lot:
librdkafka's broker threads fill fetch buffers and free the records the Python thread consumed, and
RocksDB's background threads flush and compact. In the 1,000,000-entry replay seven such arenas held
~450 MiB of the worker's ~970 MiB (docs/topology-performance.md, "Seventh session"). Two arenas
are what `MALLOC_ARENA_MAX=2` gives; it must be set before those threads start.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger(__name__)

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""

MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap the malloc arenas of this process (glibc only; elsewhere nothing changes); True when capped."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    capped = bool(mallopt(M_ARENA_MAX, arenas))
    if not capped:
        log.debug("malloc arenas not capped", arenas=arenas)
    return capped
