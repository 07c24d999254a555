"""Settings of the delivery connectors: where each system answers and how hard to push it (`BACKBONE_*`).

`BACKBONE_BILLING_CONNECTOR_*` for `backbone run billing-connector`, `BACKBONE_ERP_CONNECTOR_*` for
`backbone run erp-connector --target NAME` (one URL per target in `URLS`, a JSON object). The retry,
breaker and concurrency knobs are the same for both; README.md lists them with their defaults.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from backbone.errors import ConfigurationError


class ConnectorSettings(BaseSettings):
    """What every delivery connector shares: concurrency, timeouts, retries, the breaker, its topics."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    max_in_flight: int = Field(default=64, ge=1, le=1024, description="HTTP requests in flight at most.")
    batch_size: int = Field(
        default=512, ge=1, description="Records delivered per batch; their acks and offsets commit together."
    )
    request_timeout_s: float = Field(default=5.0, gt=0, description="One attempt's timeout (connect + answer).")
    max_attempts: int = Field(default=4, ge=1, description="Attempts of one record before it goes to the retry topic.")
    attempt_budget_s: float = Field(
        default=8.0, gt=0, description="...or when its attempts have taken this long (keeps a batch short)."
    )
    backoff_initial_s: float = Field(default=0.1, gt=0, description="First backoff; doubles per attempt.")
    backoff_max_s: float = Field(default=2.0, gt=0, description="Longest backoff between two attempts.")
    backoff_jitter_s: float = Field(default=0.1, ge=0, description="Random extra of each backoff.")
    retry_after_cap_s: float = Field(default=5.0, gt=0, description="Longest Retry-After honoured in line.")
    retry_rounds: int = Field(
        default=3, ge=0, description="Passes through the retry topic before a record is dead-lettered."
    )
    retry_delay_s: float = Field(default=2.0, gt=0, description="Delay of the first retry-topic pass; doubles.")
    breaker_failures: int = Field(default=5, ge=1, description="Transient failures in a row that open the circuit.")
    breaker_reset_s: float = Field(default=5.0, gt=0, description="How long an open circuit waits before a probe.")
    topic_prefix: str | None = Field(default=None, description="Prefix of every catalog topic name (tests).")
    app_id: str | None = Field(default=None, description="Consumer group and transactional id prefix.")
    api_key: SecretStr | None = Field(default=None, description="Sent as a Bearer token when set.")


class BillingConnectorSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="BACKBONE_BILLING_CONNECTOR_", frozen=True, extra="ignore")

    url: str = Field(default="http://127.0.0.1:8091", description="Base URL of the billing engine.")


class ErpConnectorSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="BACKBONE_ERP_CONNECTOR_", frozen=True, extra="ignore")

    urls: dict[str, str] = Field(
        default_factory=lambda: {"legacy-erp": "http://127.0.0.1:8090", "cloud-erp": "http://127.0.0.1:8092"},
        description="Base URL of each ERP target, by the routing rules' target name.",
    )
    ack_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A posting without an acknowledgment after this long raises POSTING_ACK_TIMEOUT.",
    )
    ack_timeout_check_s: float = Field(default=1.0, gt=0, description="How often pending postings are looked at.")

    def url_for(self, target: str) -> str:
        url = self.urls.get(target)
        if url is None:
            raise ConfigurationError(
                f"no URL for ERP target {target!r} (known: {', '.join(sorted(self.urls)) or 'none'})",
                hint="set BACKBONE_ERP_CONNECTOR_URLS='{\"" + target + '": "http://host:port"}\' or pass --url',
            )
        return url
