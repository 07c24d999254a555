"""Worker slots: each live worker on a host holds its own, so two never share a transactional id."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbone.streams.errors import SlotTakenError
from backbone.streams.loop import SlotLock


def test_workers_started_without_a_slot_take_the_first_free_ones(tmp_path: Path) -> None:
    first = SlotLock(tmp_path, "billing", "host-a", None)
    second = SlotLock(tmp_path, "billing", "host-a", None)
    assert (first.slot.slot, second.slot.slot) == (0, 1)
    assert first.slot.transactional_id == "billing-host-a-0"
    assert second.slot.transactional_id == "billing-host-a-1"


def test_a_slot_held_by_a_live_worker_is_refused_with_what_to_do(tmp_path: Path) -> None:
    held = SlotLock(tmp_path, "billing", "host-a", 3)
    assert held.slot.slot == 3
    with pytest.raises(SlotTakenError) as refused:
        SlotLock(tmp_path, "billing", "host-a", 3)
    assert "slot 3 of billing" in str(refused.value)
    assert "--slot" in str(refused.value)


def test_slots_of_other_instances_and_apps_do_not_collide(tmp_path: Path) -> None:
    a = SlotLock(tmp_path, "billing", "host-a", 0)
    b = SlotLock(tmp_path, "billing", "host-b", 0)
    c = SlotLock(tmp_path, "delivery", "host-a", 0)
    assert len({a.slot.transactional_id, b.slot.transactional_id, c.slot.transactional_id}) == 3
