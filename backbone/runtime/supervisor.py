"""One supervised group of backbone processes (`backbone run all`): start, watch, restart, stop.

The group is data: a list of `ChildSpec` (name, argv, env, tier). The supervisor starts every child
(tier 0 first), checks them every `poll_interval`, and restarts one that exited with exponential
backoff (`initial_backoff` doubling up to `max_backoff`; a child that ran `stable_after` seconds
starts again from `initial_backoff`). Every exit is a log line and a metric. A child that exits with
a status saying a restart cannot help (a usage error, a configuration error: `GIVE_UP_STATUSES`) is
not restarted but reported as failed, so a missing command never crash-loops.

SIGTERM or SIGINT stops the group: the highest tier first (the connectors, topology and sink before
the simulators they talk to), each child gets SIGTERM, then SIGKILL after `grace_seconds`. Children
run in sessions of their own (Ctrl-C in the terminal reaches only the supervisor, which stops them in
order) and get SIGTERM from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG).

The group's state is written to `<home>/group.json` on every change and the supervisor's pid to
`<home>/supervisor.pid`, so `backbone status` lists the children (pid, uptime, restarts) without
talking to the supervisor; see `group_status`. README.md ("Running everything") documents it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from backbone.errors import BackboneError
from backbone.runtime.processes import ServiceProcess

log = structlog.get_logger("supervisor")

GIVE_UP_STATUSES = frozenset({2, 78})
"""Exit statuses a restart cannot fix: 2 is a usage error (e.g. an unknown command), 78 a configuration
error (EX_CONFIG). Such a child is reported as failed and left stopped."""
SUPERVISOR_MARKER = "run all"
"""What the supervisor's command line holds (a recycled pid is never taken for it)."""
STATE_FILE = "group.json"
PR_SET_PDEATHSIG = 1

CHILD_STARTS = Counter("backbone_supervisor_child_starts_total", "Child processes started", ["child"])
CHILD_RESTARTS = Counter(
    "backbone_supervisor_child_restarts_total", "Child processes restarted after they exited", ["child"]
)
CHILD_EXITS = Counter(
    "backbone_supervisor_child_exits_total", "Child process exits, by status (negative: signal)", ["child", "status"]
)
CHILD_UP = Gauge("backbone_supervisor_child_up", "1 while the child runs", ["child"])


class GroupAlreadyRunningError(BackboneError):
    """Another supervisor runs with the same home: two would fight over its children and state file."""

    exit_code = 75  # EX_TEMPFAIL: try again once the other group stopped


class ExitStatus:
    """What `backbone run all` exits with (README.md, "Running everything")."""

    STOPPED = 0
    """Stopped on request; every child stopped within the grace period."""
    KILLED = 1
    """Stopped on request, but a child had to be killed after the grace period (named in the log)."""
    NOTHING_TO_RUN = 78
    """No child could be started (all skipped or failed): check the log lines above it."""


@dataclass(frozen=True)
class ChildSpec:
    """One process of the group: how to start it. `tier` orders start (ascending) and stop (descending)."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    tier: int = 1

    def describe(self) -> str:
        return " ".join(self.argv)


class ChildState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"
    SKIPPED = "skipped"


@dataclass
class Child:
    """A child's live state: its process, restarts and when it may start again."""

    spec: ChildSpec
    log_file: Path
    state: ChildState = ChildState.STOPPED
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    started_wall: str = ""
    restarts: int = 0
    last_status: int | None = None
    backoff: float = 0.0
    next_start: float = 0.0
    note: str = ""

    def status_row(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "state": self.state.value,
            "pid": self.process.pid if self.process is not None and self.state is ChildState.RUNNING else None,
            "started_at": self.started_wall,
            "restarts": self.restarts,
            "last_exit": self.last_status,
            "command": self.spec.describe(),
            "log": str(self.log_file),
            "note": self.note,
        }


@dataclass(frozen=True)
class SupervisorSettings:
    grace_seconds: float = 20.0
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    stable_after: float = 60.0
    poll_interval: float = 0.2


