"""Where the gateway's latency goes: gateway_bench.py's runs with the gateway timed from the inside.

    PYTHONPATH=<tree> BACKBONE_KAFKA_PORT=... BACKBONE_DATA_DIR=... \
        .venv/bin/python benchmarks/gateway_tail.py OUTDIR --skip-imports --seconds 15 --port 27150

Runs `gateway_bench.py` (same options: warm-up, saturation, paced) with the gateway started in this
script's `--probed` mode, which records on the monotonic clock every garbage-collector pass (wall and
CPU time, generation), every POST's phases (started, events written, produced, acknowledged by the
broker, resumed, answered) and librdkafka's broker round trips (its statistics, once a second); the
records are flat arrays of floats, so the probe adds nothing for the collector to walk. Meanwhile a
sampler reads, every 10 ms, the scheduler statistics of the gateway's threads
(`/proc/<pid>/task/*/schedstat`: time run, time waiting for a CPU) and the machine's CPU. Prints, per
run, the gateway-side percentiles of each phase, the collector's passes, and what the slowest 1 % of
requests spent their time on (docs/gateway.md, "Eleventh session"). OUTDIR keeps the raw records.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import glob
import io
import json
import os
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# --- inside the gateway (`--probed`) ---------------------------------------------------------------


def serve_probed(out: Path) -> None:
    """`backbone run gateway` with timing hooks; the records are written to `out` when it shuts down."""
    import contextvars

    import uvicorn

    import producers.emitter as emitter_module
    import producers.gateway.app as app_module
    import producers.gateway.incoming as incoming
    from backbone.cli.main import cli

    clock, cpu = time.perf_counter, time.thread_time
    passes, requests, stats = array("d"), array("d"), []  # passes: 5 floats each, requests: 6
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = clock(), cpu()
        else:
            passes.extend((started[0], clock() - started[0], cpu() - started[1], info["generation"], 0))

    gc.callbacks.append(on_gc)
    current: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("probed", default=None)
    settled_at: dict[int, float] = {}
    config, access, publish = emitter_module.producer_config, app_module.AccessLog.__call__, app_module.Gateway._publish
    send, settle, wait = (
        emitter_module.Emitter.send_reported,
        incoming.DeliveryReports._settle,
        incoming.Deliveries.wait,
    )
    shutdown = uvicorn.Server.shutdown

    def on_stats(text: str) -> None:
        brokers = [b for b in json.loads(text).get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        stats.extend({"t": clock(), **{k: b.get(k) for k in ("rtt", "int_latency")}} for b in brokers)

    def probed_config(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**config(*args, **kwargs), "statistics.interval.ms": 1000, "stats_cb": on_stats}

    async def probed_access(self: Any, scope: Any, receive: Any, send_: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await access(self, scope, receive, send_)
        phases = [clock(), 0.0, 0.0, 0.0, 0.0, 0.0]
        token = current.set(phases)
        try:
            await access(self, scope, receive, send_)
        finally:
            phases[5] = clock()
            current.reset(token)
            requests.extend(phases)

    def note(index: int, value: float | None = None) -> None:
        phases = current.get()
        if phases is not None:
            phases[index] = clock() if value is None else value

    async def probed_publish(self: Any, events: Any) -> Any:
        note(1)
        return await publish(self, events)

    def probed_send(self: Any, records: Any, report: Any) -> None:
        send(self, records, report)
        note(2)

    def probed_settle(self: Any, outcome: Any) -> None:
        settled_at[id(self)] = clock()
        settle(self, outcome)

    async def probed_wait(self: Any, reports: Any, timeout_s: float) -> None:
        try:
            await wait(self, reports, timeout_s)
        finally:
            note(3, settled_at.pop(id(reports), 0.0))
            note(4)

    async def probed_shutdown(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await shutdown(self, *args, **kwargs)
        finally:  # uvicorn re-raises SIGTERM after shutting down: no atexit
            records = {"pid": os.getpid(), "gc": passes.tolist(), "requests": requests.tolist(), "stats": stats}
            out.write_text(json.dumps(records))

    emitter_module.producer_config = probed_config  # type: ignore[assignment]
    app_module.AccessLog.__call__ = probed_access  # type: ignore[method-assign]
    app_module.Gateway._publish = probed_publish  # type: ignore[method-assign]
    emitter_module.Emitter.send_reported = probed_send  # type: ignore[method-assign]
    incoming.DeliveryReports._settle = probed_settle  # type: ignore[method-assign]
    incoming.Deliveries.wait = probed_wait  # type: ignore[method-assign]
    uvicorn.Server.shutdown = probed_shutdown  # type: ignore[method-assign]
    sys.argv = ["backbone", "run", "gateway"]
    cli()


# --- around it -----------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class Sampler(threading.Thread):
    """Every 10 ms: the gateway's threads' run and run-queue times (ns) and the machine's CPU ticks."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out, self.pid, self.stopped = out, 0, threading.Event()

    def run(self) -> None:
        with self.out.open("w") as out:
            while not self.stopped.wait(0.01):
                ticks = [int(x) for x in _read("/proc/stat").split("\n", 1)[0].split()[1:]]
                row: dict[str, Any] = {
                    "t": time.monotonic(),
                    "busy": sum(ticks) - ticks[3] - ticks[4],
                    "all": sum(ticks),
                }
                if self.pid:
                    threads = {}
                    for task in glob.glob(f"/proc/{self.pid}/task/*"):
                        run, wait = (_read(f"{task}/schedstat").split() or ["0", "0"])[:2]
                        threads[task.rsplit("/", 1)[1]] = (int(run), int(wait))
                    row["threads"] = threads
                out.write(json.dumps(row) + "\n")


