"""The one root of every error backbone raises on purpose.

Each layer translates library errors at its edge (`raise BackboneError(...) from e`) so that entry
points can print one clear message (what went wrong, what to do) and exit with a meaningful code.
"""

from __future__ import annotations


class BackboneError(Exception):
    """Something an operator can act on. `hint` says what to do; `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  -> {self.hint}" if self.hint else text


class ConfigurationError(BackboneError):
    """Settings are missing or inconsistent."""

    exit_code = 78  # EX_CONFIG


class ServiceUnavailableError(BackboneError):
    """A service backbone needs (Kafka, the registry, PostgreSQL) is not reachable or did not start."""

    exit_code = 69  # EX_UNAVAILABLE


class InvalidInputError(BackboneError):
    """Input records were rejected; nothing was published unless the caller asked to skip them."""

    exit_code = 2
