"""Versioned plain-SQL migrations applied to one PostgreSQL schema, once each, under an advisory lock.

A migration directory holds files named `NNNN_what_it_does.sql` (`0001_init.sql`, `0002_add_index.sql`).
`apply_migrations` creates the schema when missing, records every applied version with its file's
checksum in `<schema>.schema_migrations`, and applies the missing versions in order, each in its own
transaction together with its record, so a failed migration leaves nothing half-applied. The files name
no schema: they run with `search_path` set to the target schema, so one directory serves any number of
schemas (the ERP simulator's named instances, a sink per environment). A session-level advisory lock
keyed by the schema name serialises concurrent runners (two processes starting at once); the second
finds the work done. An applied file whose content changed since is refused: write a new version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from backbone.errors import BackboneError, ServiceUnavailableError

_FILE_NAME = re.compile(r"^(?P<version>\d{4,})_(?P<name>[a-z0-9_]+)\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LEDGER = "schema_migrations"


class MigrationError(BackboneError):
    """The migration directory or the database's migration record is inconsistent."""

    exit_code = 78


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """The directory's migrations in version order; other files are ignored, a malformed `.sql` name is not."""
    if not directory.is_dir():
        raise MigrationError(f"migration directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name} is not a migration name", hint="name files NNNN_what_it_does.sql (lowercase, digits, _)"
            )
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"version {version} appears twice: {found[version].path.name} and {path.name}")
        found[version] = Migration(version, match["name"], path)
    return [found[v] for v in sorted(found)]


def check_schema_name(schema: str) -> str:
    """`schema` when it is a plain lowercase PostgreSQL identifier (it also ends up in `search_path`)."""
    if not _SCHEMA_NAME.match(schema):
        raise MigrationError(f"{schema!r} is not a usable schema name", hint="use lowercase letters, digits and _")
    return schema


def lock_key(schema: str) -> int:
    """The advisory lock of `schema`'s migrations: a signed 64-bit number derived from its name."""
    digest = hashlib.sha256(f"backbone.migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def apply_migrations(conninfo: str, schema: str, directory: Path) -> list[int]:
    """Bring `schema` up to the newest version in `directory`; returns the versions applied now."""
    check_schema_name(schema)
    migrations = discover(directory)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return migrate(conn, schema, migrations)
    except psycopg.OperationalError as error:
        raise ServiceUnavailableError(
            f"cannot migrate schema {schema}: PostgreSQL is not reachable ({error})",
            hint="start it with `backbone up` or set BACKBONE_POSTGRES_DSN",
        ) from error


def migrate(conn: psycopg.Connection, schema: str, migrations: list[Migration]) -> list[int]:
    """Apply the missing `migrations` on an autocommit connection; see the module docstring."""
    check_schema_name(schema)
    conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(schema),))
    try:
        _create_ledger(conn, schema)
        applied = _applied(conn, schema)
        _refuse_edited(applied, migrations, schema)
        pending = [m for m in migrations if m.version not in applied]
        for migration in pending:
            _apply_one(conn, schema, migration)
        return [m.version for m in pending]
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(schema),))


def _create_ledger(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(schema), sql.Identifier(LEDGER))
    )


def _applied(conn: psycopg.Connection, schema: str) -> dict[int, str]:
    rows = conn.execute(
        sql.SQL("SELECT version, checksum FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(LEDGER))
    ).fetchall()
    return {int(version): str(checksum) for version, checksum in rows}


def _refuse_edited(applied: dict[int, str], migrations: list[Migration], schema: str) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.path.name} changed after it was applied to schema {schema}",
                hint="never edit an applied migration: add a new version that makes the change",
            )


def _apply_one(conn: psycopg.Connection, schema: str, migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(migration.text.encode())  # several statements: sent as one simple query
            conn.execute(
                sql.SQL("INSERT INTO {}.{} (version, name, checksum) VALUES (%s, %s, %s)").format(
                    sql.Identifier(schema), sql.Identifier(LEDGER)
                ),
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.errors.Error as error:
        if isinstance(error, psycopg.OperationalError):
            raise
        raise MigrationError(
            f"migration {migration.path.name} failed on schema {schema}: {error}",
            hint="fix the SQL file (nothing of it was applied) and start again",
        ) from error
