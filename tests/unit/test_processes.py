"""Background services: pid tracking that never touches a process backbone did not start."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from backbone.errors import ServiceUnavailableError
from backbone.runtime.processes import ServiceProcess, require_free_port
from tests.support import wait_until


def test_a_port_held_by_another_process_is_refused_with_the_setting_to_change() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServiceUnavailableError, match=f"port {port} is already in use") as error:
            require_free_port(port, "the schema registry", "BACKBONE_SCHEMA_REGISTRY_PORT")
    assert "BACKBONE_SCHEMA_REGISTRY_PORT" in str(error.value)


def test_a_started_service_is_tracked_and_stopped(tmp_path: Path) -> None:
    service = ServiceProcess("probe", tmp_path, marker="probe-marker")
    pid = service.start([sys.executable, "-c", "import time; time.sleep(60)", "probe-marker"])
    assert service.pid() == pid
    assert service.stop(timeout=5)
    assert service.pid() is None and not service.pid_file.exists()


def test_a_recycled_pid_is_not_mistaken_for_the_service(tmp_path: Path) -> None:
    other = ServiceProcess("other", tmp_path, marker="other-marker")
    pid = other.start([sys.executable, "-c", "import time; time.sleep(60)", "other-marker"])
    wait_until(lambda: b"other-marker" in Path(f"/proc/{pid}/cmdline").read_bytes(), timeout=10)
    try:
        impostor = ServiceProcess("probe", tmp_path, marker="probe-marker")
        impostor.pid_file.write_text(f"{pid}\n")
        assert impostor.pid() is None
        assert impostor.stop() is False  # and the other process was left alone
        assert other.pid() == pid
    finally:
        other.stop(timeout=5)


def test_stopping_a_service_that_does_not_run_is_harmless(tmp_path: Path) -> None:
    assert ServiceProcess("never", tmp_path, marker="never").stop() is False
