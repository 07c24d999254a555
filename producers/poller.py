"""`backbone run poller`: polls the configured time trackers on an interval until SIGTERM.

Each round polls every active source once (`polling.HarvestPoller`, `TogglPoller`, `ClockifyPoller`).
A poll's events and the source's new cursor are committed in one Kafka transaction (`checkpoint`), so
whenever the process dies - SIGTERM, SIGKILL, power - each change is on the broker exactly once.
SIGTERM lets the current poll finish (fetch, publish, commit), then the process exits 0.

HTTP calls retry transient failures (`resilience.ResilientClient`); a poll that still fails counts
against the source's `CircuitBreaker`, which skips the source while open and tries again by itself.
A permanent refusal (401, 403, 404...) stops that source with a log line saying what to fix; the others
go on. Sources come from `PollerSettings` (`BACKBONE_POLLER_*`) and each tracker's own settings
(`BACKBONE_HARVEST_*`, `BACKBONE_TOGGL_*`, `BACKBONE_CLOCKIFY_*`, in `polling`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import structlog
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backbone.errors import BackboneError, ConfigurationError
from backbone.settings import Settings
from producers.identity import EntryMapper, IdentityMap, IdentityRules, UnmappedPolicy
from producers.polling import PollReport
from producers.resilience import (
    BreakerState,
    CircuitBreaker,
    PermanentSourceError,
    RetryPolicy,
    StopRequested,
    TransientSourceError,
)

log = structlog.get_logger("poller")

SourceName = Literal["harvest", "toggl", "clockify"]


class PollerSettings(BaseSettings):
    """The poller's own knobs. Credentials and base URLs are the trackers' settings (see `polling`)."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_POLLER_", frozen=True, extra="ignore")

    sources: Annotated[tuple[SourceName, ...], NoDecode] = Field(
        default=(), description="Comma-separated: harvest,toggl,clockify."
    )
    interval_s: float = Field(default=60.0, gt=0, description="Pause between rounds.")
    name: str = Field(default="poller", description="Transactional id and checkpoint key prefix; one process each.")
    checkpoint_topic: str = Field(default="backbone.poller-checkpoints", description="Compacted cursor topic.")
    retry_attempts: int = Field(default=5, ge=1, description="HTTP attempts per request, the first included.")
    retry_base_s: float = Field(default=1.0, gt=0, description="First backoff; doubles per attempt (full jitter).")
    retry_max_s: float = Field(default=30.0, gt=0, description="Backoff cap.")
    max_retry_after_s: float = Field(default=300.0, gt=0, description="Cap on a server's Retry-After.")
    breaker_failures: int = Field(default=3, ge=1, description="Failed polls in a row that open the breaker.")
    breaker_reset_s: float = Field(default=300.0, gt=0, description="How long an open breaker skips the source.")
    identity_file: Path | None = None
    project_code_is_id: bool = False
    worker_email_is_id: bool = False
    unmapped: UnmappedPolicy = "publish"

    @field_validator("sources", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_attempts, self.retry_base_s, self.retry_max_s, self.max_retry_after_s)

    def mapper(self) -> EntryMapper:
        rules = IdentityRules(project_code_is_id=self.project_code_is_id, worker_email_is_id=self.worker_email_is_id)
        identity = IdentityMap.from_file(self.identity_file, rules) if self.identity_file else IdentityMap(rules=rules)
        return EntryMapper(identity, self.unmapped)


