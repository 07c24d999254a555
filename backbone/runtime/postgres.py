"""A local PostgreSQL cluster in `<data>/postgres`, run with the server binaries Debian installs.

PostgreSQL refuses to run as root, so when backbone runs as root the cluster belongs to the
`postgres` system user and is started through `runuser`. The cluster listens on 127.0.0.1 only,
trusts local connections (it is a development and test database; production sets
BACKBONE_POSTGRES_DSN), and gets a `backbone` role and database on first start.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

from backbone.errors import ConfigurationError, ServiceUnavailableError
from backbone.runtime.processes import ServiceProcess, require_free_port
from backbone.settings import PostgresSettings, RuntimeSettings

INSTALL_HINT = "install the server: apt-get update && apt-get install -y postgresql (or set BACKBONE_POSTGRES_DSN)"

SERVER_SETTINGS = {
    "fsync": "on",
    "max_connections": "100",
    "shared_buffers": "128MB",
    # Checkpoints spaced by WAL: at the default 1 GB one started every ~540 MB under the read model's sink
    # (less than a minute of it), and the first change to each page after a checkpoint writes the whole
    # page to the WAL: 1.8-2.2 kB per candidate right after one against 0.67 kB between them (the CPU per
    # row was the same). The price: recovery after a crash may replay up to this much WAL (not measured).
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
}
"""Server settings of the local cluster (docs/benchmarks.md, "The PostgreSQL sink"). fsync and
synchronous_commit stay on: a committed batch of the read model, with its offsets, survives a crash.
wal_compression was measured and left off: lz4 cut the WAL after a checkpoint by a fifth for 2-10 µs more
of the backend's CPU per row, and CPU is what this machine runs out of."""


def find_bin_dir(postgres: PostgresSettings) -> Path | None:
    """Where initdb and pg_ctl live: the setting, PATH, or Debian's versioned directory."""
    if postgres.bin_dir is not None:
        return postgres.bin_dir
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    return Path(versions[-1]).parent if versions else None


def _version_key(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class LocalPostgres:
    """The cluster's files, its postmaster process, and readiness checks."""

    def __init__(self, runtime: RuntimeSettings, postgres: PostgresSettings) -> None:
        self.postgres = postgres
        self.home = runtime.data_dir.resolve() / "postgres"
        self.data = _cluster_location(self.home)
        self.process = ServiceProcess("postgres", self.home, marker=str(self.data))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.postgres.port}"

    def start(self) -> bool:
        """Start the cluster unless it runs (initialising it once); True when started now."""
        if self.process.pid() is not None:
            self.wait_ready(timeout=30)
            return False
        require_free_port(self.postgres.port, "PostgreSQL", "BACKBONE_POSTGRES_PORT")
        bin_dir = find_bin_dir(self.postgres)
        if bin_dir is None:
            raise ConfigurationError("PostgreSQL server binaries (initdb, pg_ctl) were not found", hint=INSTALL_HINT)
        self.home.mkdir(parents=True, exist_ok=True)
        self._init_once(bin_dir)
        self.process.start(
            _as_owner(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.postgres.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.data.parent}",
                    *(arg for name, value in SERVER_SETTINGS.items() for arg in ("-c", f"{name}={value}")),
                ]
            )
        )
        self.wait_ready(timeout=60)
        self._create_database()
        return True

    def _init_once(self, bin_dir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.data.parent.mkdir(parents=True, exist_ok=True)
        _give_to_owner(self.home)
        _give_to_owner(self.data.parent)
        result = subprocess.run(
            _as_owner(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceUnavailableError(f"initdb failed:\n{result.stdout}{result.stderr}", hint=INSTALL_HINT)

    def _admin_conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.postgres.port} dbname={dbname} user=postgres connect_timeout=2"

    def _create_database(self) -> None:
        with psycopg.connect(self._admin_conninfo(), autocommit=True) as conn:
            user, database = self.postgres.user, self.postgres.database
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone():
                conn.execute(f'CREATE ROLE "{user}" LOGIN')
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')

    def wait_ready(self, *, timeout: float) -> None:
        """Block until the cluster accepts a query; on failure say why and what to do."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.pid() is None:
                raise ServiceUnavailableError(
                    f"PostgreSQL exited during start; last lines of {self.process.log_file}:\n"
                    f"{self.process.log_tail()}",
                    hint=f"is port {self.postgres.port} taken? Set BACKBONE_POSTGRES_PORT",
                )
            if answers(self._admin_conninfo()):
                return
            time.sleep(0.1)
        raise ServiceUnavailableError(
            f"PostgreSQL did not accept queries within {timeout:.0f}s:\n{self.process.log_tail()}",
            hint="run `backbone down` and `backbone up` again",
        )

    def stop(self) -> bool:
        return self.process.stop(timeout=30)


def answers(conninfo: str) -> bool:
    """True when the database accepts `SELECT 1`."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _cluster_location(home: Path) -> Path:
    """Where the cluster's files live: `<home>/data`, unless the postgres user cannot reach it.

    As root the cluster belongs to the postgres user, who cannot enter private directories such as
    /root or pytest's tmp dirs. Then the files go to a directory of its own, named after the data
    dir, and `<home>/LOCATION` records where, so `status`/`down` and the next `up` find them.
    """
    pointer = home / "LOCATION"
    if pointer.exists():
        return Path(pointer.read_text().strip())
    if not _running_as_root() or _postgres_can_reach(home.parent):
        return home / "data"
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:12]
    location = Path("/var/lib/postgresql/backbone") / digest / "data"
    home.mkdir(parents=True, exist_ok=True)
    pointer.write_text(f"{location}\n")
    return location


def _postgres_can_reach(directory: Path) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(_as_owner(["test", "-x", str(directory)]), capture_output=True, check=False)
    return probe.returncode == 0


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _as_owner(argv: list[str]) -> list[str]:
    """PostgreSQL will not run as root: run it as the `postgres` system user then."""
    # setpriv execs (unlike runuser), so the recorded pid is the postmaster itself.
    owner = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    return [*owner, *argv] if _running_as_root() else argv


def _give_to_owner(path: Path) -> None:
    if _running_as_root():
        shutil.chown(path, user="postgres", group="postgres")
