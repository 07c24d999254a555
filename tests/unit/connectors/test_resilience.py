"""Retries, Retry-After, permanent refusals and the circuit breaker, with injected clocks (no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import httpx
import pytest

from producers.poller import PollerMetrics, PollerService, PollerSettings, SourceRunner
from producers.polling import PollReport
from producers.resilience import (
    BreakerState,
    CircuitBreaker,
    PermanentSourceError,
    ResilientClient,
    RetryPolicy,
    StopRequested,
    TransientSourceError,
    parse_retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the breaker --------------------------------------------------------------------------------

BREAKER_CASES: dict[str, tuple[list[str], BreakerState]] = {
    # steps: "f" failure, "s" success, "+N" advance the clock N seconds; threshold 3, reset after 60 s
    "closed-below-threshold": (["f", "f"], BreakerState.CLOSED),
    "opens-at-threshold": (["f", "f", "f"], BreakerState.OPEN),
    "success-resets-the-count": (["f", "f", "s", "f", "f"], BreakerState.CLOSED),
    "still-open-before-reset": (["f", "f", "f", "+59"], BreakerState.OPEN),
    "half-open-after-reset": (["f", "f", "f", "+60"], BreakerState.HALF_OPEN),
    "trial-success-closes": (["f", "f", "f", "+60", "s"], BreakerState.CLOSED),
    "trial-failure-reopens": (["f", "f", "f", "+60", "f"], BreakerState.OPEN),
    "reopened-waits-a-full-period": (["f", "f", "f", "+60", "f", "+30"], BreakerState.OPEN),
    "and-tries-again-after-it": (["f", "f", "f", "+60", "f", "+60"], BreakerState.HALF_OPEN),
}


@pytest.mark.parametrize(("steps", "state"), BREAKER_CASES.values(), ids=BREAKER_CASES.keys())
def test_breaker_opens_and_closes_by_itself(steps: list[str], state: BreakerState) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=60, clock=clock)
    for step in steps:
        if step == "f":
            breaker.record_failure()
        elif step == "s":
            breaker.record_success()
        else:
            clock.now += float(step)
    assert breaker.state is state
    assert breaker.allow() is (state is not BreakerState.OPEN)


# --- retry delays ---------------------------------------------------------------------------------

DELAY_CASES = {
    # attempt, Retry-After, random draw -> delay (base 1 s, cap 30 s, Retry-After cap 300 s)
    "first-retry-full-jitter-top": (1, None, 1.0, 1.0),
    "doubles-per-attempt": (3, None, 1.0, 4.0),
    "jitter-scales-down": (3, None, 0.25, 1.0),
    "capped": (10, None, 1.0, 30.0),
    "retry-after-wins-when-longer": (1, 12.0, 0.5, 12.0),
    "backoff-wins-when-longer": (5, 2.0, 1.0, 16.0),
    "retry-after-capped": (1, 86_400.0, 0.5, 300.0),
}


@pytest.mark.parametrize(("attempt", "retry_after", "draw", "expected"), DELAY_CASES.values(), ids=DELAY_CASES.keys())
def test_backoff_is_exponential_jittered_bounded_and_honours_retry_after(
    attempt: int, retry_after: float | None, draw: float, expected: float
) -> None:
    assert RetryPolicy(attempts=5, base_s=1.0, max_s=30.0).delay(attempt, retry_after, lambda: draw) == expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0), ("soon", None), (None, None)],
    ids=["delta-seconds", "http-date", "garbage-ignored", "absent"],
)
def test_retry_after_header_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=60.0) == seconds


# --- the resilient client ---------------------------------------------------------------------------


def _client(answers: list[Any], attempts: int = 4) -> tuple[ResilientClient, list[float], list[str]]:
    """A client whose transport answers `answers` in order (a status, (status, headers) or an exception)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, json={"ok": status < 400}, headers=headers)

    waits: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://fake")
    policy = RetryPolicy(attempts=attempts, base_s=1.0, max_s=30.0)
    client = ResilientClient(http, policy, source="fake", wait=lambda s: waits.append(s) is not None, rand=lambda: 1.0)
    return client, waits, seen


RETRY_CASES: dict[str, tuple[list[Any], int, list[float]]] = {
    # answers, requests made, waits between them
    "ok-at-once": ([200], 1, []),
    "5xx-burst-then-ok": ([503, 500, 502, 200], 4, [1.0, 2.0, 4.0]),
    "429-honours-retry-after": ([(429, {"Retry-After": "9"}), 200], 2, [9.0]),
    "timeout-then-ok": ([httpx.ReadTimeout("slow"), 200], 2, [1.0]),
    "connection-refused-then-ok": ([httpx.ConnectError("refused"), 200], 2, [1.0]),
}