class PollerMetrics:
    """Prometheus series of the poller, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter("poller_polls", "Polls by outcome", ["source", "outcome"], registry=self.registry)
        self.published = Counter("poller_events_published", "Events committed", ["source"], registry=self.registry)
        self.failures = Counter("poller_failures", "Failures by kind", ["source", "kind"], registry=self.registry)
        self.retries = Counter("poller_retries", "HTTP retries", ["source"], registry=self.registry)
        self.rejected = Counter("poller_rejected", "Records not mappable", ["source"], registry=self.registry)
        self.breaker = Gauge(
            "poller_breaker_state", "0 closed, 1 half-open, 2 open", ["source"], registry=self.registry
        )


class Poll(Protocol):
    def poll_once(self) -> PollReport: ...


class Transaction(Protocol):
    def transaction(self) -> Any: ...


@dataclass
class SourceRunner:
    """One source: its poller behind a breaker, each poll in its own transaction."""

    source: str
    poller: Poll
    checkpoint: Transaction
    breaker: CircuitBreaker
    metrics: PollerMetrics
    stopped: bool = field(default=False)

    def run_once(self) -> None:
        if not self.breaker.allow():
            self.metrics.polls.labels(self.source, "skipped_open").inc()
            return
        try:
            with self.checkpoint.transaction():
                report = self.poller.poll_once()
        except StopRequested:
            log.info("poll abandoned to stop", source=self.source)
        except PermanentSourceError as error:
            self._stop(error)
        except TransientSourceError as error:
            self._failed("source", error)
        except (KafkaException, BackboneError) as error:
            # Kafka or the registry failed, not the source: retried next round, the breaker is not moved.
            self.metrics.failures.labels(self.source, "publish").inc()
            log.error("publishing failed; nothing of this poll was committed", source=self.source, error=str(error))
        else:
            self._succeeded(report)
        self.metrics.breaker.labels(self.source).set(int(self.breaker.state))

    def _succeeded(self, report: PollReport) -> None:
        self.breaker.record_success()
        self.metrics.polls.labels(self.source, "ok").inc()
        self.metrics.published.labels(self.source).inc(report.published)
        for rejection in report.rejections:
            self.metrics.rejected.labels(self.source).inc()
            log.warning("record rejected", source=self.source, where=rejection.where, reason=rejection.reason)

    def _failed(self, kind: str, error: Exception) -> None:
        before = self.breaker.state
        self.breaker.record_failure()
        self.metrics.polls.labels(self.source, "failed").inc()
        self.metrics.failures.labels(self.source, kind).inc()
        log.error("poll failed after retries", source=self.source, error=str(error), failures=self.breaker.failures)
        if self.breaker.state is BreakerState.OPEN and before is not BreakerState.OPEN:
            log.error("circuit opened", source=self.source, reset_after_s=self.breaker.reset_after_s)

    def _stop(self, error: PermanentSourceError) -> None:
        self.stopped = True
        self.metrics.polls.labels(self.source, "refused").inc()
        self.metrics.failures.labels(self.source, f"http_{error.status}").inc()
        log.error("source stopped", source=self.source, status=error.status, error=error.args[0], todo=error.hint)


class PollerService:
    """Rounds over the runners until `stop` is set or no source is left."""

    def __init__(self, runners: Sequence[SourceRunner], interval_s: float, stop: threading.Event) -> None:
        self.runners, self.interval_s, self.stop = list(runners), interval_s, stop

    def run(self) -> None:
        while not self.stop.is_set():
            active = [r for r in self.runners if not r.stopped]
            if not active:
                raise ConfigurationError(
                    "every configured source was refused permanently (see the log lines above)",
                    hint="fix the credentials or ids named there and restart the poller",
                )
            for runner in active:
                if self.stop.is_set():
                    break
                runner.run_once()
            self.stop.wait(self.interval_s)
        log.info("poller stopped", reason="stop requested")


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask for a clean stop: the poll in progress finishes and commits first."""

    def request(signum: int, frame: object) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request)
    signal.signal(signal.SIGINT, request)


