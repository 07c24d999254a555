"""A fingerprint of everything the billing core emits over many random histories: to show that a change
meant only for speed leaves every output, id and stored ledger exactly as it was.

Draws `--examples` firms with the interleaving test's strategy (tests/unit/domain/test_domain_interleavings.py:
workers, projects, capped and amended contracts, revisions, decisions, deletions, yen and dinar amounts)
with a fixed seed, feeds each through `BillingPipeline` in a drawn order, and hashes every output event
(its type and JSON, ids included) and every ledger and entry state at the end (the changelog codecs'
bytes). The histories are drawn once and saved (`--histories`): run it before and after a change, with
the same file, and compare the two lines.

    .venv/bin/python benchmarks/core_outputs.py [--examples 400] [--histories FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import sys
import uuid
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "domain"))

import domain_builders  # noqa: E402
from test_domain_interleavings import firms, interleave, labels  # noqa: E402

from backbone.domain.models import Event  # noqa: E402
from backbone.domain.pipeline import BillingPipeline  # noqa: E402
from topology import state_codecs  # noqa: E402
from topology.books import ledger_key  # noqa: E402


class _SeededIds:
    """`uuid.uuid4` for the test builders, repeatable: their event ids are random otherwise."""

    def __init__(self) -> None:
        self.random = random.Random(0)

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.random.getrandbits(128), version=4)


_IDS = _SeededIds()
domain_builders.uuid = _IDS  # type: ignore[assignment]


def draw_histories(examples: int) -> list[list[Event]]:
    """`examples` histories (each the events of one firm in a drawn order), the same ones on every run of
    the same code: hypothesis's draws can shift with the code it runs beside, so histories are saved."""
    histories: list[list[Event]] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def draw(data: st.DataObject) -> None:
        _IDS.random.seed(len(histories))
        chains = data.draw(firms())
        histories.append(interleave(chains, data.draw(st.permutations(labels(chains)))))

    draw()
    return histories


def fingerprint(histories: list[list[Event]]) -> tuple[str, Counter[str]]:
    """SHA-256 of every output event (type and JSON) and of the final entry states and ledgers."""
    sha = hashlib.sha256()
    kinds: Counter[str] = Counter()
    for history in histories:
        pipeline = BillingPipeline(domain_builders.ROUTING)
        for event in history:
            for output in pipeline.handle(event):
                kinds[type(output).__name__ + ":" + str(getattr(output, "kind", ""))] += 1
                sha.update(type(output).__name__.encode() + output.model_dump_json().encode() + b"\n")
        for key in sorted(pipeline.entries):
            sha.update(state_codecs.ENTRY_STATE.encode(pipeline.entries[key]))
        for project_id in sorted(pipeline.books):
            for entry_id, ledger in sorted(pipeline.books[project_id].ledgers.items()):
                sha.update(ledger_key(project_id, entry_id).encode() + state_codecs.LEDGER.encode(ledger))
        kinds["histories"] += 1
    return sha.hexdigest(), kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument(
        "--histories", type=Path, default=Path("/tmp/core-outputs-histories.pickle"), help="drawn once, then reused"
    )
    args = parser.parse_args()
    if args.histories.exists():
        histories = pickle.loads(args.histories.read_bytes())
    else:
        histories = draw_histories(args.examples)
        args.histories.write_bytes(pickle.dumps(histories))
    digest, kinds = fingerprint(histories)
    print(f"core outputs: {digest} ({args.histories})")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