def run_bench(outdir: Path, options: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    import gateway_bench as bench

    sampler = Sampler(outdir / "samples.jsonl")
    runs: list[tuple[str, float, float]] = []
    names = iter(["warm_up", "saturation", "paced"])
    start_gateway, run_wrk = bench.start_gateway, bench.run_wrk

    def probed_gateway(port: int, log_path: Path) -> subprocess.Popen[bytes]:
        real_popen = subprocess.Popen

        def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
            command = [sys.executable, str(Path(__file__).resolve()), "--probed", str(outdir / "gateway.json")]
            return real_popen(command, **kwargs)

        bench.subprocess.Popen = popen  # type: ignore[assignment,misc]
        try:
            gateway = start_gateway(port, outdir / "gateway.log")
        finally:
            bench.subprocess.Popen = real_popen  # type: ignore[misc]
        sampler.pid = gateway.pid
        return gateway

    def timed_wrk(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started = time.monotonic()
        try:
            return run_wrk(*args, **kwargs)
        finally:
            runs.append((next(names), started, time.monotonic()))

    bench.start_gateway, bench.run_wrk = probed_gateway, timed_wrk
    sampler.start()
    printed = io.StringIO()
    sys.argv = ["gateway_bench.py", *options]
    try:
        with contextlib.redirect_stdout(printed):
            bench.main()
    finally:
        sampler.stopped.set()
        sampler.join()
    (outdir / "bench.json").write_text(printed.getvalue())
    (outdir / "runs.json").write_text(json.dumps(runs))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def report(outdir: Path) -> None:
    probed = json.loads((outdir / "gateway.json").read_text())
    figures = json.loads((outdir / "bench.json").read_text())["gateway_signed_webhooks"]
    runs = {name: (a, b) for name, a, b in json.loads((outdir / "runs.json").read_text())}
    passes = [probed["gc"][i : i + 5] for i in range(0, len(probed["gc"]), 5)]
    requests = [probed["requests"][i : i + 6] for i in range(0, len(probed["requests"]), 6)]
    samples = [json.loads(line) for line in (outdir / "samples.jsonl").read_text().splitlines()]
    main = str(probed["pid"])
    waits = [(s["t"], s["threads"][main][1] / 1e9) for s in samples if main in s.get("threads", {})]
    times = [t for t, _ in waits]

    def waited(t: float) -> float:  # the main thread's run-queue time so far, interpolated
        i = min(max(bisect.bisect_left(times, t), 1), len(times) - 1)
        (t0, w0), (t1, w1) = waits[i - 1], waits[i]
        return w0 + (w1 - w0) * min(max((t - t0) / (t1 - t0), 0.0), 1.0)

    for name in ("saturation", "paced"):
        a, b = runs[name]
        run = figures[name]
        mine = [r for r in requests if a <= r[0] <= b]
        print(
            f"== {name}: {run['accepted_per_s']:,.0f} accepted/s, wrk p50 {run['p50_ms']} / p99 {run['p99_ms']} ms, "
            f"gateway {run['gateway_cpu_ms_per_accepted']} ms CPU per accepted"
        )
        spans = {
            "whole request": (0, 5),
            "start to publish": (0, 1),
            "produce": (1, 2),
            "produce to acknowledged": (2, 3),
            "acknowledged to resumed": (3, 4),
            "resumed to answered": (4, 5),
        }
        for label, (i, j) in spans.items():
            ms = [(r[j] - r[i]) * 1000 for r in mine if r[i] and r[j]]
            print(
                f"  {label:24s} p50 {_percentile(ms, 0.5):7.2f}  p99 {_percentile(ms, 0.99):7.2f}  "
                f"max {max(ms):7.2f} ms"
            )
        for generation in (0, 1, 2):
            of = [p for p in passes if a <= p[0] <= b and p[3] == generation]
            cpu_ms = [p[2] * 1000 for p in of]
            print(
                f"  gc generation {generation}: {len(of)} passes, {sum(cpu_ms):.1f} ms CPU "
                f"({sum(cpu_ms) * 1000 / max(len(mine), 1):.1f} µs a request), "
                f"longest {max(cpu_ms, default=0):.1f} ms CPU "
                f"/ {max((p[1] * 1000 for p in of), default=0):.1f} ms wall"
            )
        slow = sorted(mine, key=lambda r: r[5] - r[0])[-max(1, len(mine) // 100) :]
        total = sum(r[5] - r[0] for r in slow)
        queued = sum(waited(r[5]) - waited(r[0]) for r in slow)
        in_gc = sum(max(0.0, min(p[0] + p[1], r[5]) - max(p[0], r[0])) for r in slow for p in passes)
        acked = sum(r[3] - r[2] for r in slow if r[3] and r[2])
        rtt = [s["rtt"]["p99"] / 1000 for s in probed["stats"] if a <= s["t"] <= b and s.get("rtt")]
        print(
            f"  broker round trip (librdkafka), p99 of each second: {min(rtt, default=0):.1f} "
            f"to {max(rtt, default=0):.1f} ms"
        )
        window = [s for s in samples if a <= s["t"] <= b]
        busy = (window[-1]["busy"] - window[0]["busy"]) / max(window[-1]["all"] - window[0]["all"], 1)
        print(
            f"  slowest 1 % ({len(slow)}): {total * 1000 / len(slow):.1f} ms on average, of which (overlapping) the "
            f"main thread waited for a CPU {queued / total:.0%}, in a GC pass {in_gc / total:.0%}, between produce "
            f"and acknowledgement {acked / total:.0%}; main thread waiting for a CPU "
            f"{(waited(b) - waited(a)) * 1000 / (b - a):.0f} ms a second over the run; machine busy {busy:.0%}"
        )


def main() -> None:
    if sys.argv[1] == "--probed":
        serve_probed(Path(sys.argv[2]))
        return
    outdir = Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    run_bench(outdir, sys.argv[2:])
    report(outdir)


if __name__ == "__main__":
    main()
