"""The migration runner's file rules (backbone/migrations.py): what counts as a migration and in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbone.migrations import MigrationError, check_schema_name, discover, lock_key
from consumers.simulators import billing, erp


def _files(directory: Path, *names: str) -> Path:
    for name in names:
        (directory / name).write_text("SELECT 1;")
    return directory


def test_migrations_are_ordered_by_version_number_not_by_name(tmp_path: Path) -> None:
    found = discover(_files(tmp_path, "0010_ten.sql", "0002_two.sql", "0001_init.sql", "README.md"))
    assert [(m.version, m.name) for m in found] == [(1, "init"), (2, "two"), (10, "ten")]


@pytest.mark.parametrize(
    ("names", "complaint"),
    [
        pytest.param(("1_init.sql",), "not a migration name", id="too-few-digits"),
        pytest.param(("0001-init.sql",), "not a migration name", id="dash"),
        pytest.param(("0001_Init.sql",), "not a migration name", id="upper-case"),
        pytest.param(("0001_init.sql", "00001_again.sql"), "appears twice", id="same-version-twice"),
    ],
)
def test_malformed_directories_are_refused(tmp_path: Path, names: tuple[str, ...], complaint: str) -> None:
    with pytest.raises(MigrationError, match=complaint):
        discover(_files(tmp_path, *names))


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nowhere")


@pytest.mark.parametrize("schema", ["Erp", "erp-sim", "1erp", "erp; drop", "x" * 64, ""])
def test_schema_names_are_plain_lowercase_identifiers(schema: str) -> None:
    with pytest.raises(MigrationError):
        check_schema_name(schema)


def test_each_schema_has_its_own_lock() -> None:
    assert lock_key("erp_sim_a") == lock_key("erp_sim_a") != lock_key("erp_sim_b")
    assert -(2**63) <= lock_key("erp_sim_a") < 2**63


def test_the_simulators_ship_their_first_migration() -> None:
    assert [m.version for m in discover(erp.MIGRATIONS)] == [1]
    assert [m.version for m in discover(billing.MIGRATIONS)] == [1]
