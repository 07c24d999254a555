"""The audit log of writes: one JSON line per attempt to change the registry, allowed or not.

Each line says who (`user`, `role`; `anonymous` without credentials), what (`method`, `path`,
`subject`, and the answer: schema id, versions, config), when (`at`, UTC), the `result` (`ok`,
`unauthenticated`, `denied`, `refused` for a 4xx of the registry's rules, `failed` for 5xx) with the
HTTP `status` and Confluent `error_code`, which `instance` answered and, for a write a follower
forwarded, `via` (the follower). A write is recorded once: by the leader that carried it out, or by the
instance that refused it. The file is appended to (O_APPEND, one write per line), so instances on one
host may share it.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter


def result_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthenticated", 403: "denied"}.get(status, "refused" if status < 500 else "failed")


def subject_of(path: str) -> str | None:
    """The subject a path names (`/subjects/{s}/...`, `/config/{s}`, `/compatibility/subjects/{s}/...`)."""
    parts = path.strip("/").split("/")
    if parts[0] == "compatibility":
        parts = parts[1:]
    if len(parts) >= 2 and parts[0] in ("subjects", "config", "mode"):
        return unquote(parts[1])
    return None


class AuditLog:
    """Appends audit lines to a file (None: only counted) and counts them for Prometheus."""

    def __init__(self, path: Path | None, instance: str, metrics: CollectorRegistry) -> None:
        self._instance = instance
        self._lock = threading.Lock()
        self._file: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._count = Counter(
            "registry_audited_writes", "Write attempts by action and result.", ["method", "result"], registry=metrics
        )

    def record(self, **entry: Any) -> None:
        status = int(entry["status"])
        line = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "instance": self._instance,
            "result": result_of(status),
            "subject": subject_of(str(entry["path"])),
            **entry,
        }
        self._count.labels(entry["method"], line["result"]).inc()
        if self._file is not None:
            data = (json.dumps(line, default=str) + "\n").encode()
            with self._lock:
                os.write(self._file, data)

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
