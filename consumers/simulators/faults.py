"""Fault injection for the simulators: what the next request suffers, decided by a pure schedule.

A `FaultPlan` says what to inject (random 500s, added latency, a burst of the next N requests failing,
an outage window, 429s with Retry-After, a slow first byte); a `FaultSchedule` turns it into one
`FaultDecision` per arriving request. Time and randomness are injected, and with a seed every run
draws the same sequence: two random numbers per request, whatever the outcome, so the n-th request
of a run always meets the same fate. Order of precedence: outage, poison, burst, counted 429s, random 429s,
random errors. Latency delays a request *before* it is handled; a slow first byte delays the answer
*after* the request was handled and committed, the case that makes clients time out and retry
something that already happened. The schedule is what `/admin/faults` replaces at run time.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["none", "outage", "burst", "throttle", "error", "poison"]


class FaultPlan(BaseModel):
    """What to inject; all zero means a healthy system. Posted as JSON to `/admin/faults`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of requests answered 500.")
    latency_ms: int = Field(default=0, ge=0, description="Added before every request is handled.")
    burst: int = Field(default=0, ge=0, description="The next N requests fail with `burst_status`.")
    burst_status: int = Field(default=503, ge=500, le=599)
    outage_s: float = Field(default=0.0, ge=0, description="Every request is answered 503 for S seconds from now.")
    throttle: int = Field(default=0, ge=0, description="The next N requests (after a burst) are answered 429.")
    throttle_rate: float = Field(default=0.0, ge=0, le=1, description="Share of requests answered 429.")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After of 429 answers.")
    slow_first_byte_ms: int = Field(default=0, ge=0, description="Delay of the answer after handling.")
    seed: int | None = Field(default=None, description="Makes the random faults repeat exactly.")
    poison: str | None = Field(
        default=None,
        min_length=1,
        description="Requests whose Idempotency-Key or X-Correlation-Id contains this text are always answered "
        "500: one record the system chokes on, while the others go through.",
    )


@dataclass(frozen=True)
class FaultDecision:
    """What happens to one request: answered at once with `status` (unless kind is none), and delays."""

    kind: FaultKind = "none"
    status: int = 200
    retry_after_s: int | None = None
    delay_s: float = 0.0
    first_byte_delay_s: float = 0.0

    @property
    def refuses(self) -> bool:
        return self.kind != "none"


@dataclass
class FaultSchedule:
    """The plan in force, its counters and its random sequence."""

    plan: FaultPlan = field(default_factory=FaultPlan)
    clock: Callable[[], float] = time.monotonic
    burst_left: int = 0
    throttle_left: int = 0
    outage_until: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.replace(self.plan)

    def replace(self, plan: FaultPlan) -> None:
        """Put `plan` in force now: counters restart, the outage window starts, the seed reseeds."""
        self.plan = plan
        self.burst_left, self.throttle_left = plan.burst, plan.throttle
        self.outage_until = self.clock() + plan.outage_s if plan.outage_s > 0 else 0.0
        self.rng = random.Random(plan.seed)

    def decide(self, about: tuple[str, ...] = ()) -> FaultDecision:
        """The fate of the request arriving now, `about` its keys (consumes counters and two random draws)."""
        plan, now = self.plan, self.clock()
        throttle_draw, error_draw = self.rng.random(), self.rng.random()
        delays = {"delay_s": plan.latency_ms / 1000, "first_byte_delay_s": plan.slow_first_byte_ms / 1000}
        if now < self.outage_until:
            return FaultDecision("outage", 503, math.ceil(self.outage_until - now), **delays)
        if plan.poison is not None and any(plan.poison in key for key in about):
            return FaultDecision("poison", 500, None, **delays)
        if self.burst_left > 0:
            self.burst_left -= 1
            return FaultDecision("burst", plan.burst_status, None, **delays)
        if self.throttle_left > 0 or throttle_draw < plan.throttle_rate:
            self.throttle_left = max(0, self.throttle_left - 1)
            return FaultDecision("throttle", 429, plan.retry_after_s, **delays)
        if error_draw < plan.error_rate:
            return FaultDecision("error", 500, None, **delays)
        return FaultDecision("none", 200, None, **delays)

    def state(self) -> dict[str, object]:
        """The plan and what is left of it, for `GET /admin/faults`."""
        return {
            "plan": self.plan.model_dump(),
            "burst_left": self.burst_left,
            "throttle_left": self.throttle_left,
            "outage_remaining_s": round(max(0.0, self.outage_until - self.clock()), 3),
        }
