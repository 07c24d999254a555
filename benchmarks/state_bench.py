"""The state stores' own cost per record: codecs, a disk store's flush, reads back, and the cache's trim.

Takes the topology's real states: the changelog records `stages_bench`'s handlers write for `--entries`
entries (an entry state before and after its approval, a ledger), decoded again. Then, each the best
of `--repeats` passes, CPU µs per record:
  encode / decode     `EntryStateCodec`, `LedgerCodec` over every record of their store;
  flush               a `DiskStore` partition's `StateStores.flush` of `--batch` states put since the
                      last one (codec, disk and hand-off to a no-op `produce`), and its trim;
  get (hit)           a key flushed to disk and let go of by the cache: RocksDB's read and the decode;
  get (miss)          a key the disk never held.
It shows what a change to `backbone/streams/state.py` or `topology/state_codecs.py` buys before the
whole handlers' noise (`stages_bench.py`) or a worker's (`topology_bench.py`) hides it.

    PYTHONPATH=<tree> .venv/bin/python benchmarks/state_bench.py [--entries 5000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages_bench import run

from backbone.streams.state import StateStores, StoreSpec
from topology.state_codecs import ENTRY_STATE, LEDGER


def best(repeats: int, count: int, work: Callable[[], Any], before: Callable[[], Any] = lambda: None) -> float:
    """Best CPU µs per record of `repeats` passes of `work` over `count` records (`before` untimed)."""
    times = []
    for _ in range(repeats):
        before()
        began = time.process_time()
        work()
        times.append(time.process_time() - began)
    return min(times) / count * 1e6


def each(call: Callable[[Any], Any], values: list[Any]) -> None:
    """`call` on every value, each result let go of at once (kept, orjson's fresh buffers cost more)."""
    for value in values:
        call(value)


def records(entries: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """The changelog records (key, value) the handlers wrote for `entries` entries, by store."""
    _, produced = run(200, 200, entries, commit_every=100, on_disk=False, in_place=True)
    found: dict[str, list[tuple[bytes, bytes]]] = {"entries": [], "ledgers": []}
    for record in produced:
        for store in found:
            if record.topic.endswith(f"-{store}-changelog") and record.value is not None and record.key is not None:
                found[store].append((record.key, record.value))
    return found


def codec_figures(found: dict[str, list[tuple[bytes, bytes]]], repeats: int) -> dict[str, float]:
    figures = {}
    for name, codec in (("entries", ENTRY_STATE), ("ledgers", LEDGER)):
        raw = [value for _, value in found[name]]
        values = [codec.decode(value) for value in raw]
        figures[f"{name} encode"] = best(repeats, len(values), lambda c=codec, v=values: each(c.encode, v))
        figures[f"{name} decode"] = best(repeats, len(raw), lambda c=codec, r=raw: each(c.decode, r))
    return figures


def store_figures(found: dict[str, list[tuple[bytes, bytes]]], repeats: int, batch: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="state-bench-") as directory:
        for name, codec in (("entries", ENTRY_STATE), ("ledgers", LEDGER)):
            spec = StoreSpec(name, f"{name}-changelog", codec, on_disk=True)
            stores = StateStores([spec], Path(directory) / name, cache_keys=1_024)
            keys = [key.decode() for key, _ in found[name]]
            values = [codec.decode(value) for _, value in found[name]]
            figures |= {f"{name} {what}": cpu for what, cpu in one_store(stores, name, keys, values, repeats, batch)}
            stores.close()
    return figures


def one_store(
    stores: StateStores, name: str, keys: list[str], values: list[Any], repeats: int, batch: int
) -> list[tuple[str, float]]:
    store = stores.take(name, 0)
    chunks = [range(start, min(start + batch, len(keys))) for start in range(0, len(keys), batch)]

    def flush_all() -> None:
        for chunk in chunks:
            for n in chunk:
                store.put(keys[n], values[n])
            stores.flush(lambda topic, partition, key, value: None)  # librdkafka copies the bytes

    def put_all() -> None:
        for key, value in zip(keys, values, strict=True):
            store.put(key, value)

    figures = [("flush (incl. put)", best(repeats, len(keys), flush_all)), ("put", best(repeats, len(keys), put_all))]
    stores.flush(lambda *_: None)
    wanted = keys[: len(keys) // 2]
    absent = [f"absent-{n}" for n in range(len(wanted))]
    figures.append(
        ("get (hit, decoded)", best(repeats, len(wanted), lambda: each(store.get, wanted), store.data.clear))
    )
    figures.append(("get (miss)", best(repeats, len(absent), lambda: each(store.get, absent))))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=500, help="states put between two flushes")
    args = parser.parse_args()
    found = records(args.entries)
    gc.collect()
    gc.freeze()
    figures = codec_figures(found, args.repeats) | store_figures(found, args.repeats, args.batch)
    print(f"{sys.argv[0]} ({', '.join(f'{k}: {len(v):,}' for k, v in found.items())} records), CPU µs per record:")
    for name, figure in figures.items():
        print(f"  {name:<28} {figure:7.2f}")


if __name__ == "__main__":
    main()