def run_poller(settings: Settings, poller_settings: PollerSettings | None = None) -> None:
    """Wire settings, Kafka and the sources; poll until SIGTERM."""
    from backbone.kafka.topics import APPROVALS, TIME_ENTRIES
    from producers.checkpoint import CheckpointLog, ensure_checkpoint_topic, read_checkpoints
    from producers.emitter import Emitter

    config = poller_settings or PollerSettings()
    # httpx logs every request at INFO in plain text; the poller's own JSON lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not config.sources:
        raise ConfigurationError("no sources to poll", hint="set BACKBONE_POLLER_SOURCES=harvest,toggl,clockify")
    stop = threading.Event()
    stop_on_signals(stop)
    metrics = PollerMetrics()
    if settings.runtime.metrics_port is not None:
        start_http_server(settings.runtime.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    ensure_checkpoint_topic(settings.kafka, config.checkpoint_topic)
    committed = read_checkpoints(settings.kafka, config.checkpoint_topic)
    with Emitter(settings, transactional_id=f"backbone-{config.name}", delivery_timeout_s=60) as emitter:
        for topic in (TIME_ENTRIES, APPROVALS):
            emitter.ensure_topic(topic)
        checkpoints = CheckpointLog(emitter, config.checkpoint_topic, config.name, committed)
        runners = [
            _runner(source, config, emitter, checkpoints, metrics, stop.wait)
            for source in dict.fromkeys(config.sources)
        ]
        log.info("poller started", sources=list(config.sources), interval_s=config.interval_s, name=config.name)
        PollerService(runners, config.interval_s, stop).run()


def _runner(
    source: str,
    config: PollerSettings,
    emitter: Any,
    checkpoints: Any,
    metrics: PollerMetrics,
    wait: Callable[[float], bool],
) -> SourceRunner:
    from producers.resilience import ResilientClient

    client, build = _SOURCES[source]()
    resilient = ResilientClient(
        client,
        config.retry_policy(),
        source=source,
        wait=wait,
        on_retry=lambda error: metrics.retries.labels(source).inc(),
    )
    poller = build(resilient, emitter, checkpoints.cursor(source), config.mapper())
    breaker = CircuitBreaker(failure_threshold=config.breaker_failures, reset_after_s=config.breaker_reset_s)
    metrics.breaker.labels(source).set(0)
    return SourceRunner(source, poller, checkpoints, breaker, metrics)


def _harvest() -> tuple[Any, Callable[..., Poll]]:
    from producers.polling import HarvestPoller, HarvestPollSettings, harvest_client

    settings = _require(HarvestPollSettings(), "access_token", "BACKBONE_HARVEST_ACCESS_TOKEN")
    settings = _require(settings, "account_id", "BACKBONE_HARVEST_ACCOUNT_ID")
    return harvest_client(settings), lambda client, emitter, cursor, mapper: HarvestPoller(
        client, emitter, cursor, mapper, settings.start_at
    )


def _toggl() -> tuple[Any, Callable[..., Poll]]:
    from producers.polling import TogglPoller, TogglPollSettings, toggl_client

    settings = _require(TogglPollSettings(), "api_token", "BACKBONE_TOGGL_API_TOKEN")
    return toggl_client(settings), lambda client, emitter, cursor, mapper: TogglPoller(
        client, emitter, cursor, mapper, settings.start_at, timezone=settings.timezone
    )


def _clockify() -> tuple[Any, Callable[..., Poll]]:
    from producers.polling import ClockifyPoller, ClockifyPollSettings, clockify_client

    settings = _require(ClockifyPollSettings(), "api_key", "BACKBONE_CLOCKIFY_API_KEY")
    settings = _require(settings, "workspace_id", "BACKBONE_CLOCKIFY_WORKSPACE_ID")
    settings = _require(settings, "user_id", "BACKBONE_CLOCKIFY_USER_ID")
    return clockify_client(settings), lambda client, emitter, cursor, mapper: ClockifyPoller(
        client, emitter, cursor, mapper, settings
    )


_SOURCES: dict[str, Callable[[], tuple[Any, Callable[..., Poll]]]] = {
    "harvest": _harvest,
    "toggl": _toggl,
    "clockify": _clockify,
}


def _require(settings: Any, name: str, variable: str) -> Any:
    value = getattr(settings, name)
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if not text:
        raise ConfigurationError(f"{variable} is not set", hint=f"set {variable} to poll this source")
    return settings