@pytest.mark.parametrize(("answers", "requests", "waits"), RETRY_CASES.values(), ids=RETRY_CASES.keys())
def test_transient_failures_are_retried_with_backoff(answers: list[Any], requests: int, waits: list[float]) -> None:
    client, waited, seen = _client(list(answers))
    assert client.get("/x").status_code == 200
    assert (len(seen), waited) == (requests, waits)


def test_retries_are_bounded() -> None:
    client, waited, seen = _client([503] * 10, attempts=3)
    with pytest.raises(TransientSourceError, match="503"):
        client.get("/x")
    assert (len(seen), len(waited)) == (3, 2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422], ids=lambda s: f"http-{s}")
def test_permanent_refusals_are_not_retried_and_say_what_to_do(status: int) -> None:
    client, waited, seen = _client([status, 200])
    with pytest.raises(PermanentSourceError) as raised:
        client.get("/x")
    assert (len(seen), waited, raised.value.status) == (1, [], status)
    assert raised.value.hint


def test_a_stop_during_backoff_abandons_the_request() -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503)), base_url="http://fake")
    client = ResilientClient(http, RetryPolicy(), source="fake", wait=lambda s: True)
    with pytest.raises(StopRequested):
        client.get("/x")


# --- the runner: what each outcome does to the source -------------------------------------------------


class ScriptedPoller:
    def __init__(self, outcomes: list[Exception | int]) -> None:
        self.outcomes = outcomes

    def poll_once(self) -> PollReport:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return PollReport(fetched=outcome, published=outcome)


class Checkpoints:
    def __init__(self) -> None:
        self.committed = 0

    def transaction(self) -> Any:
        checkpoints = self

        class Transaction(nullcontext):  # type: ignore[type-arg]
            def __exit__(self, kind: object, *rest: object) -> None:
                if kind is None:
                    checkpoints.committed += 1

        return Transaction()


def _runner(outcomes: list[Exception | int], clock: Callable[[], float]) -> tuple[SourceRunner, Checkpoints]:
    checkpoints = Checkpoints()
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=60, clock=clock)
    return SourceRunner("harvest", ScriptedPoller(outcomes), checkpoints, breaker, PollerMetrics()), checkpoints


def _sample(runner: SourceRunner, name: str, **labels: str) -> float:
    return runner.metrics.registry.get_sample_value(name, {"source": "harvest", **labels}) or 0.0


def test_source_down_opens_the_breaker_skips_it_and_resumes_by_itself() -> None:
    clock = Clock()
    down = TransientSourceError("harvest API answered 503")
    runner, checkpoints = _runner([down, down, 3], clock)
    runner.run_once()
    runner.run_once()
    assert runner.breaker.state is BreakerState.OPEN
    runner.run_once()  # skipped: the scripted poller would have answered 3
    assert _sample(runner, "poller_polls_total", outcome="skipped_open") == 1
    assert _sample(runner, "poller_breaker_state") == 2
    clock.now += 60
    runner.run_once()
    assert (runner.breaker.state, checkpoints.committed) == (BreakerState.CLOSED, 1)
    assert _sample(runner, "poller_events_published_total") == 3
    assert _sample(runner, "poller_breaker_state") == 0


def test_permanent_refusal_stops_only_that_source() -> None:
    refused = PermanentSourceError("harvest API answered 401", status=401, hint="set a valid token")
    runner, _ = _runner([refused], Clock())
    runner.run_once()
    assert runner.stopped
    assert _sample(runner, "poller_failures_total", kind="http_401") == 1


def test_kafka_failures_do_not_blame_the_source() -> None:
    from backbone.errors import BackboneError

    runner, checkpoints = _runner([BackboneError("broker gone"), BackboneError("broker gone"), 1], Clock())
    for _ in range(3):
        runner.run_once()
    assert (runner.breaker.state, checkpoints.committed) == (BreakerState.CLOSED, 1)


def test_service_gives_up_when_every_source_is_refused() -> None:
    import threading

    from backbone.errors import ConfigurationError

    refused = PermanentSourceError("harvest API answered 401", status=401, hint="set a valid token")
    runner, _ = _runner([refused], Clock())
    with pytest.raises(ConfigurationError):
        PollerService([runner], interval_s=0.001, stop=threading.Event()).run()


@pytest.mark.parametrize(
    ("value", "sources"),
    [("harvest", ("harvest",)), ("Harvest, toggl,clockify", ("harvest", "toggl", "clockify")), ("", ())],
    ids=["one", "comma-separated-any-case", "none"],
)
def test_sources_setting(value: str, sources: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_POLLER_SOURCES", value)
    assert PollerSettings().sources == sources
