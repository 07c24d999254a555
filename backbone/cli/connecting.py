"""The producer `emit` publishes with, connected while the input is still being validated.

Asking the broker whether the topic exists and the registry for the schema id used to follow validation
and took 0.1–0.4 s of waiting on a loaded machine (docs/benchmarks.md, "Eighth session"). `EarlyConnection`
asks both on a thread while the lines are validated, and `ready` hands the emitter over (or raises what went
wrong, as asking afterwards would have) only when the command goes on to publish. librdkafka's own log lines
(an unreachable broker's connection errors) are held until then as well, so a refused input shows its
problems and nothing else, whatever the state of the broker; a refused input never waits for the broker.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import click

from backbone.settings import load_settings

if TYPE_CHECKING:
    from backbone.kafka.topics import Topic
    from producers.emitter import Emitter

HELD_LINES = 100
"""librdkafka lines kept while validating (it retries a refused connection with a backoff; the rest are counted)."""


class HeldLogs:
    """librdkafka's log lines (the emitter's `logger`): held until `show`, then written to standard error."""

    def __init__(self) -> None:
        self._held: list[str] = []
        self._dropped = 0
        self._showing = False

    def log(self, level: int, message: str, *args: object) -> None:
        line = message % args if args else message
        if self._showing:
            click.echo(f"librdkafka: {line}", err=True)
        elif len(self._held) < HELD_LINES:
            self._held.append(line)
        else:
            self._dropped += 1

    def show(self) -> None:
        """Writes what was held, and every later line as it comes."""
        self._showing = True
        for line in self._held:
            click.echo(f"librdkafka: {line}", err=True)
        if self._dropped:
            click.echo(f"librdkafka: ... and {self._dropped} more lines", err=True)
        self._held, self._dropped = [], 0


class EarlyConnection:
    """A bulk emitter asking, on its own thread, whether `topic` exists and what its schema id is."""

    def __init__(self, topic: Topic, timeout: float = 10.0) -> None:
        """`timeout`: how long the broker has to answer (`Emitter.ensure_topic`)."""
        from producers.emitter import Emitter

        self.logs = HeldLogs()
        self.emitter: Emitter = Emitter(load_settings(), bulk=True, logger=self.logs)
        self._topic, self._timeout = topic, timeout
        self._answered = False
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = self._abandoned = False
        self._asking = threading.Thread(target=self._ask, name="emit-connect", daemon=True)
        self._asking.start()

    def ready(self) -> Emitter:
        """The emitter, once the topic is known to exist and its schema id known; raises what went wrong
        asking (`Emitter.ensure_topic`, the registry's errors), after showing librdkafka's lines."""
        self._asking.join()
        self.emitter.flush(0)  # serves the log queue: the lines held so far reach `logs`
        self.logs.show()
        if self._error is not None:
            raise self._error
        assert self._answered
        return self.emitter

    def close(self) -> None:
        """Releases the producer; while the thread still waits for the broker (the input was refused first),
        the thread releases it when the wait ends, and this process need not wait for it."""
        with self._lock:
            if not self._done:
                self._abandoned = True
                return
        self.emitter.close()

    def _ask(self) -> None:
        try:
            self.emitter.ensure_topic(self._topic, self._timeout)
            self.emitter.frame_header(self._topic)  # the serde keeps it: publishing asks no more
            self._answered = True
        except BaseException as error:
            self._error = error
        finally:
            with self._lock:
                self._done = True
                abandoned = self._abandoned
            if abandoned:
                self.emitter.close()
