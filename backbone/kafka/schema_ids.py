"""The id of the schema a producer writes with, asked of the registry over plain HTTP.

Producing needs one thing from the schema registry: the id that goes into every record's Confluent
framing (magic byte 0, the 4-byte big-endian schema id, the Avro body). confluent-kafka's
`SchemaRegistryClient` answers it, but loading it loads authlib, httpx and cryptography: 0.3-0.4 s of
CPU on every start, a third of a 100,000-line `backbone emit` (docs/benchmarks.md, "Seventh session").
`PlainRegistry` sends the request that client sends (`POST /subjects/{subject}/versions`, or
`POST /subjects/{subject}` to look up without registering, the same body and the same basic
credentials), trying each URL in turn and retrying what the client retries, so the registry answers
the same id; its failures become the errors `backbone.kafka.serde` gives for the client's.
The emitter uses it; consumers, which read writer schemas by id, keep the full client.
"""

from __future__ import annotations

import base64
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from backbone.errors import BackboneError, ServiceUnavailableError

REGISTRY_HINT = "start it with `backbone up`, or set BACKBONE_SCHEMA_REGISTRY_URL to a running registry"
CREDENTIALS_HINT = (
    "set BACKBONE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=user:password (a writer to register schemas, a reader "
    "to read); for the local registry `backbone up` writes them to <data dir>/registry/credentials.json"
)
RETRIABLE = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses confluent-kafka's client retries (with jittered back-off), as this does."""
MAX_RETRIES = 3
RETRY_WAIT_S = 1.0
RETRY_MAX_WAIT_S = 20.0
TIMEOUT_S = 30.0
_ACCEPT = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
_ACCESS_REFUSED = (401, 403)


class PlainRegistry:
    """Schema ids from a Confluent-compatible registry, from `Settings.registry.client_config()`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.urls = [url.strip().rstrip("/") for url in str(config["url"]).split(",") if url.strip()]
        self._headers = {"Accept": _ACCEPT, "Content-Type": "application/vnd.schemaregistry.v1+json"}
        user_info = config.get("basic.auth.user.info")
        if user_info:
            self._headers["Authorization"] = "Basic " + base64.b64encode(user_info.encode()).decode()

    def schema_id(self, subject: str, schema_str: str, *, register: bool) -> int:
        """The id of `schema_str` under `subject`: registered when `register` (registering a schema the
        subject already has returns its id), else looked up. Raises as `serde._registry_call` does."""
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}"
        path += "/versions?normalize=False" if register else "?normalize=False&deleted=False"
        body = json.dumps({"schema": schema_str, "schemaType": "AVRO", "references": []}).encode()
        answer = self._post(path, body, subject)
        return int(answer["id"])

    def _post(self, path: str, body: bytes, subject: str) -> dict[str, Any]:
        for attempt in range(MAX_RETRIES + 1):
            status, answer = self._post_once(path, body, subject)
            if status < 300:
                return answer
            if status not in RETRIABLE or attempt == MAX_RETRIES:
                raise _refused(status, answer, subject)
            time.sleep(random.uniform(0, min(RETRY_WAIT_S * 2**attempt, RETRY_MAX_WAIT_S)))
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_once(self, path: str, body: bytes, subject: str) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) from the first URL that answers a status that is not retriable (or the last)."""
        for index, url in enumerate(self.urls):
            last = index == len(self.urls) - 1
            request = urllib.request.Request(url + path, data=body, headers=self._headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    return response.status, _json(response.read())
            except urllib.error.HTTPError as error:
                if error.code not in RETRIABLE or last:
                    return error.code, _json(error.read())
            except OSError as error:  # refused, reset, timed out, name not resolved
                if last:
                    reason = getattr(error, "reason", error)
                    raise ServiceUnavailableError(
                        f"schema registry unreachable ({subject}): {reason}", hint=REGISTRY_HINT
                    ) from error
        raise ServiceUnavailableError(f"schema registry unreachable ({subject}): no URL", hint=REGISTRY_HINT)


def _json(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        return {"message": f"Unknown Schema Registry Error: {data[:200]!r}"}
    return answer if isinstance(answer, dict) else {"message": str(answer)}


def _refused(status: int, answer: dict[str, Any], subject: str) -> BackboneError:
    """What `serde._registry_call` raises for the client's `SchemaRegistryError` of this status."""
    message = answer.get("message")
    where = f" ({subject})"
    if status in _ACCESS_REFUSED:
        return ServiceUnavailableError(f"schema registry refused this client{where}: {message}", hint=CREDENTIALS_HINT)
    if status >= 500:
        return ServiceUnavailableError(f"schema registry failed{where}: {message}")
    if status == 409:
        return BackboneError(
            f"{subject}: the registry refused the schema as incompatible: {message}",
            hint="run `backbone schemas check` to see what changed; only add optional fields",
        )
    return BackboneError(f"{subject}: the registry refused the schema ({status}): {message}")
