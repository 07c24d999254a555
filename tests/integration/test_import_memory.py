"""`backbone import` streams: a large generated export is imported whole within a fixed memory bound.

A 32 MB Toggl export runs by default; the 1 GB one is marked `huge` (deselected by default:
`pytest -m huge tests/integration/test_import_memory.py`). The import validates the whole file before it
publishes (several passes over the file, never the file in memory), so the bound also proves that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from backbone.kafka.admin import apply_topics
from tests.support import run_backbone_measured

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
RSS_BOUND_MIB = 300
HEADER = b"Email,User,Project,Client,Description,Start date,Start time,End date,End time,Billable,Duration\n"


def toggl_row(index: int) -> bytes:
    day = 1 + index % 28
    hour = 8 + index % 9
    return (
        f"w{index % 50}@example.com,Worker {index % 50},Project {index % 40},Client {index % 7},"
        f"Entry {index},{day:02}.03.2024,{hour:02}:00,{day:02}.03.2024,{hour:02}:45,Yes,0:45:00\n"
    ).encode()


def _import_within_memory_bound(env: dict[str, str], tmp_path: Path, size_mib: int) -> None:
    source = tmp_path / "toggl_detailed.csv"
    rows = 0
    with source.open("wb", buffering=4 * MIB) as out:
        out.write(HEADER)
        while out.tell() < size_mib * MIB:
            out.write(toggl_row(rows))
            rows += 1
    run = run_backbone_measured(["import", "toggl", str(source)], env=env, cwd=tmp_path, timeout=3600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{rows} records read, {rows} events published, 0 rejected" in run.stderr, run.stderr[-2000:]
    assert run.total_peak_rss_mib < RSS_BOUND_MIB, (
        f"{size_mib} MiB export: peak RSS {run.peak_rss_mib:.0f} MiB, its child's {run.children_peak_rss_mib:.0f}"
    )


@pytest.fixture
def env(bootstrap: str, registry_url: str) -> dict[str, str]:
    apply_topics(AdminClient({"bootstrap.servers": bootstrap}))  # the catalog's topics, as `backbone up` makes them
    return {"BACKBONE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BACKBONE_SCHEMA_REGISTRY_URL": registry_url}


def test_import_of_a_32_mb_export_stays_within_the_memory_bound(env: dict[str, str], tmp_path: Path) -> None:
    _import_within_memory_bound(env, tmp_path, 32)


@pytest.mark.huge
@pytest.mark.timeout(7200)
def test_import_of_a_1_gb_export_stays_within_the_memory_bound(env: dict[str, str], tmp_path: Path) -> None:
    _import_within_memory_bound(env, tmp_path, 1024)