class Supervisor:
    """Runs `children` until `stop()` (or SIGTERM/SIGINT); `run()` returns the exit status."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        home: Path,
        *,
        settings: SupervisorSettings | None = None,
        skipped: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.home = home
        self.settings = settings or SupervisorSettings()
        self.cwd = cwd
        self.children = [Child(spec, home / f"{_file_name(spec.name)}.log") for spec in children]
        self.skipped = [
            Child(ChildSpec(name, ()), home / f"{_file_name(name)}.log", ChildState.SKIPPED, note=reason)
            for name, reason in (skipped or {}).items()
        ]
        self.process = ServiceProcess("supervisor", home, marker=SUPERVISOR_MARKER)
        self._stop = threading.Event()
        self.killed: list[str] = []

    # --- running ------------------------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> int:
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda signum, _frame: self._on_signal(signum))
        self.home.mkdir(parents=True, exist_ok=True)
        running = self.process.pid()
        if running is not None and running != os.getpid():
            raise GroupAlreadyRunningError(
                f"a group already runs with {self.home} (supervisor pid {running})",
                hint="stop it first (Ctrl-C or kill -TERM that pid), or give this one another BACKBONE_DATA_DIR",
            )
        self.process.pid_file.write_text(f"{os.getpid()}\n")
        for child in self.skipped:
            log.warning("child skipped", child=child.spec.name, reason=child.note)
        if not self.children:
            log.error("nothing to run: every child was skipped")
            self._write_state()
            return ExitStatus.NOTHING_TO_RUN
        try:
            for child in sorted(self.children, key=lambda c: c.spec.tier):
                self._start(child)
            self._write_state()
            log.info("group started", children=[c.spec.name for c in self.children], home=str(self.home))
            while not self._stop.wait(self.settings.poll_interval):
                self._check()
        finally:
            self._stop_all()
            self._write_state()
            self.process.pid_file.unlink(missing_ok=True)
        status = ExitStatus.KILLED if self.killed else ExitStatus.STOPPED
        log.info("group stopped", exit_status=status, killed=self.killed)
        return status

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        log.info("stopping the group", signal=signal.Signals(signum).name)
        self.stop()

    # --- children ----------------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        spec = child.spec
        try:
            with child.log_file.open("ab") as out:
                child.process = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env={**os.environ, **spec.env},
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except OSError as error:  # no such program, no rights: a restart cannot fix it
            child.state, child.note = ChildState.FAILED, f"cannot start: {error}"
            log.error("child cannot be started", child=spec.name, command=spec.describe(), error=str(error))
            return
        child.state = ChildState.RUNNING
        child.started_at = time.monotonic()
        child.started_wall = datetime.now(UTC).isoformat(timespec="seconds")
        CHILD_STARTS.labels(spec.name).inc()
        CHILD_UP.labels(spec.name).set(1)
        log.info(
            "child started", child=spec.name, pid=child.process.pid, restarts=child.restarts, log=str(child.log_file)
        )

    def _check(self) -> None:
        changed = False
        now = time.monotonic()
        for child in self.children:
            if child.state is ChildState.RUNNING and child.process is not None:
                status = child.process.poll()
                if status is not None:
                    self._exited(child, status, now)
                    changed = True
            elif child.state is ChildState.RESTARTING and now >= child.next_start:
                child.restarts += 1
                CHILD_RESTARTS.labels(child.spec.name).inc()
                self._start(child)
                changed = True
        if changed:
            self._write_state()

    def _exited(self, child: Child, status: int, now: float) -> None:
        name = child.spec.name
        child.last_status = status
        CHILD_EXITS.labels(name, str(status)).inc()
        CHILD_UP.labels(name).set(0)
        ran = now - child.started_at
        if status in GIVE_UP_STATUSES:
            child.state = ChildState.FAILED
            child.note = f"exited {status} ({_meaning(status)}); not restarted: a restart cannot fix it"
            log.error("child failed; not restarted", child=name, status=status, ran_seconds=round(ran, 1),
                      log=str(child.log_file), hint=f"see {child.log_file}")  # fmt: skip
            return
        if ran >= self.settings.stable_after:
            child.backoff = 0.0
        child.backoff = min(self.settings.max_backoff, max(self.settings.initial_backoff, child.backoff * 2))
        child.next_start = now + child.backoff
        child.state = ChildState.RESTARTING
        log.warning("child exited; restarting after backoff", child=name, status=status, meaning=_meaning(status),
                    ran_seconds=round(ran, 1), backoff_seconds=child.backoff, restarts=child.restarts,
                    log=str(child.log_file))  # fmt: skip

    def _stop_all(self) -> None:
        """Highest tier first: SIGTERM to the tier, SIGKILL after the grace period to what still runs."""
        for tier in sorted({c.spec.tier for c in self.children}, reverse=True):
            running = [c for c in self.children if c.spec.tier == tier and _running(c)]
            for child in running:
                _signal(child, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.grace_seconds
            for child in running:
                self._await_exit(child, deadline)
            for child in self.children:
                if child.state is ChildState.RESTARTING:
                    child.state = ChildState.STOPPED

    def _await_exit(self, child: Child, deadline: float) -> None:
        assert child.process is not None
        try:
            status = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("child did not stop within the grace period; killed", child=child.spec.name,
                      pid=child.process.pid, grace_seconds=self.settings.grace_seconds)  # fmt: skip
            _signal(child, signal.SIGKILL)
            status = child.process.wait()
            self.killed.append(child.spec.name)
        child.state = ChildState.STOPPED
        child.last_status = status
        CHILD_UP.labels(child.spec.name).set(0)
        log.info("child stopped", child=child.spec.name, status=status)

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "children": [c.status_row() for c in self.children + self.skipped],
        }
        temporary = self.home / f"{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(state, indent=1))
        temporary.replace(self.home / STATE_FILE)


# --- reading the state (backbone status) ----------------------------------------------------------------


@dataclass(frozen=True)
class ChildStatus:
    name: str
    state: str
    pid: int | None
    uptime_seconds: float | None
    restarts: int
    note: str

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        uptime = _duration(self.uptime_seconds) if self.uptime_seconds is not None else "-"
        note = f"  ({self.note})" if self.note else ""
        return f"  {self.name:<24} {self.state:<10} {pid:<10} up {uptime:<9} restarts {self.restarts}{note}"


def stop_group(home: Path, timeout: float = 120.0) -> bool:
    """SIGTERM the group's supervisor and wait for it; True when one was running.

    The supervisor stops its children itself (SIGTERM, then SIGKILL after its grace period), so `timeout`
    only bounds a supervisor that no longer answers; it then gets SIGKILL and its children follow it.
    """
    return ServiceProcess("supervisor", home, marker=SUPERVISOR_MARKER).stop(timeout=timeout)


def group_status(home: Path, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[ChildStatus] | None:
    """The children of the group whose supervisor runs with `home`, or None when none runs there."""
    if ServiceProcess("supervisor", home, marker=SUPERVISOR_MARKER).pid() is None:
        return None
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    rows = []
    for row in state.get("children", []):
        running = row["state"] == ChildState.RUNNING and row.get("pid")
        uptime = (now() - datetime.fromisoformat(row["started_at"])).total_seconds() if running else None
        rows.append(
            ChildStatus(row["name"], row["state"], row.get("pid"), uptime, row["restarts"], row.get("note", ""))
        )
    return rows


# --- helpers -------------------------------------------------------------------------------------------


def _running(child: Child) -> bool:
    return child.state is ChildState.RUNNING and child.process is not None and child.process.poll() is None


def _signal(child: Child, signum: signal.Signals) -> None:
    assert child.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, signum)  # its own session: the process and whatever it started


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies, so no orphan outlives the group."""
    with contextlib.suppress(OSError):  # not Linux: a child may outlive a supervisor killed with SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _meaning(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return {
        0: "exited by itself",
        1: "failed",
        2: "usage error (unknown command or option?)",
        70: "internal failure",
        75: "fatal Kafka error (fenced or refused)",
        78: "configuration error",
        137: "killed (137)",
    }.get(status, "failed")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
