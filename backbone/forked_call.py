"""A function called in a forked child process, its result or its error brought back to this one.

`backbone emit` and `backbone import` validate a large input in two processes (`backbone.cli.halves`,
`producers.halves`): a child forked at the cut validates the second half while this process validates the
first. Both need the same machinery, kept here: the pipe the child writes its pickled result (or error) to,
the child's exit without running this process's cleanup (`os._exit`: no `atexit`, no flushing of
inherited buffers, no closing of inherited files), the wait for it, and stopping it when this process fails
first. Files the child writes into are made before the fork (`empty_file`), so this process removes them.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class ForkedCall(Generic[T]):
    """`function()` running in a child forked at construction; `result()` waits for it.

    `what` names the work in the error raised when the child dies without a word (killed, out of memory):
    "<what> failed (exit status N)"."""

    def __init__(self, function: Callable[[], T], what: str) -> None:
        self._what = what
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self._pid = os.fork()
        if self._pid == 0:  # the child: call, say how it went, and leave without running any cleanup
            os.close(read_end)
            _run_child(function, write_end)
        os.close(write_end)
        self._pipe = os.fdopen(read_end, "rb")

    def result(self) -> T:
        """Waits for the child; what `function` returned, or raises what it raised."""
        with self._pipe:
            data = self._pipe.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        if not data:
            raise RuntimeError(f"{self._what} failed (exit status {status})")
        returned, error = pickle.loads(data)
        if error is not None:
            raise error
        result: T = returned
        return result

    def stop(self) -> None:
        """Kills the child if it still runs (this process failed before asking for its result)."""
        if self._pid:
            os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = 0
            self._pipe.close()


def _run_child(function: Callable[[], object], out: int) -> None:
    code = 0
    try:
        outcome: tuple[object, BaseException | None] = (function(), None)
    except BaseException as error:
        outcome, code = (None, error), 1
    try:
        data = pickle.dumps(outcome)
    except Exception as error:
        data, code = pickle.dumps((None, RuntimeError(repr(error)))), 1
    with os.fdopen(out, "wb") as pipe:
        pipe.write(data)
    os._exit(code)


def empty_file(suffix: str) -> Path:
    """A new empty temporary file, for a child to write and this process to read and remove."""
    descriptor, name = tempfile.mkstemp(suffix=suffix)
    os.close(descriptor)
    return Path(name)
