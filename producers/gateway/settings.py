"""Settings of the HTTP gateway (`BACKBONE_GATEWAY_*`), read once by `run_gateway` and passed down.

Maps are JSON in the environment, e.g.
`BACKBONE_GATEWAY_API_KEYS='{"erp-sync": "k_live_..."}'` and
`BACKBONE_GATEWAY_WEBHOOK_SECRETS='{"toggl": "...", "clockify": "..."}'`. Keys and secrets are
`SecretStr`: they never reach a log line or a repr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers.gateway.security import Scheme


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKBONE_GATEWAY_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8088
    api_keys: dict[str, SecretStr] = Field(default_factory=dict, description="Key name -> API key.")
    webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict, description="Source -> signing secret.")
    webhook_schemes: dict[str, Scheme] = Field(
        default_factory=lambda: dict[str, Scheme](toggl="toggl", clockify="clockify"),
        description="Source -> signature scheme; sources not listed use `timestamped`.",
    )
    signature_tolerance_s: float = Field(default=300, description="Age limit of a timestamped signature.")
    max_body_bytes: int = Field(default=1_048_576, description="Larger requests get 413 before being read.")
    max_batch_events: int = Field(default=1000, description="Events per request at most (API and webhooks).")
    rate_per_s: float = Field(
        default=50.0,
        description="Sustained requests per second per API key, and per webhook source and client address.",
    )
    rate_burst: int = Field(default=100, description="Requests a caller may make at once before the rate applies.")
    refused_rate_per_s: float = Field(
        default=1.0, description="Failed authentications per second a client address may make before it gets 429."
    )
    refused_burst: int = Field(default=20, description="Failed authentications a client address may make at once.")
    body_timeout_s: float = Field(default=10.0, description="A body not received within this is answered 408.")
    header_timeout_s: float = Field(default=10.0, description="A connection whose request head takes longer is closed.")
    delivery_timeout_s: float = Field(default=10.0, description="Wait this long for Kafka's delivery report.")
    linger_ms: int = Field(
        default=1, ge=0, description="The producer's wait to fill a batch: every request waits it before its 202."
    )
    idempotency_ttl_s: float = Field(default=24 * 3600, description="How long a response is kept for its key.")
    idempotency_max_keys: int = Field(default=100_000, description="Bound of the idempotency memory (records).")
    idempotency_max_bytes: int = Field(
        default=64 * 1024 * 1024, description="Bound of the idempotency memory (bytes of stored responses)."
    )
    idempotency_key_max_length: int = Field(default=255, description="Longer Idempotency-Key headers get 422.")
    metrics: Literal["on", "off", "key"] = Field(default="on", description="/metrics: open, absent, or operator key.")
    docs: Literal["on", "off", "key"] = Field(default="on", description="/docs and /openapi.json: the same choice.")
    operator_key: SecretStr | None = Field(default=None, description="Bearer key for what is set to `key`.")
    identity_file: Path | None = Field(default=None, description="Identity table for webhook entries.")
    project_code_is_id: bool = False
    worker_email_is_id: bool = False
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _operator_key_when_needed(self) -> GatewaySettings:
        if "key" in (self.metrics, self.docs) and self.operator_key is None:
            raise ValueError("BACKBONE_GATEWAY_METRICS or _DOCS is `key`: set BACKBONE_GATEWAY_OPERATOR_KEY too")
        return self

    def scheme_of(self, source: str) -> Scheme:
        return self.webhook_schemes.get(source, "timestamped")
