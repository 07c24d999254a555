"""`backbone import` end to end, as a user runs it, against the configured broker and registry.

    BACKBONE_DATA_DIR=/work/main/.backbone .venv/bin/python benchmarks/import_bench.py --rows 100000 \\
        --tree /tmp/base-imports --tree . --rounds 2 --digest

Runs `backbone import TRACKER FILE` as a subprocess (start-up, the inspection pass, validation and
publishing included) on files shaped like the trackers' detailed CSV exports (`gateway_bench.write_inputs`),
publishing to throwaway topics shaped like the catalog's time-entry and approval topics: the command is
started through a two-line runner that points the catalog's event types at them, so any tree (an old
one too, extracted with `git archive <commit> | tar -x -C /tmp/base`) runs unchanged. `--tree` names
the checkouts to compare, each once per round per tracker, alternating; `--emit` adds, per round,
`backbone emit time-entry` of as many canonical lines (the publishing path imports are measured against).
Each run reports rows/s (wall), its CPU per row (the whole process and its children, start-up included,
which the machine's load moves far less than the wall clock) and the load average; `--digest` hashes
what each run published (`emit_bench.topic_digest`), so equal digests show the trees published the
same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from backbone.kafka import topics as catalog
from backbone.settings import load_settings

HERE = Path(__file__).resolve().parent
TRACKERS = ("harvest", "toggl", "clockify")
RUNNER = """
import dataclasses, sys
from backbone.kafka import topics
for event_type, name in (("time-entry", sys.argv[1]), ("approval", sys.argv[2])):
    topics.BY_EVENT_TYPE[event_type] = dataclasses.replace(topics.BY_EVENT_TYPE[event_type], name=name)
from backbone.cli.main import cli
cli(sys.argv[3:], prog_name="backbone")
"""
"""Runs `backbone ARGS` with the catalog's time-entry and approval topics renamed (argv 1 and 2)."""


def _sibling(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_import(tree: Path, tracker: str, source: Path, topics: tuple[str, str]) -> dict[str, Any]:
    """One `backbone import TRACKER FILE` from `tree`, publishing to `topics` (time entries, approvals)."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", RUNNER, *topics, "import", tracker, str(source)]
    command += ["--exported-at", "2024-11-01T00:00:00Z"]
    return _timed(command, tree, env)


def run_emit(tree: Path, source: Path, topic: str) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "backbone.cli", "emit", "time-entry", str(source), "--topic", topic, "-q"]
    return _timed(command, tree, env)


def _timed(command: list[str], tree: Path, env: dict[str, str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {
        "load_average": round(load, 2),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(_children_cpu() - cpu_before, 2),
        "summary": (done.stdout + done.stderr).strip().splitlines()[-1:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tree", type=Path, action="append", help="run the import from this checkout (repeatable)")
    parser.add_argument("--tracker", action="append", choices=TRACKERS, help="default: all three")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--digest", action="store_true", help="hash what each run published")
    parser.add_argument("--emit", action="store_true", help="also `backbone emit` as many entries, per round")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [HERE.parent])]
    gateway_bench, emit_bench = _sibling("gateway_bench"), _sibling("emit_bench")
    admin = AdminClient(load_settings().kafka.client_config())
    made: list[str] = []

    def fresh(template: catalog.Topic) -> catalog.Topic:
        topic = dataclasses.replace(template, name=f"bench-import-{template.event_type}-{uuid.uuid4().hex[:8]}")
        for future in admin.create_topics([NewTopic(topic.name, topic.partitions, 1)]).values():
            future.result(timeout=30)
        made.append(topic.name)
        return topic

    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            files = gateway_bench.write_inputs(Path(directory), args.rows)
            if args.emit:
                lines = Path(directory) / "entries.jsonl"
                lines.write_text("".join(json.dumps(emit_bench.time_entry(i)) + "\n" for i in range(args.rows)))
            for round_number in range(1, args.rounds + 1):
                for tracker in args.tracker or TRACKERS:
                    for tree in trees:
                        entries, approvals = fresh(catalog.TIME_ENTRIES), fresh(catalog.APPROVALS)
                        run = {"round": round_number, "tracker": tracker, "tree": str(tree), "rows": args.rows}
                        run.update(run_import(tree, tracker, files[tracker], (entries.name, approvals.name)))
                        _rates(run, args.rows)
                        if args.digest:
                            run["digest"] = [emit_bench.topic_digest(t)[:16] for t in (entries, approvals)]
                        runs.append(run)
                        print(json.dumps(run), file=sys.stderr)
                if args.emit:
                    for tree in trees:
                        run = {"round": round_number, "tracker": "emit", "tree": str(tree), "rows": args.rows}
                        run.update(run_emit(tree, lines, fresh(catalog.TIME_ENTRIES).name))
                        _rates(run, args.rows)
                        runs.append(run)
                        print(json.dumps(run), file=sys.stderr)
    finally:
        if made:
            for future in admin.delete_topics(made).values():
                future.result(timeout=30)
    print(json.dumps({"command": " ".join(sys.argv), "runs": runs}, indent=2))


def _rates(run: dict[str, Any], rows: int) -> None:
    run["rows_per_second"] = round(rows / run["wall_seconds"])
    run["cpu_us_per_row"] = round(run["cpu_seconds"] / rows * 1e6, 1)


if __name__ == "__main__":
    main()
